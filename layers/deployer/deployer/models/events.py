"""Incoming AWS event shapes the core accepts (ECR Image Action).

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
from deployer.models.config import REPOSITORY_PATTERN
from deployer.names import DIGEST_PATTERN, REGION_PATTERN, TAG_PATTERN, ecr_registry


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
