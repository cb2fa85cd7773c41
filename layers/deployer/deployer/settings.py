"""Runtime settings, read from environment variables once and validated.

The SAM template gives every function exactly these variables; tools and tests build a
`Settings` directly or through `Settings.from_env(mapping)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deployer.errors import InvalidSettings
from deployer.names import REGION_PATTERN

_TABLE = Annotated[str, Field(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")]

# Environment variable name for every field.
ENV_NAMES: dict[str, str] = {
    "apps_table": "APPS_TABLE",
    "app_state_table": "APP_STATE_TABLE",
    "releases_table": "RELEASES_TABLE",
    "host_outcomes_table": "HOST_OUTCOMES_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "parameter_prefix": "PARAMETER_PREFIX",
    "swap_document_name": "SWAP_DOCUMENT_NAME",
    "task_document_name": "TASK_DOCUMENT_NAME",
    "command_log_group": "COMMAND_LOG_GROUP",
    "notification_topic_arn": "NOTIFICATION_TOPIC_ARN",
    "launch_recheck_queue_url": "LAUNCH_RECHECK_QUEUE_URL",
    "stage_tick_queue_url": "STAGE_TICK_QUEUE_URL",
    "region": "AWS_REGION",
}


class Settings(BaseModel):
    """Where the stack's state lives, and the resources the functions use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    apps_table: _TABLE
    app_state_table: _TABLE
    releases_table: _TABLE
    host_outcomes_table: _TABLE
    idempotency_table: _TABLE
    parameter_prefix: str = Field(default="/deployer", pattern=r"^(/[A-Za-z0-9_.-]+)+$", max_length=200)
    swap_document_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{3,128}$")
    command_log_group: str = Field(pattern=r"^[A-Za-z0-9_./#-]{1,512}$")
    # The release task's document (TaskDocument); without it an app with a release_task cannot start.
    task_document_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{3,128}$")
    notification_topic_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:.+$"
    )
    # Only the launch function has one (its delay queue).
    launch_recheck_queue_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    # The stage tick delay queue (StageTickQueue); without it a bake ends on the reconciler's tick.
    stage_tick_queue_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    region: str | None = Field(default=None, pattern=REGION_PATTERN)

    @field_validator(
        "notification_topic_arn",
        "launch_recheck_queue_url",
        "stage_tick_queue_url",
        "region",
        "task_document_name",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def pointer_parameter(self, app: str) -> str:
        """SSM parameter name of an app's release pointer."""
        return f"{self.parameter_prefix}/{app}/release"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; InvalidSettings names each bad variable."""
        env = os.environ if environ is None else environ
        raw = {field: env[name] for field, name in ENV_NAMES.items() if name in env}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_NAMES.get(str(err['loc'][0]), str(err['loc'][0]))}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidSettings(f"invalid environment: {problems}") from exc
