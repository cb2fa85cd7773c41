"""The release controller: level-triggered, one loop per app (docs/architecture.md, "Controller").

Every decision is one DynamoDB transaction that records the verdict of what ends *and* the
desired state that follows: "release 2 FAILED; release 3 (rollback to 1) DEPLOYING, holds the
app, notices owed". `converge(app)` then moves the world toward that record, step by step:

    lock held by a DEPLOYING release without a command  -> drive: pointer, launch-template
        version, group, swap command (each step idempotent, keyed by the release)
    lock held by a DEPLOYING release with a command     -> SSM's status; at the end, decide
    lock held by a release that has ended               -> hand the app on
    lock free, `realign` set                            -> pointer and group back on `desired`
    lock free, PENDING releases, not paused             -> decide: start the newest
    then                                                -> publish the notices owed (outbox)

Every trigger calls it: a push, an SSM status event, an operator request, the launch hook's
follow-up, the reconciler's tick, and any redelivery after a crash. A crash after any AWS call
leaves a record that the next call finishes; nothing is decided twice, because decisions are
conditioned on what they read, and a command is sent only under a claim on its release.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deployer import builders, markers
from deployer.adapters import error_code
from deployer.adapters.app_state import AppStateRecord, StateChange
from deployer.adapters.command_results import CommandCounts, InvocationTally
from deployer.adapters.launch_templates import GroupTemplate, release_version_description
from deployer.adapters.transactions import Refused, Transaction
from deployer.errors import AwsCallFailed, DeployerError, DeployInProgress, ImageNotFound
from deployer.markers import OutboxEntry
from deployer.metrics_names import DeployMetric
from deployer.models.lifecycle_events import SsmStatus
from deployer.models.records import Pointer, Release, ReleaseSource, ReleaseStatus, utcnow
from deployer.notify import DeployNotice, NoticeKind, summarize_hosts
from deployer.observability import Metric, count, logger, metrics
from deployer.verdicts import (
    Verdict,
    blames_image,
    command_detail,
    command_verdict,
    host_counts,
    host_result,
    next_pending,
    rollback_candidates,
    rolls_back_automatically,
)

if TYPE_CHECKING:
    from deployer.models.config import AppConfig
    from deployer.wiring import Adapters

# A claim to send a release's command outlives any invocation (functions time out at 60 s), so
# a claim older than this belongs to an invocation that died.
SEND_CLAIM_SECONDS = 90
# Decisions per converge call; each round reads the state again. A push-start-finish-handoff
# chain needs four; more means the state keeps moving under us, and the next trigger goes on.
MAX_ROUNDS = 8
# Pending releases superseded in one decision (DynamoDB: 100 items per transaction).
SUPERSEDE_PER_DECISION = 90
# Launch-template versions kept besides the default, the group's and the retained releases'.
KEEP_NEWEST_VERSIONS = 10
# Statuses of a release that may have gone live on hosts, so hosts may still retain it.
_MAY_BE_RETAINED = frozenset({ReleaseStatus.DEPLOYING, ReleaseStatus.SUCCEEDED, ReleaseStatus.ROLLED_BACK})
# Throttling codes: the request was refused before anything was done.
_THROTTLES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
    }
)
# Error codes that say "try again": the step is retried by the next trigger, not failed.
_TRANSIENT = _THROTTLES | {
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerErrorException",
    "TransactionConflict",
    "TransactionInProgressException",
}


def new_token() -> str:
    """Identifies one invocation's claims."""
    return uuid.uuid4().hex


def transient(exc: BaseException) -> bool:
    """Whether a failed step should be retried rather than fail the release."""
    cause = exc.__cause__ if isinstance(exc, DeployerError) else exc
    if isinstance(cause, BotoCoreError):
        return True
    if isinstance(cause, ClientError):
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(cause) in _TRANSIENT or status >= 500
    return False


@dataclass(frozen=True)
class Ended:
    """A release this converge call decided the end of, and what it handed the app to."""

    release: int
    status: ReleaseStatus
    reason: str
    followed_by: int | None = None
    rollback: bool = False


def _refused(exc: BaseException) -> bool:
    """Whether AWS answered the call with a 4xx: the request was refused, nothing was done."""
    cause = exc.__cause__ if isinstance(exc, DeployerError) else exc
    if not isinstance(cause, ClientError):
        return False
    status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 400 <= status < 500 or (status == 0 and error_code(cause) in _THROTTLES)


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


@dataclass(frozen=True)
class Ending:
    """A release's command has ended: SSM's terminal status and what it means."""

    status: SsmStatus
    counts: CommandCounts | None
    tally: InvocationTally | None
    verdict: Verdict
    reason: str


class _Config:
    """The app's config, read once per converge and only when a step needs it."""

    def __init__(self, ad: Adapters, app: str, config: AppConfig | None) -> None:
        self._ad = ad
        self._app = app
        self._config = config

    def get(self) -> AppConfig:
        if self._config is None:
            self._config = self._ad.apps.get(self._app)
        return self._config


def converge(
    ad: Adapters,
    app: str,
    *,
    config: AppConfig | None = None,
    token: str | None = None,
    hint: tuple[str, SsmStatus] | None = None,
    known: tuple[AppStateRecord, Release] | None = None,
) -> Report:
    """Move the app toward its recorded desired state; safe to call any time, any number of
    times, concurrently. `hint`: a terminal status an SSM event reported for a command (SSM's
    own listing may lag behind its event). `token`: the caller's claims (a start it decided).
    `known`: the state and the lock's release exactly as the caller's own decision wrote them
    (spares the first round's reads)."""
    token = token or new_token()
    report = Report(app)
    cfg = _Config(ad, app, config)
    for _ in range(MAX_ROUNDS):
        release: Release | None
        if known is not None:
            state, release = known
            known = None
        else:
            state = ad.state.get(app)
            number = markers.owned_release(app, state.lock_owner)
            release = ad.releases.get_or_none(app, number) if number else None
        report.state = state
        if state.lock_owner is not None:
            if release is None:
                _decide(ad, report, _free_stale_lock(ad, state, report))
                continue
            report.release = release.release
            if release.status is ReleaseStatus.DEPLOYING:
                if release.command_id is None:
                    if _drive(ad, cfg.get(), state, release, token, report):
                        continue
                    break
                report.command_id = release.command_id
                ending = _ending(ad, release, hint)
                if ending is None:
                    report.note("rolling out", release=release.release, command_id=release.command_id)
                    break
                tx, change = _end(ad, cfg, state, release, ending, token, report)
                decided = _decide(ad, report, tx)
                if decided:
                    ok = ending.verdict is Verdict.SUCCEEDED
                    report.ended = Ended(
                        release.release,
                        ReleaseStatus.SUCCEEDED if ok else ReleaseStatus.FAILED,
                        ending.reason,
                        markers.owned_release(app, change.owner),
                        "rollback" in tx.labels,
                    )
                if decided and change.clear_owner and not change.realign:
                    # Ended and nothing follows: the state is what this decision wrote.
                    report.state = state.model_copy(
                        update={
                            "lock_owner": None,
                            "desired": change.desired or state.desired,
                            "outbox": state.outbox | set(change.add_outbox),
                        }
                    )
                    break
                continue
            if release.status is ReleaseStatus.PENDING:
                _decide(ad, report, _start_pending(ad, state, [release], token))
                continue
            # The release ended (say, cancelled) and still names the lock: hand the app on.
            tx = Transaction()
            change = StateChange(app, expect_owner=state.lock_owner)
            _hand_on(ad, state, tx, change, last_good=state.desired, token=token)
            _decide(ad, report, tx.add("state", ad.state.change_item(change)))
            continue
        if state.realign:
            _realign(ad, cfg.get(), state, report)
            continue
        if not state.paused:
            started = _start_pending(ad, state, ad.releases.pending(app), token)
            if started is not None:
                _decide(ad, report, started)
                continue
        break
    else:
        report.note("still moving after the most rounds one call makes; the next trigger goes on")
    if report.state is not None and report.state.outbox:
        drain_outbox(ad, app, report.state.outbox)
    return report


def _decide(ad: Adapters, report: Report, tx: Transaction | None) -> bool:
    """Commit a decision; a decision that raced another is simply made again from a fresh read."""
    if tx is None or not tx.items:
        return False
    try:
        tx.commit(ad.dynamodb, f"recording a decision for {report.app}")
    except Refused as refused:
        report.note("decision overtaken; reading again", refused=sorted(refused.labels))
        return False
    return True


# --- decisions -------------------------------------------------------------------------------


def _free_stale_lock(ad: Adapters, state: AppStateRecord, report: Report) -> Transaction:
    report.note("lock held by no release; freeing it", owner=state.lock_owner)
    change = StateChange(state.app, expect_owner=state.lock_owner, clear_owner=True)
    return Transaction().add("state", ad.state.change_item(change))


def _start_pending(
    ad: Adapters, state: AppStateRecord, pending: list[Release], token: str
) -> Transaction | None:
    """Start the newest PENDING release on the free lock; the older ones are superseded."""
    chosen, older = next_pending(pending, state.paused)
    if chosen is None:
        return None
    tx = Transaction()
    change = StateChange(state.app, expect_owner=state.lock_owner, require_unpaused=True)
    _start(ad, state, tx, change, chosen, older, last_good=state.desired, token=token)
    return tx.add("state", ad.state.change_item(change))


def _start(  # noqa: PLR0917 - one decision's parts
    ad: Adapters,
    state: AppStateRecord,
    tx: Transaction,
    change: StateChange,
    chosen: Release,
    older: list[Release],
    *,
    last_good: int | None,
    token: str,
) -> None:
    app = state.app
    tx.add(
        f"start {chosen.release}",
        ad.releases.transition_item(
            app,
            chosen.release,
            ReleaseStatus.DEPLOYING,
            f"{chosen.source.value} deploy started",
            allowed_from=frozenset({ReleaseStatus.PENDING}),
            deploy_started_at=utcnow(),
            replaces=last_good,
            send_claim=token,
            send_claimed_at=ad.state.now(),
        ),
    )
    for stale in older[:SUPERSEDE_PER_DECISION]:
        tx.add(
            f"supersede {stale.release}",
            ad.releases.transition_item(
                app,
                stale.release,
                ReleaseStatus.SUPERSEDED,
                f"superseded by release {chosen.release}",
                allowed_from=frozenset({ReleaseStatus.PENDING}),
            ),
        )
    change.owner = markers.owner(app, chosen.release)
    change.desired = chosen.release
    change.add_outbox.append(OutboxEntry(chosen.release, NoticeKind.STARTED.value).encode())


def _hand_on(
    ad: Adapters,
    state: AppStateRecord,
    tx: Transaction,
    change: StateChange,
    *,
    last_good: int | None,
    token: str,
    after: int = 0,
) -> None:
    """The app's next step once its rollout ended: the newest PENDING release newer than `after`
    starts (unless paused); the others are superseded; else the lock is freed."""
    pending = ad.releases.pending(state.app)
    newer = [r for r in pending if r.release > after]
    stale = [r for r in pending if r.release <= after]
    chosen, older = next_pending(newer, state.paused)
    if chosen is not None:
        _start(ad, state, tx, change, chosen, stale + older, last_good=last_good, token=token)
        change.require_unpaused = True
        return
    change.clear_owner = True
    for release in stale[:SUPERSEDE_PER_DECISION]:
        tx.add(
            f"supersede {release.release}",
            ad.releases.transition_item(
                state.app,
                release.release,
                ReleaseStatus.SUPERSEDED,
                f"superseded by release {after}",
                allowed_from=frozenset({ReleaseStatus.PENDING}),
            ),
        )


def _end(  # noqa: PLR0917 - one decision's parts
    ad: Adapters,
    cfg: _Config,
    state: AppStateRecord,
    release: Release,
    ending: Ending,
    token: str,
    report: Report,
) -> tuple[Transaction, StateChange]:
    """The decision at the end of a rollout: its verdict, and what the app does next."""
    app = release.app
    ok = ending.verdict is Verdict.SUCCEEDED
    hosts_ok, hosts_failed = host_counts(ending.status, ending.counts, ending.tally)
    tx = Transaction().add(
        "release",
        ad.releases.transition_item(
            app,
            release.release,
            ReleaseStatus.SUCCEEDED if ok else ReleaseStatus.FAILED,
            ending.reason,
            allowed_from=frozenset({ReleaseStatus.DEPLOYING}),
            hosts_ok=hosts_ok,
            hosts_failed=hosts_failed,
        ),
    )
    change = StateChange(app, expect_owner=state.lock_owner)
    if ok:
        change.desired = release.release
        change.add_outbox.append(OutboxEntry(release.release, NoticeKind.SUCCEEDED.value).encode())
        if release.rollback_of is not None:
            _mark_rolled_back(ad, tx, release)
        _hand_on(ad, state, tx, change, last_good=release.release, token=token, after=release.release)
        report.note("release succeeded", release=release.release, reason=ending.reason)
        _count_end(release, ok=True)
        return tx.add("state", ad.state.change_item(change)), change
    config = cfg.get()
    if blames_image(release):
        # A digest that failed is never deployed automatically again (until an operator does).
        change.refuse = release.digest
    target = (
        rollback_target(ad, config, release)
        if rolls_back_automatically(release, config.auto_rollback)
        else None
    )
    if target is None:
        # Held: the failed release stays what the app runs where it went live; nothing re-sends
        # it, and an operator decides (roll back, promote, or push a fix).
        change.desired = release.release
        change.add_outbox.append(OutboxEntry(release.release, NoticeKind.FAILED.value).encode())
        _hand_on(ad, state, tx, change, last_good=release.replaces, token=token, after=release.release)
        report.note("release failed", release=release.release, reason=ending.reason)
        _count_end(release, ok=False)
        return tx.add("state", ad.state.change_item(change)), change
    number = add_rollback(
        ad,
        config,
        state,
        tx,
        change,
        target=target,
        of=release,
        reason=f"automatic rollback: release {release.release} failed: {ending.reason}",
        token=token,
    )
    change.add_outbox.insert(
        0, OutboxEntry(release.release, NoticeKind.ROLLED_BACK.value, target.release).encode()
    )
    _count_end(release, ok=False)
    count(DeployMetric.ROLLBACKS)
    report.note(
        "release failed; rolling back",
        release=release.release,
        target=target.release,
        rollback_release=number,
        reason=ending.reason,
    )
    return tx.add("state", ad.state.change_item(change)), change


def add_rollback(
    ad: Adapters,
    config: AppConfig,
    state: AppStateRecord,
    tx: Transaction,
    change: StateChange,
    *,
    target: Release,
    of: Release,
    reason: str,
    token: str,
) -> int:
    """Add to a decision a rollback release to `target`'s image taking `of`'s place: recorded
    DEPLOYING with the lock, the next number, desired, its `started` notice owed."""
    number = state.last_release + 1
    rollback = new_record(
        config,
        number,
        image=target.image,
        digest=target.digest,
        tag=target.tag,
        source=ReleaseSource.ROLLBACK,
        reason=reason,
        token=token,
        now=ad.state.now(),
        replaces=target.release,
        rollback_of=of.release,
    )
    tx.add("rollback", ad.releases.create_item(rollback))
    change.expect_last = state.last_release
    change.last_release = number
    change.owner = markers.owner(config.app, number)
    change.desired = number
    change.add_outbox.append(OutboxEntry(number, NoticeKind.STARTED.value).encode())
    return number


def _mark_rolled_back(ad: Adapters, tx: Transaction, rollback: Release) -> None:
    """A rollback that succeeded: the release it put back is now ROLLED_BACK (never before: a
    record does not say so while hosts still serve it)."""
    assert rollback.rollback_of is not None
    previous = ad.releases.get_or_none(rollback.app, rollback.rollback_of)
    if previous is None or previous.status not in (ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED):
        return
    tx.add(
        "rolled back",
        ad.releases.transition_item(
            rollback.app,
            previous.release,
            ReleaseStatus.ROLLED_BACK,
            f"rolled back by release {rollback.release}: {previous.status_reason or previous.status.value}",
            allowed_from=frozenset({previous.status}),
        ),
    )


def rollback_target(ad: Adapters, config: AppConfig, failed: Release) -> Release | None:
    """The newest release before `failed` that succeeded with another image still in ECR (the
    automatic and the operator rollback both choose so)."""
    history = ad.releases.succeeded_before(config.app, failed.release)
    for candidate in rollback_candidates(history, failed):
        try:
            ad.images.by_digest(config.repository, candidate.digest)
        except ImageNotFound:
            logger.warning(
                "rollback candidate's image is gone from ECR; trying an older one",
                app=config.app,
                release=candidate.release,
            )
            continue
        return candidate
    return None


def new_record(
    config: AppConfig,
    number: int,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    token: str,
    now: int,
    deploying: bool = True,
    replaces: int | None = None,
    rollback_of: int | None = None,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
) -> Release:
    started: dict[str, Any] = {}
    if deploying:
        started = {
            "status": ReleaseStatus.DEPLOYING,
            "status_reason": f"{source.value} deploy started",
            "deploy_started_at": utcnow(),
            "send_claim": token,
            "send_claimed_at": now,
        }
    return Release(
        app=config.app,
        release=number,
        repository=config.repository,
        image=image,
        digest=digest,
        tag=tag,
        pushed_at=pushed_at or utcnow(),
        source=source,
        reason=reason,
        event_id=event_id,
        replaces=replaces,
        rollback_of=rollback_of,
        **started,
    )


# --- admission: a new release, started now or left pending ---------------------------------


@dataclass(frozen=True)
class Admitted:
    release: int | None  # None: the digest is refused
    started: bool = False
    replayed: bool = False  # admitted before (a redelivery): `release` is the earlier answer
    paused: bool = False
    superseded: bool = False  # arrived after a newer push: recorded SUPERSEDED
    # A start: the state and the release exactly as written (converge's first round reads neither).
    known: tuple[AppStateRecord, Release] | None = None


ADMIT_ATTEMPTS = 8


def admit(
    ad: Adapters,
    config: AppConfig,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    token: str,
    marker: str | None = None,
    operator: bool = False,
    rollback_of: int | None = None,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
    state: AppStateRecord | None = None,
) -> Admitted:
    """Record a release in one transaction with the app's counter (and, for a push, its
    admission marker): started now when the app is free (an operator's deploy also while
    paused), else PENDING. A push of a refused digest is refused (no number used); an operator
    deploy lifts the refusal in the same write and is refused while another deploy runs."""
    app = config.app
    for _ in range(ADMIT_ATTEMPTS):
        # The caller's fresh read serves the first attempt; a refused write reads again.
        state = state or ad.state.get(app)
        if not operator and digest in state.refused_digests:
            return Admitted(None)
        if operator and state.lock_owner is not None:
            raise DeployInProgress(
                f"{app} is deploying ({state.lock_owner}); "
                "wait until it ends, or cancel it, then run this again"
            )
        number = state.last_release + 1
        pushed = int(pushed_at.timestamp()) if pushed_at is not None and marker else None
        late = pushed is not None and pushed < state.last_pushed_at
        start = not late and state.lock_owner is None and (operator or not state.paused)
        release = new_record(
            config,
            number,
            image=image,
            digest=digest,
            tag=tag,
            source=source,
            reason=reason,
            token=token,
            now=ad.state.now(),
            deploying=start,
            replaces=_replaces(ad, state) if start else None,
            rollback_of=rollback_of,
            pushed_at=pushed_at,
            event_id=event_id,
        )
        if late:
            # A newer push was admitted before this one arrived: deploying it now would go back.
            release = release.model_copy(
                update={
                    "status": ReleaseStatus.SUPERSEDED,
                    "status_reason": "a newer push arrived first",
                    "finished_at": utcnow(),
                }
            )
        change = StateChange(
            app,
            expect_owner=state.lock_owner,
            expect_last=state.last_release,
            last_release=number,
            refuse_if_refused=None if operator else digest,
            allow=digest if operator else None,
            last_pushed_at=pushed if pushed is not None and not late else None,
        )
        if start:
            change.owner = markers.owner(app, number)
            change.desired = number
            change.require_unpaused = not operator
            change.add_outbox.append(OutboxEntry(number, NoticeKind.STARTED.value).encode())
        tx = Transaction()
        if marker:
            tx.add("admission", ad.admissions.create_item(marker, app, number))
        tx.add("state", ad.state.change_item(change)).add("release", ad.releases.create_item(release))
        try:
            tx.commit(ad.dynamodb, f"recording release {number} of {app}")
        except Refused as refused:
            if marker and "admission" in refused.labels:
                earlier = ad.admissions.release_of(marker)
                logger.info("push admitted before; carrying on with it", app=app, release=earlier)
                return Admitted(earlier, replayed=True)
            state = None
            continue
        logger.info(
            "release recorded",
            app=app,
            release=number,
            digest=digest,
            tag=tag,
            source=source.value,
            started=start,
        )
        if late:
            count(Metric.RELEASES_SUPERSEDED)
            return Admitted(number, superseded=True)
        known = None
        if start:
            after = state.model_copy(
                update={
                    "last_release": number,
                    "lock_owner": change.owner,
                    "desired": number,
                    "outbox": state.outbox | set(change.add_outbox),
                }
            )
            known = (after, release)
        return Admitted(
            number,
            known=known,
            started=start,
            paused=state.paused,
        )
    raise AwsCallFailed(f"could not record a release of {app}: its state kept changing")


def _replaces(ad: Adapters, state: AppStateRecord) -> int | None:
    """The release a start goes back to if it fails: the desired one; for an app whose state
    predates `desired` (recorded by an older version), the pointer's."""
    if state.desired is not None or state.last_release == 0:
        return state.desired
    pointer = ad.pointer.get(state.app)
    return pointer.release if pointer is not None else None


def supersede_older_pending(ad: Adapters, app: str, newer_than: int) -> list[int]:
    """Mark PENDING releases older than `newer_than` SUPERSEDED (each write conditional)."""
    superseded: list[int] = []
    for pending in ad.releases.pending(app):
        if pending.release >= newer_than:
            continue
        try:
            ad.releases.update_status(
                app, pending.release, ReleaseStatus.SUPERSEDED, reason=f"superseded by release {newer_than}"
            )
        except DeployerError:
            continue  # started or superseded concurrently
        superseded.append(pending.release)
    if superseded:
        logger.info("pending releases superseded", app=app, releases=superseded, by=newer_than)
        count(Metric.RELEASES_SUPERSEDED, len(superseded))
    return superseded


# --- driving a release out: idempotent steps ------------------------------------------------


def _drive(  # noqa: PLR0917 - one step's parts
    ad: Adapters, config: AppConfig, state: AppStateRecord, release: Release, token: str, report: Report
) -> bool:
    """Pointer, launch-template version, group, command for a DEPLOYING release. True when it
    recorded a decision (the release could not start), False when done for now."""
    app = config.app
    resumed = False
    sending = False
    try:
        if release.send_claim != token:
            before = ad.releases.claim_send(app, release.release, token, ad.state.now(), SEND_CLAIM_SECONDS)
            if before is None:
                report.note("another invocation is starting this release", release=release.release)
                return False
            # Someone claimed it before us and is gone: it may have sent the command already.
            resumed = before.send_claim is not None
        ad.pointer.put(Pointer.for_release(release))
        group = ad.launch_templates.current(config)
        script = builders.user_data(
            config, release, ad.settings.swap_document_name, ad.pointer.name(app), ad.region
        )
        version = ad.launch_templates.create_version(
            group, script, release_version_description(app, release.release, release.digest)
        )
        if group.version != version or group.versions - {version}:
            ad.launch_templates.point_group(group, version)
        comment = markers.release_comment(app, release.release)
        command_id = None
        if resumed:
            since = (release.deploy_started_at or utcnow()) - timedelta(minutes=5)
            command_id = ad.fleet.find(comment, since)
        if command_id is None:
            sending = True
            command_id = ad.fleet.send_swap(
                config,
                builders.swap_parameters(config, release),
                comment,
                hosts=group.max_size,
                rollback=release.source is ReleaseSource.ROLLBACK,
            )
    except DeployerError as exc:
        if not transient(exc):
            _decide(ad, report, _start_failed(ad, state, release, str(exc), token, report))
            return True
        if not resumed and (not sending or _refused(exc)):
            # Nothing was sent under this claim nor before it (a throttle is a refusal; a 5xx
            # or a timeout may have created the command): let the platform's retry (a new
            # invocation) start at once instead of waiting for the claim to go stale.
            _drop_claim(ad, release, token)
        raise
    # Sent: from here on a failure keeps the claim, so whoever resumes looks the command up.
    ad.releases.set_fields(app, release.release, command_id=command_id, launch_template_version=version)
    report.command_id = command_id
    report.note(
        "deploy started",
        release=release.release,
        digest=release.digest,
        source=release.source.value,
        command_id=command_id,
        launch_template_version=version,
    )
    count(Metric.DEPLOY_STARTED)
    _prune_versions(ad, config, group, version)
    return False


def _drop_claim(ad: Adapters, release: Release, token: str) -> None:
    try:
        ad.releases.drop_claim(release.app, release.release, token)
    except DeployerError as exc:
        logger.warning("send claim not dropped; it goes stale", app=release.app, error=str(exc))


def _start_failed(  # noqa: PLR0917 - one decision's parts
    ad: Adapters, state: AppStateRecord, release: Release, error: str, token: str, report: Report
) -> Transaction:
    """A start that failed for good (not a throttle): the release FAILED, pointer and group go
    back to the release it replaced, and the app moves on."""
    report.note("deploy could not start", release=release.release, error=error)
    count(Metric.DEPLOY_START_FAILED)
    tx = Transaction().add(
        "release",
        ad.releases.transition_item(
            release.app,
            release.release,
            ReleaseStatus.FAILED,
            f"could not start: {error}",
            allowed_from=frozenset({ReleaseStatus.DEPLOYING}),
        ),
    )
    change = StateChange(release.app, expect_owner=state.lock_owner, realign=True)
    if release.replaces is not None:
        change.desired = release.replaces
    else:
        change.clear_desired = True  # a first deploy: nothing to go back to, no pointer
    change.add_outbox.append(OutboxEntry(release.release, NoticeKind.FAILED.value).encode())
    _hand_on(ad, state, tx, change, last_good=release.replaces, token=token, after=release.release)
    return tx.add("state", ad.state.change_item(change))


def _realign(ad: Adapters, config: AppConfig, state: AppStateRecord, report: Report) -> None:
    """Pointer and group back on the desired release (after a start that failed)."""
    app = config.app
    desired = ad.releases.get_or_none(app, state.desired) if state.desired else None
    pointer = ad.pointer.get(app)
    if desired is None:
        if pointer is not None:
            ad.pointer.delete(app)
    else:
        if pointer is None or pointer.release != desired.release:
            ad.pointer.put(Pointer.for_release(desired))
        if desired.launch_template_version is not None:
            try:
                group = ad.launch_templates.current(config)
                if group.version != desired.launch_template_version:
                    ad.launch_templates.point_group(group, desired.launch_template_version)
            except DeployerError as exc:
                if transient(exc):
                    raise
                # The group is gone or no longer on the app's template: nothing to move back
                # (the reconciler repairs it toward `desired` once it is fixed). Raising would
                # hold the notices owed and every later trigger of the app.
                logger.warning("group not put back", app=app, desired=desired.release, error=str(exc))
    report.note("pointer and group put back", desired=state.desired)
    change = StateChange(app, expect_owner=None, realign=False)
    _decide(ad, report, Transaction().add("state", ad.state.change_item(change)))


def _prune_versions(ad: Adapters, config: AppConfig, group: GroupTemplate, latest: int) -> None:
    """Delete launch-template versions no release needs any more. Best effort: the deploy has
    started, and a version left behind now is deleted by a later deploy."""
    if latest <= KEEP_NEWEST_VERSIONS:
        return
    try:
        recent = ad.releases.list_recent(config.app, limit=KEEP_NEWEST_VERSIONS + 4 * config.retain)
        retained = [
            r.launch_template_version
            for r in recent
            if r.status in _MAY_BE_RETAINED and r.launch_template_version is not None
        ][: config.retain]
        deleted = ad.launch_templates.prune(group, config.app, latest, KEEP_NEWEST_VERSIONS, retained)
    except DeployerError as exc:
        logger.warning("old launch-template versions were not deleted", app=config.app, error=str(exc))
        count(Metric.VERSION_CLEANUP_FAILED)
        return
    if deleted:
        logger.info(
            "old launch-template versions deleted",
            app=config.app,
            template=group.template_id,
            versions=deleted,
        )


# --- the end of a rollout, from SSM ------------------------------------------------------------


def _ending(ad: Adapters, release: Release, hint: tuple[str, SsmStatus] | None) -> Ending | None:
    """How the release's command ended, or None while it runs."""
    assert release.command_id is not None
    counts = ad.results.counts(release.command_id)
    reported = hint[1] if hint is not None and hint[0] == release.command_id else None
    listed = None
    if counts is not None:
        listed = SsmStatus.parse(counts.status_details) or SsmStatus.parse(counts.status)
    if listed is not None and listed.terminal:
        status = listed
    elif reported is not None and reported.terminal:
        status = reported  # the event is ahead of SSM's listing
    else:
        return None
    tally = None
    if counts is not None and command_detail(status, counts) is not SsmStatus.SUCCESS:
        # Only a command that is not a plain Success needs the per-host StatusDetails.
        tally = ad.results.tally(release.command_id)
    verdict, reason = command_verdict(status, counts, tally)
    return Ending(status, counts, tally, verdict, reason)


# --- notices owed (the outbox) ---------------------------------------------------------------


def drain_outbox(ad: Adapters, app: str, entries: frozenset[str]) -> int:
    """Publish every notice owed, then strike it off; returns how many were published. A notice
    that cannot be published stays owed (the next converge, at the latest the reconciler's tick,
    tries again); it never holds a deploy up."""
    published = 0
    for raw in sorted(entries, key=_outbox_order):
        entry = OutboxEntry.decode(raw)
        try:
            release = ad.releases.get_or_none(app, entry.release) if entry else None
            if entry is not None and release is not None:
                ad.notifier.publish(notice_for(ad, release, entry), entry.dedupe_id(app))
                published += 1
            ad.state.outbox_done(app, raw)
        except DeployerError as exc:
            logger.error("notice not sent; it stays owed", app=app, entry=raw, error=str(exc))
            count(DeployMetric.NOTICES_OWED)
    return published


def _outbox_order(raw: str) -> tuple[int, int]:
    entry = OutboxEntry.decode(raw)
    if entry is None:
        return (0, 0)
    # A release's start is announced before its end (both owed when the start's publish failed).
    order = [
        k.value for k in (NoticeKind.STARTED, NoticeKind.SUCCEEDED, NoticeKind.FAILED, NoticeKind.ROLLED_BACK)
    ]
    return (entry.release, order.index(entry.kind) if entry.kind in order else len(order))


def notice_for(ad: Adapters, release: Release, entry: OutboxEntry) -> DeployNotice:
    kind = NoticeKind(entry.kind)
    base = {
        "app": release.app,
        "release": release.release,
        "tag": release.tag,
        "digest": release.digest,
        "source": release.source.value,
    }
    if kind is NoticeKind.STARTED:
        return DeployNotice(kind=kind, reason=release.reason, **base)
    duration = None
    if release.deploy_started_at is not None and release.finished_at is not None:
        duration = max((release.finished_at - release.deploy_started_at).total_seconds(), 0.0)
    succeeded = kind is NoticeKind.SUCCEEDED
    outcomes = [] if succeeded else ad.host_outcomes.for_release(release.key)
    ok, failed, classes, top = summarize_hosts(host_result(o) for o in outcomes)
    return DeployNotice(
        kind=kind,
        reason=release.status_reason,
        duration_seconds=duration,
        hosts_ok=release.hosts_ok if release.hosts_ok is not None else ok,
        hosts_failed=release.hosts_failed if release.hosts_failed is not None else failed,
        hosts_unreached=classes.get("unreached", 0),
        failure_classes=classes,
        top_failure=top or (None if succeeded else release.status_reason),
        rolled_back_to=entry.rolled_back_to,
        **base,
    )


def _count_end(release: Release, *, ok: bool) -> None:
    """Deploy metrics for a release that just ended."""
    if release.deploy_started_at is not None:
        duration = max((utcnow() - release.deploy_started_at).total_seconds(), 0.0)
        metrics.add_metric(name=DeployMetric.DEPLOY_DURATION, unit="Seconds", value=duration)
    count(DeployMetric.DEPLOY_SUCCEEDED if ok else DeployMetric.DEPLOY_FAILED)
