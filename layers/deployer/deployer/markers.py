"""Every string protocol the control plane writes and reads back, built and parsed here only.

- the deploy lock's owner: `<app>#<release>`, the release rolling out;
- a release's key in the host-outcomes table: `<app>#<release>` (the same shape);
- swap-command comments: `deployer <app> release <n>` for a release's fleet command,
  `deployer launch <app> release <n>` / `deployer drift <app> release <n>` for single instances,
  `deployer task <app> release <n>` for a release's task command;
- outbox entries (notices owed): `<release>:<kind>` or `<release>:<kind>:<rolled back to>`;
- admission markers (one per accepted push): `deployer-admission#<app>#<repository>#<digest>#<tag>`;
- the grammar of app names, digests and regions, which events, configs and the agent share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMENT_PREFIX = "deployer "
_RELEASE_COMMENT = re.compile(r"^deployer ([a-z][a-z0-9-]{0,39}) release ([0-9]+)$")
_HOST_COMMENT = re.compile(r"^deployer (launch|drift) ([a-z][a-z0-9-]{0,39}) release ([0-9]+)$")
_STAGE_COMMENT = re.compile(r"^deployer stage ([0-9]+) ([a-z][a-z0-9-]{0,39}) release ([0-9]+)$")
_TASK_COMMENT = re.compile(r"^deployer task ([a-z][a-z0-9-]{0,39}) release ([0-9]+)$")


def owner(app: str, release: int) -> str:
    """The deploy lock's owner while release `release` of `app` rolls out."""
    return f"{app}#{release}"


def owned_release(app: str, lock_owner: str | None) -> int | None:
    """The release number a lock owner names, when it is a release of `app` (None otherwise)."""
    name, _, number = (lock_owner or "").rpartition("#")
    return int(number) if name == app and number.isdigit() and int(number) > 0 else None


def release_key(app: str, release: int) -> str:
    return f"{app}#{release}"


def release_comment(app: str, release: int) -> str:
    """The comment of a release's fleet-wide swap command (SSM keeps at most 100 characters)."""
    return f"deployer {app} release {release}"


def host_comment(purpose: str, app: str, release: int) -> str:
    """The comment of a single-instance swap (`launch` or `drift`)."""
    return f"deployer {purpose} {app} release {release}"


def parse_release_comment(comment: str) -> tuple[str, int] | None:
    match = _RELEASE_COMMENT.fullmatch(comment)
    return (match.group(1), int(match.group(2))) if match else None


def task_comment(app: str, release: int) -> str:
    """The comment of a release's task command (one per release, to one instance)."""
    return f"deployer task {app} release {release}"


def stage_comment(app: str, release: int, stage: int) -> str:
    """The comment of one stage's swap command (stages before the last; docs/stages.md)."""
    return f"deployer stage {stage} {app} release {release}"


def parse_stage_comment(comment: str) -> tuple[str, int] | None:
    """(app, release) of a stage's command comment."""
    match = _STAGE_COMMENT.fullmatch(comment)
    return (match.group(2), int(match.group(3))) if match else None


def parse_task_comment(comment: str) -> tuple[str, int] | None:
    match = _TASK_COMMENT.fullmatch(comment)
    return (match.group(1), int(match.group(2))) if match else None


def is_ours(comment: str) -> bool:
    return bool(
        _RELEASE_COMMENT.fullmatch(comment)
        or _HOST_COMMENT.fullmatch(comment)
        or _TASK_COMMENT.fullmatch(comment)
        or _STAGE_COMMENT.fullmatch(comment)
    )


@dataclass(frozen=True)
class OutboxEntry:
    """A notice owed for a recorded transition: `kind` of release `release`. `rolled_back_to`:
    the release a rollback puts back, or for a stage notice (`stage_*`) the stage's index."""

    release: int
    kind: str
    rolled_back_to: int | None = None

    def encode(self) -> str:
        tail = f":{self.rolled_back_to}" if self.rolled_back_to is not None else ""
        return f"{self.release}:{self.kind}{tail}"

    @classmethod
    def decode(cls, entry: str) -> OutboxEntry | None:
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1]:
            return None
        to = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
        return cls(int(parts[0]), parts[1], to)

    def dedupe_id(self, app: str) -> str:
        """Stable across redeliveries: a subscriber drops a second copy by it."""
        if self.kind.startswith("stage_"):
            # One per stage: a stage notice's third field is its stage index.
            return f"{app}#{self.release}#{self.kind}#{self.rolled_back_to}"
        return f"{app}#{self.release}#{self.kind}"


def admission_key(app: str, repository: str, digest: str, tag: str | None) -> str:
    return f"deployer-admission#{app}#{repository}#{digest}#{tag or ''}"
