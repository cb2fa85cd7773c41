"""Records the deployer stores: releases, the release pointer, per-host outcomes.

Release statuses and the transitions the lifecycle allows:

    PENDING   -> DEPLOYING | SUPERSEDED
    DEPLOYING -> SUCCEEDED | FAILED | ROLLED_BACK | CANCELLED
    SUCCEEDED -> ROLLED_BACK      (an operator rolled back past it)
    FAILED    -> ROLLED_BACK      (automatic or manual rollback after the failure)
    ROLLED_BACK, SUPERSEDED, CANCELLED: final   (CANCELLED: an operator stopped the rollout)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployer.models.release_config import ReleaseConfig
from deployer.names import DIGEST_PATTERN, TAG_PATTERN

# Attribute a release carries only while PENDING (the hash key of the sparse `pending-index`).
PENDING_KEY = "pending_app"


def utcnow() -> datetime:
    return datetime.now(UTC)


class ReleaseStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    SUPERSEDED = "SUPERSEDED"
    CANCELLED = "CANCELLED"


ALLOWED_TRANSITIONS: dict[ReleaseStatus, frozenset[ReleaseStatus]] = {
    ReleaseStatus.PENDING: frozenset({ReleaseStatus.DEPLOYING, ReleaseStatus.SUPERSEDED}),
    ReleaseStatus.DEPLOYING: frozenset(
        {ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED, ReleaseStatus.ROLLED_BACK, ReleaseStatus.CANCELLED}
    ),
    ReleaseStatus.SUCCEEDED: frozenset({ReleaseStatus.ROLLED_BACK}),
    ReleaseStatus.FAILED: frozenset({ReleaseStatus.ROLLED_BACK}),
    ReleaseStatus.ROLLED_BACK: frozenset(),
    ReleaseStatus.SUPERSEDED: frozenset(),
    ReleaseStatus.CANCELLED: frozenset(),
}


class ReleaseSource(StrEnum):
    PUSH = "push"
    ROLLBACK = "rollback"
    MANUAL = "manual"
    CONFIG = "config"  # a config-only release: the running image with a new config


class Release(BaseModel):
    """One accepted image for an app, numbered per app, always by digest."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    app: str
    release: int = Field(ge=1)
    repository: str
    image: str = Field(description="registry/repository@sha256:..., never a tag")
    digest: str = Field(pattern=DIGEST_PATTERN)
    tag: str | None = Field(default=None, pattern=TAG_PATTERN)
    # The environment and each secret's version this release runs with, pinned when it was
    # recorded (a rollback copies its target's); never a secret's value.
    config: ReleaseConfig = Field(default_factory=ReleaseConfig)
    pushed_at: datetime
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    source: ReleaseSource = ReleaseSource.PUSH
    reason: str = ""
    status: ReleaseStatus = ReleaseStatus.PENDING
    status_reason: str = ""
    command_id: str | None = None
    launch_template_version: int | None = None
    deploy_started_at: datetime | None = None
    finished_at: datetime | None = None
    # Aggregates written by the lifecycle (per-host details live in the host outcomes table).
    hosts_ok: int | None = None
    hosts_failed: int | None = None
    event_id: str | None = None
    # The release the fleet ran when this one started (where a start that fails goes back to).
    replaces: int | None = None
    # A rollback: the release it puts back (marked ROLLED_BACK once this one has succeeded).
    rollback_of: int | None = None
    # Who may send this release's command now (an invocation's token) and since when (epoch s).
    send_claim: str | None = None
    send_claimed_at: int | None = None
    # The release task (docs/release-task.md). `skip_task`: a rollback not asked to run it.
    # `task_command_id`/`task_instance`: the one task command, sent to that instance; once it
    # ended, `task_result` (TASK_SUCCEEDED | TASK_FAILED) and the task's exit code.
    skip_task: bool = False
    # A rollback an operator asked to go through the app's stages (`deployer rollback --staged`).
    staged_rollback: bool = False
    task_command_id: str | None = None
    task_instance: str | None = None
    task_result: str | None = None
    task_exit_code: int | None = None
    # Stages (docs/stages.md): the stage the release is in (an index into the app's
    # `rollout.stages`), where it is in it (STAGE_RUNNING | STAGE_BAKING | STAGE_AWAITING), the
    # stage's command, the instances that took the release in its stages so far, and the epoch
    # second its bake ends. A release without stages never has them.
    stage: int | None = None
    stage_state: str | None = None
    stage_command_id: str | None = None
    stage_hosts: list[str] | None = None
    bake_until: int | None = None
    # The epoch second the current stage's bake started (the analysis window's start), and the
    # canary analysis' checks (controller/analysis.py `entry`: stage, at, verdict, reason, the
    # canary's and the stable release's figures, window), the newest last, at most
    # `analysis.KEEP_ENTRIES`.
    bake_started_at: int | None = None
    analysis: list[dict[str, Any]] | None = None
    # The stage tick chain (docs/stages.md, "The bake timer"): the epoch second the pending tick
    # is due; a tick is sent only by the invocation whose conditional write set it.
    next_tick_at: int | None = None
    # The app's alarms as the last check read them: {name: {"state", "reason", "at"}}.
    alarm_states: dict[str, dict[str, Any]] | None = None

    @property
    def key(self) -> str:
        """`<app>#<release>`: the partition key of this release's host outcomes."""
        return f"{self.app}#{self.release}"

    def to_item(self) -> dict[str, Any]:
        item = self.model_dump(mode="json", exclude_none=True)
        if self.status is ReleaseStatus.PENDING:
            # Key of the releases table's sparse `pending-index`; every move out of PENDING
            # removes it in the same write (ReleasesStore).
            item[PENDING_KEY] = self.app
        return item


TASK_SUCCEEDED = "SUCCEEDED"
TASK_FAILED = "FAILED"
STAGE_RUNNING = "RUNNING"
STAGE_BAKING = "BAKING"
STAGE_AWAITING = "AWAITING_APPROVAL"


class Pointer(BaseModel):
    """The one release an app should run (SSM parameter `<prefix>/<app>/release`, JSON)."""

    model_config = ConfigDict(extra="ignore")

    app: str
    release: int = Field(ge=1)
    image: str
    digest: str = Field(pattern=DIGEST_PATTERN)
    tag: str | None = None
    source: ReleaseSource
    updated_at: datetime = Field(default_factory=utcnow)
    # The release's `releaseConfig` (agent_contract): a booting host that finds a newer release
    # here than in its user data runs it with this config.
    release_config: str = ""

    @classmethod
    def for_release(cls, release: Release, source: ReleaseSource | None = None) -> Pointer:
        return cls(
            app=release.app,
            release=release.release,
            image=release.image,
            digest=release.digest,
            tag=release.tag,
            source=source or release.source,
            release_config=release.config.encode(),
        )


class HostOutcome(BaseModel):
    """What one host did for one release (written by the lifecycle functions)."""

    model_config = ConfigDict(extra="ignore")

    release_key: str = Field(description="<app>#<release>")
    instance_id: str
    app: str
    release: int
    status: str = Field(description="SSM invocation status, e.g. Success, Failed, TimedOut")
    exit_code: int | None = None
    failure_class: str | None = None
    message: str = ""
    summary: dict[str, Any] | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
