"""Incoming AWS event shapes the core accepts (ECR Image Action, CloudWatch Alarm State Change,
the stage tick queue's messages).

Validated strictly at the edge: a digest is `sha256:` + 64 hex, a tag follows the Docker/ECR
grammar (so no shell metacharacter reaches a host). `parse_push_event` raises InvalidEvent
naming the bad field.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployer.errors import InvalidEvent
from deployer.models import describe_errors
from deployer.models.config import ALARM_NAME_PATTERN, REPOSITORY_PATTERN
from deployer.names import APP_PATTERN, DIGEST_PATTERN, REGION_PATTERN, TAG_PATTERN, ecr_registry


class EcrImageActionDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    result: Literal["SUCCESS"]
    action_type: Literal["PUSH"] = Field(alias="action-type")
    repository_name: str = Field(alias="repository-name", max_length=256, pattern=REPOSITORY_PATTERN)
    image_digest: str = Field(alias="image-digest", pattern=DIGEST_PATTERN)
    image_tag: str | None = Field(default=None, alias="image-tag", pattern=TAG_PATTERN)


class EcrImageAction(BaseModel):
    """EventBridge `ECR Image Action` (source aws.ecr), PUSH with result SUCCESS."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    id: str = Field(min_length=1, max_length=128)
    detail_type: Literal["ECR Image Action"] = Field(alias="detail-type")
    source: Literal["aws.ecr"]
    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=REGION_PATTERN)
    time: datetime
    detail: EcrImageActionDetail

    @property
    def registry(self) -> str:
        """The pushing account's ECR registry host."""
        return ecr_registry(self.account, self.region)


def parse_push_event(raw: Any) -> EcrImageAction:
    """Validate an ECR push event given as a dict or JSON text."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidEvent(f"event is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(raw).__name__}")
    try:
        return EcrImageAction.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid ECR push event: {describe_errors(exc)}") from exc


# ------------------------------------------------------------------ CloudWatch alarm state change
class AlarmStateValue(BaseModel):
    """`detail.state` / `detail.previousState` of a CloudWatch alarm event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    value: Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
    reason: str = ""
    reason_data: str | None = Field(default=None, alias="reasonData")
    timestamp: str | None = None


class AlarmStateChangeDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    alarm_name: str = Field(alias="alarmName", pattern=ALARM_NAME_PATTERN)
    state: AlarmStateValue
    previous_state: AlarmStateValue | None = Field(default=None, alias="previousState")
    configuration: dict[str, Any] = Field(default_factory=dict)


class AlarmStateChangeEvent(BaseModel):
    """EventBridge `CloudWatch Alarm State Change` (source aws.cloudwatch), as the CloudWatch user
    guide documents it ("Alarm events and EventBridge"); metric and composite alarms alike.
    The state it carries is a hint: the gate reads the alarm again (DescribeAlarms)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    id: str = Field(min_length=1, max_length=128)
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    source: Literal["aws.cloudwatch"]
    account: str = Field(pattern=r"^\d{12}$")
    time: datetime
    region: str = Field(pattern=REGION_PATTERN)
    resources: list[str] = Field(default_factory=list)
    detail: AlarmStateChangeDetail


class StageTick(BaseModel):
    """A stage tick (StageTickQueue's message body; `deployer.controller.watch`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["stage-tick"]
    app: str = Field(pattern=APP_PATTERN)
    release: int = Field(ge=1)
    stage: int = Field(ge=0)
    due: int = Field(ge=0)
