"""Events the deploy lifecycle accepts, in AWS's real shapes, and the direct-invocation payloads.

Schemas are built on first use (`defer_build`): each function validates one or two of these
shapes, and building all of them at import would lengthen every cold start.

EventBridge envelopes keep AWS's hyphenated keys through aliases. Detail fields the lifecycle
does not use are kept optional so a new field from AWS never breaks parsing, while every field
the lifecycle decides on is validated strictly (ids, statuses, transitions).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deployer.models.ssm_status import SsmStatus, normalise_status
from deployer.names import APP_PATTERN, DIGEST_PATTERN, REGION_PATTERN, TAG_PATTERN

COMMAND_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
INSTANCE_ID_PATTERN = r"^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17})$"
REASON_MAX = 300

CommandId = Annotated[str, Field(pattern=COMMAND_ID_PATTERN)]
InstanceId = Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)]
AppName = Annotated[str, Field(pattern=APP_PATTERN)]


class _Envelope(BaseModel):
    """The EventBridge envelope common to every AWS service event."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    version: str = "0"
    id: str = Field(min_length=1, max_length=128)
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str = Field(pattern=r"^\d{12}$")
    time: datetime
    region: str = Field(pattern=REGION_PATTERN)
    resources: list[str] = Field(default_factory=list)


class CommandStatusDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    command_id: CommandId = Field(alias="command-id")
    document_name: str = Field(alias="document-name", min_length=1)
    status: SsmStatus
    requested_date_time: str | None = Field(default=None, alias="requested-date-time")
    expire_after: str | None = Field(default=None, alias="expire-after")
    parameters: dict[str, list[str]] = Field(default_factory=dict)

    _norm = field_validator("status", mode="before")(normalise_status)


class CommandStatusEvent(_Envelope):
    """`EC2 Command Status-change Notification` from `aws.ssm`: the whole command's status."""

    detail_type: Literal["EC2 Command Status-change Notification"] = Field(alias="detail-type")
    source: Literal["aws.ssm"]
    detail: CommandStatusDetail


class CommandInvocationDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    command_id: CommandId = Field(alias="command-id")
    document_name: str = Field(alias="document-name", min_length=1)
    instance_id: InstanceId = Field(alias="instance-id")
    status: SsmStatus
    requested_date_time: str | None = Field(default=None, alias="requested-date-time")

    _norm = field_validator("status", mode="before")(normalise_status)


class CommandInvocationStatusEvent(_Envelope):
    """`EC2 Command Invocation Status-change Notification`: one instance's invocation status."""

    detail_type: Literal["EC2 Command Invocation Status-change Notification"] = Field(alias="detail-type")
    source: Literal["aws.ssm"]
    detail: CommandInvocationDetail


class LifecycleActionDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    lifecycle_action_token: str = Field(alias="LifecycleActionToken", min_length=36, max_length=36)
    auto_scaling_group_name: str = Field(alias="AutoScalingGroupName", min_length=1, max_length=255)
    lifecycle_hook_name: str = Field(alias="LifecycleHookName", min_length=1, max_length=255)
    instance_id: InstanceId = Field(alias="EC2InstanceId")
    lifecycle_transition: Literal["autoscaling:EC2_INSTANCE_LAUNCHING"] = Field(alias="LifecycleTransition")
    notification_metadata: str | None = Field(default=None, alias="NotificationMetadata")
    origin: str | None = Field(default=None, alias="Origin")
    destination: str | None = Field(default=None, alias="Destination")

    def metadata_app(self) -> str | None:
        """The app named in the hook's metadata (`{"app": "web"}`), if the hook carries one."""
        if not self.notification_metadata:
            return None
        try:
            data = json.loads(self.notification_metadata)
        except ValueError:
            return None
        app = data.get("app") if isinstance(data, dict) else None
        return app if isinstance(app, str) and re.fullmatch(APP_PATTERN, app) else None


class InstanceLaunchEvent(_Envelope):
    """`EC2 Instance-launch Lifecycle Action` from `aws.autoscaling` (the launch lifecycle hook)."""

    detail_type: Literal["EC2 Instance-launch Lifecycle Action"] = Field(alias="detail-type")
    source: Literal["aws.autoscaling"]
    detail: LifecycleActionDetail


# --- direct invocation payloads (the Rollback function) ----------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, defer_build=True)

    app: AppName


def _reason(value: str | None) -> str | None:
    if value is None:
        return None
    if any(ord(c) < 32 for c in value):
        raise ValueError("must be one line of printable text")
    return value


class RollbackRequest(_Request):
    """`{"app": "web", "to": 6 | "v1.4" | "sha256:...", "reason": "..."}`; no `to` = previous."""

    action: Literal["rollback"] = "rollback"
    to: int | str | None = None
    reason: str | None = Field(default=None, max_length=REASON_MAX)
    # Run the app's release task for this rollback too (by default a rollback skips it).
    with_task: bool = False
    # Go through the app's rollout stages like a deploy (by default a rollback skips them).
    staged: bool = False

    _r = field_validator("reason")(_reason)

    @field_validator("to", mode="before")
    @classmethod
    def _target(cls, value: Any) -> int | str | None:
        return _ref(value)


class PromoteRequest(_Request):
    """Deploy a digest or tag explicitly (also clears an automatic-deploy refusal of it)."""

    action: Literal["promote"]
    to: int | str
    reason: str | None = Field(default=None, max_length=REASON_MAX)

    _r = field_validator("reason")(_reason)

    @field_validator("to", mode="before")
    @classmethod
    def _target(cls, value: Any) -> int | str:
        checked = _ref(value)
        if checked is None:
            raise ValueError("names what to deploy: a release number, a tag or a sha256 digest")
        return checked


class ConfigDeployRequest(_Request):
    """A config-only release: the image the app runs now, with its stored environment and each
    secret's version current now."""

    action: Literal["deploy_config"]
    reason: str | None = Field(default=None, max_length=REASON_MAX)

    _r = field_validator("reason")(_reason)


class PauseRequest(_Request):
    action: Literal["pause"]
    reason: str | None = Field(default=None, max_length=REASON_MAX)

    _r = field_validator("reason")(_reason)


class ResumeRequest(_Request):
    action: Literal["resume"]


class CancelRequest(_Request):
    """Stop the app's deploy in progress; hosts already swapped go back through a rollback."""

    action: Literal["cancel"]
    reason: str | None = Field(default=None, max_length=REASON_MAX)

    _r = field_validator("reason")(_reason)


class ContinueRequest(_Request):
    """Approve a staged release waiting after a stage (`"approve": true`): its next stage starts."""

    action: Literal["continue"]


class StatusRequest(_Request):
    action: Literal["status"]
    limit: int = Field(default=10, ge=1, le=100)


def _ref(value: Any) -> int | str | None:
    """A release reference: a release number, a digest or a tag; anything else is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a release number, a tag or a sha256 digest")  # noqa: TRY004 - pydantic reports ValueError
    if isinstance(value, int):
        if value < 1:
            raise ValueError("a release number starts at 1")
        return value
    if value.isdigit():
        return int(value)
    if value.startswith("sha256:"):
        if not re.fullmatch(DIGEST_PATTERN, value):
            raise ValueError("a digest is sha256: followed by 64 lowercase hex characters")
        return value
    if not re.fullmatch(TAG_PATTERN, value):
        raise ValueError("is not a release number, a valid image tag or a sha256 digest")
    return value


OperationRequest = (
    RollbackRequest
    | PromoteRequest
    | ConfigDeployRequest
    | PauseRequest
    | ResumeRequest
    | CancelRequest
    | ContinueRequest
    | StatusRequest
)


class _OperationEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    request: Annotated[OperationRequest, Field(discriminator="action")]

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and "request" not in data:
            payload = dict(data)
            payload.setdefault("action", "rollback")
            return {"request": payload}
        return data


def parse_operation(payload: Any) -> OperationRequest:
    """Parse a direct-invocation payload; `action` defaults to rollback (`{"app": "web"}`)."""
    return _OperationEnvelope.model_validate(payload).request
