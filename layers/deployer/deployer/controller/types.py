"""What the controller's parts hand each other: the facts a decision reads, the decision it
makes (the release writes and the state change, committed as one transaction), and the report
of one converge call."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployer.adapters.app_state import AppStateRecord, StateChange
from deployer.models.records import Release, ReleaseStatus
from deployer.observability import logger
from deployer.verdicts import Verdict

if TYPE_CHECKING:
    from deployer.adapters.command_results import CommandCounts, InvocationTally
    from deployer.agent_contract import AgentSummary
    from deployer.models.ssm_status import SsmStatus


@dataclass(frozen=True)
class Now:
    """The time a decision is made at: the state's clock (epoch seconds, for claims) and the
    wall clock (for the records' timestamps)."""

    epoch: int
    at: datetime


@dataclass(frozen=True)
class Ending:
    """A release's command has ended: SSM's terminal status and what it means."""

    status: SsmStatus
    counts: CommandCounts | None
    tally: InvocationTally | None
    verdict: Verdict
    reason: str
    # The failed hosts' failure classes recorded so far (only read for a command that failed).
    failure_classes: frozenset[str | None] = frozenset()


@dataclass(frozen=True)
class TaskEnding:
    """The release task's command has ended on its instance: SSM's StatusDetails and exit code,
    and what the agent's summary says (None when the agent printed none: it never ran, or SSM
    stopped it)."""

    status_details: str
    response_code: int | None
    summary: AgentSummary | None


@dataclass(frozen=True)
class Ended:
    """A release a decision ended, and what it handed the app to."""

    release: int
    status: ReleaseStatus
    reason: str
    followed_by: int | None = None
    rollback: bool = False


@dataclass(frozen=True)
class Transition:
    """A release's status moves to `status`, on condition that it is in one of `allowed_from`:
    the only way a release's status changes."""

    release: int
    status: ReleaseStatus
    reason: str
    allowed_from: frozenset[ReleaseStatus]
    fields: dict[str, Any] = field(default_factory=dict)
    # Fields that must still hold these values (a stage's transitions: the stage they read).
    expect: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.status.value.lower()} {self.release}"


@dataclass
class Decision:
    """One decision: new releases, status transitions and the app's state change, all or nothing.

    `admission`: the push's admission marker, written with the release it admitted (a second
    delivery of the push finds it). `counts` and `duration`: metrics sent once it is committed."""

    app: str
    change: StateChange | None = None
    creates: list[Release] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    admission: tuple[str, int] | None = None
    ended: Ended | None = None
    counts: list[tuple[str, int]] = field(default_factory=list)  # metric names (observability)
    duration: float | None = None  # seconds from the ended release's start to its end
    note: str = ""
    context: dict[str, Any] = field(default_factory=dict)

    def transition(self, write: Transition) -> Decision:
        self.transitions.append(write)
        return self

    def explain(self, note: str, **context: Any) -> None:
        """What the log says once the decision is committed (for people; it decides nothing)."""
        self.note = note
        self.context.update(context)

    def count(self, metric: str, value: int = 1) -> Decision:
        self.counts.append((metric, value))
        return self

    @property
    def started(self) -> int | None:
        """The release this decision starts (it takes the app's lock), if any."""
        for write in self.transitions:
            if write.status is ReleaseStatus.DEPLOYING:
                return write.release
        for release in self.creates:
            if release.status is ReleaseStatus.DEPLOYING:
                return release.release
        return None


@dataclass
class Report:
    """What one converge call did, for the caller's answer and the log."""

    app: str
    steps: list[str] = field(default_factory=list)
    release: int | None = None
    command_id: str | None = None
    state: AppStateRecord | None = None
    ended: Ended | None = None

    def note(self, step: str, **context: Any) -> None:
        self.steps.append(step)
        logger.info(step, app=self.app, **context)

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "app": self.app,
            "steps": list(self.steps),
            "release": self.release,
            "command_id": self.command_id,
            "deploying": state.lock_owner if state else None,
            "desired": state.desired if state else None,
        }
