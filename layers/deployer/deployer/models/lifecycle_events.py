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
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMMAND_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
INSTANCE_ID_PATTERN = r"^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17})$"
APP_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
# ECR tag rules; the same set the push path accepts.
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
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
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    resources: list[str] = Field(default_factory=list)


class SsmStatus(StrEnum):
    """Every status SSM reports for a command or one of its invocations.

    `Status` (and the EventBridge event's `status`) is coarse: botocore's CommandStatus /
    CommandInvocationStatus enums (Pending, InProgress, Delayed, Success, Cancelled, Failed,
    TimedOut, Cancelling). The distinctions (Incomplete, Execution / Delivery Timed Out,
    Undeliverable, Terminated, ...) exist only in `StatusDetails`, read from SSM's API. Both
    vocabularies and spellings are accepted so a new or finer value never breaks parsing;
    decisions read StatusDetails (docs/lifecycle.md).
    """

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    IN_PROGRESS_SPACED = "In Progress"
    DELAYED = "Delayed"
    CANCELLING = "Cancelling"
    SUCCESS = "Success"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    EXECUTION_TIMED_OUT = "Execution Timed Out"
    DELIVERY_TIMED_OUT = "Delivery Timed Out"
    CANCELLED = "Cancelled"
    UNDELIVERABLE = "Undeliverable"
    TERMINATED = "Terminated"
    INCOMPLETE = "Incomplete"
    RATE_EXCEEDED = "Rate Exceeded"
    ACCESS_DENIED = "Access Denied"
    # A command's StatusDetails when its tag target matches no managed node (terminal).
    NO_INSTANCES_IN_TAG = "No Instances In Tag"

    @property
    def terminal(self) -> bool:
        return self not in _NON_TERMINAL

    @classmethod
    def parse(cls, value: str | None) -> SsmStatus | None:
        """The status whatever SSM's spelling (`InProgress`, `In Progress`...), None if unknown."""
        normalised = _status(value)
        return cls(normalised) if normalised in cls._value2member_map_ else None


_NON_TERMINAL = frozenset(
    {
        SsmStatus.PENDING,
        SsmStatus.IN_PROGRESS,
        SsmStatus.IN_PROGRESS_SPACED,
        SsmStatus.DELAYED,
        SsmStatus.CANCELLING,
    }
)


def _status(value: Any) -> Any:
    # SSM spells a few statuses both ways ("InProgress" / "In Progress", "TimedOut"); normalise
    # case and spacing so one enum member matches.
    if isinstance(value, str):
        folded = re.sub(r"\s+", "", value).lower()
        for member in SsmStatus:
            if member.value.replace(" ", "").lower() == folded:
                return member.value
    return value


class CommandStatusDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    command_id: CommandId = Field(alias="command-id")
    document_name: str = Field(alias="document-name", min_length=1)
    status: SsmStatus
    requested_date_time: str | None = Field(default=None, alias="requested-date-time")
    expire_after: str | None = Field(default=None, alias="expire-after")
    parameters: dict[str, list[str]] = Field(default_factory=dict)

    _norm = field_validator("status", mode="before")(_status)


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

    _norm = field_validator("status", mode="before")(_status)


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
    RollbackRequest | PromoteRequest | PauseRequest | ResumeRequest | CancelRequest | StatusRequest
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
