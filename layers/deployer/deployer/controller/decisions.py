"""Every decision of the controller: facts in, one `Decision` out. Nothing here reads or writes.

The loop (`controller.loop`) reads the facts a decision needs, calls one function below, and
commits what it returns as one transaction; a decision overtaken by another writer is refused by
its conditions and made again from a fresh read. docs/architecture.md ("Decisions") lists them:

    admission        a new release: started now, left PENDING, SUPERSEDED (late) - or refused
    start_pending    the lock is free: the newest PENDING release starts, older ones superseded
    end              a command ended: SUCCEEDED | FAILED (held) | FAILED + automatic rollback
    start_failed     a start failed for good: FAILED, pointer and group go back (realign)
    hand_on          the lock's release ended elsewhere (cancelled): the next one or a free lock
    free_stale_lock  the lock names no release: free it
    realigned        pointer and group are back on the desired release
    cancel           an operator stops the rollout: CANCELLED + rollback, or a free lock + realign
    supersede        PENDING releases older than a newer admitted one: SUPERSEDED
    task_ended       the release task ended: the rollout goes on, or FAILED with nothing moved

A staged release's decisions (stage_ended, bake_over, approved) are in `controller.stages`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from deployer import markers
from deployer.adapters.app_state import AppStateRecord, StateChange
from deployer.controller.types import Decision, Ended, Ending, Now, TaskEnding, Transition
from deployer.errors import DeployInProgress
from deployer.markers import OutboxEntry
from deployer.metrics_names import DeployMetric
from deployer.models.records import TASK_FAILED, TASK_SUCCEEDED, Release, ReleaseSource, ReleaseStatus
from deployer.models.release_config import ReleaseConfig
from deployer.notify import NoticeKind
from deployer.observability import Metric
from deployer.verdicts import Verdict, blames_image, host_counts, next_pending, rolls_back_automatically

if TYPE_CHECKING:
    from collections.abc import Sequence

    from deployer.models.config import AppConfig

# Pending releases superseded in one decision (DynamoDB: 100 items per transaction).
SUPERSEDE_PER_DECISION = 90

_FROM_PENDING = frozenset({ReleaseStatus.PENDING})
_FROM_DEPLOYING = frozenset({ReleaseStatus.DEPLOYING})


def _notice(release: int, kind: NoticeKind, rolled_back_to: int | None = None) -> str:
    return OutboxEntry(release, kind.value, rolled_back_to).encode()


def new_record(
    app: str,
    repository: str,
    number: int,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    token: str,
    now: Now,
    deploying: bool = True,
    replaces: int | None = None,
    rollback_of: int | None = None,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
    config: ReleaseConfig | None = None,
    with_task: bool = False,
    staged: bool = False,
) -> Release:
    """A new release record: DEPLOYING under the caller's send claim, or PENDING. A rollback
    skips the app's release task unless `with_task` (docs/release-task.md), and the app's
    stages unless `staged` (docs/stages.md)."""
    started = {}
    if deploying:
        started = {
            "status": ReleaseStatus.DEPLOYING,
            "status_reason": f"{source.value} deploy started",
            "deploy_started_at": now.at,
            "send_claim": token,
            "send_claimed_at": now.epoch,
        }
    return Release(
        app=app,
        release=number,
        repository=repository,
        image=image,
        digest=digest,
        tag=tag,
        config=config or ReleaseConfig(),
        pushed_at=pushed_at or now.at,
        source=source,
        reason=reason,
        event_id=event_id,
        replaces=replaces,
        rollback_of=rollback_of,
        skip_task=source is ReleaseSource.ROLLBACK and not with_task,
        staged_rollback=source is ReleaseSource.ROLLBACK and staged,
        **started,
    )


def _superseded(release: Release, by: int) -> Transition:
    return Transition(release.release, ReleaseStatus.SUPERSEDED, f"superseded by release {by}", _FROM_PENDING)


def _start(
    decision: Decision,
    change: StateChange,
    chosen: Release,
    older: Sequence[Release],
    *,
    last_good: int | None,
    token: str,
    now: Now,
) -> None:
    """`chosen` (PENDING) starts under this decision's claim; `older` are superseded by it."""
    decision.transition(
        Transition(
            chosen.release,
            ReleaseStatus.DEPLOYING,
            f"{chosen.source.value} deploy started",
            _FROM_PENDING,
            {
                "deploy_started_at": now.at,
                "replaces": last_good,
                "send_claim": token,
                "send_claimed_at": now.epoch,
            },
        )
    )
    for stale in older[:SUPERSEDE_PER_DECISION]:
        decision.transition(_superseded(stale, chosen.release))
    change.owner = markers.owner(decision.app, chosen.release)
    change.desired = chosen.release
    change.add_outbox.append(_notice(chosen.release, NoticeKind.STARTED))


def _hand_on(
    decision: Decision,
    state: AppStateRecord,
    change: StateChange,
    pending: Sequence[Release],
    *,
    last_good: int | None,
    token: str,
    now: Now,
    after: int = 0,
) -> None:
    """The app's next step once its rollout ended: the newest PENDING release newer than `after`
    starts (unless paused) and supersedes the others; else the lock is freed."""
    # The release that just ended is in neither list (a lagging pending index may still name it).
    newer = [r for r in pending if r.release > after]
    stale = [r for r in pending if r.release < after]
    chosen, older = next_pending(newer, state.paused)
    if chosen is not None:
        _start(decision, change, chosen, stale + older, last_good=last_good, token=token, now=now)
        change.require_unpaused = True
        return
    change.clear_owner = True
    for release in stale[:SUPERSEDE_PER_DECISION]:
        decision.transition(_superseded(release, after))


def _add_rollback(
    decision: Decision,
    state: AppStateRecord,
    change: StateChange,
    *,
    target: Release,
    of: Release,
    reason: str,
    token: str,
    now: Now,
) -> int:
    """A rollback release to `target`'s image and pinned config (the exact secret versions, never
    resolved again) taking `of`'s place: recorded DEPLOYING with the lock, the next number,
    desired, its `started` notice owed."""
    number = state.last_release + 1
    decision.creates.append(
        new_record(
            of.app,
            target.repository,
            number,
            image=target.image,
            digest=target.digest,
            tag=target.tag,
            source=ReleaseSource.ROLLBACK,
            reason=reason,
            token=token,
            now=now,
            replaces=target.release,
            rollback_of=of.release,
            config=target.config,
        )
    )
    change.expect_last = state.last_release
    change.last_release = number
    change.owner = markers.owner(of.app, number)
    change.desired = number
    change.add_outbox.append(_notice(number, NoticeKind.STARTED))
    return number


def admission(
    config: AppConfig,
    state: AppStateRecord,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    token: str,
    now: Now,
    marker: str | None = None,
    operator: bool = False,
    rollback_of: int | None = None,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
    config_pin: ReleaseConfig | None = None,
    unresolved: str | None = None,
    with_task: bool = False,
    staged: bool = False,
) -> Decision | None:
    """A new release with the app's next number: started when the app is free (an operator's
    deploy also while paused), else PENDING; SUPERSEDED when a newer push was admitted first.
    None: a push of a refused digest (no number used). An operator's deploy lifts the refusal
    and is refused (DeployInProgress) while another deploy runs.

    `config_pin`: the environment and secret versions the release runs with (read before);
    `unresolved`: why a secret could not be pinned: the release is recorded FAILED and nothing
    deploys (the push has its answer; a redelivery finds the same release)."""
    app = config.app
    if not operator and digest in state.refused_digests:
        return None
    if operator and state.lock_owner is not None:
        raise DeployInProgress(
            f"{app} is deploying ({state.lock_owner}); wait until it ends, or cancel it, then run this again"
        )
    number = state.last_release + 1
    pushed = int(pushed_at.timestamp()) if pushed_at is not None and marker else None
    late = pushed is not None and pushed < state.last_pushed_at
    start = not late and unresolved is None and state.lock_owner is None and (operator or not state.paused)
    release = new_record(
        app,
        config.repository,
        number,
        image=image,
        digest=digest,
        tag=tag,
        source=source,
        reason=reason,
        token=token,
        now=now,
        deploying=start,
        replaces=state.desired if start else None,
        rollback_of=rollback_of,
        pushed_at=pushed_at,
        event_id=event_id,
        config=config_pin,
        with_task=with_task,
        staged=staged,
    )
    if unresolved is not None and not late:
        release = release.model_copy(
            update={
                "status": ReleaseStatus.FAILED,
                "status_reason": f"not deployed: {unresolved}",
                "finished_at": now.at,
            }
        )
    if late:
        # A newer push was admitted before this one arrived: deploying it now would go back.
        release = release.model_copy(
            update={
                "status": ReleaseStatus.SUPERSEDED,
                "status_reason": "a newer push arrived first",
                "finished_at": now.at,
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
        change.add_outbox.append(_notice(number, NoticeKind.STARTED))
    elif release.status is ReleaseStatus.FAILED:
        change.add_outbox.append(_notice(number, NoticeKind.FAILED))
    decision = Decision(
        app,
        change,
        creates=[release],
        admission=(marker, number) if marker else None,
    )
    decision.explain(
        "release recorded", release=number, digest=digest, tag=tag, source=source.value, started=start
    )
    if late:
        decision.count(Metric.RELEASES_SUPERSEDED)
    elif unresolved is not None:
        decision.explain("release not deployed: its config could not be pinned", error=unresolved)
        decision.count(DeployMetric.DEPLOY_FAILED)
    return decision


def start_pending(state: AppStateRecord, pending: Sequence[Release], token: str, now: Now) -> Decision | None:
    """The lock is free: the newest PENDING release starts; the older ones are superseded."""
    chosen, older = next_pending(pending, state.paused)
    if chosen is None:
        return None
    change = StateChange(state.app, expect_owner=state.lock_owner, require_unpaused=True)
    decision = Decision(state.app, change)
    decision.explain("pending release started", release=chosen.release)
    _start(decision, change, chosen, older, last_good=state.desired, token=token, now=now)
    return decision


def end(
    state: AppStateRecord,
    release: Release,
    ending: Ending,
    *,
    auto_rollback: bool,
    pending: Sequence[Release],
    target: Release | None,
    rolled_back: Release | None,
    token: str,
    now: Now,
) -> Decision:
    """The end of a rollout: its verdict, and what the app does next.

    `auto_rollback`: the app's setting; `target`: the automatic rollback's target, if there is
    one; `rolled_back`: for a rollback
    release, the release it put back (ROLLED_BACK once the rollback succeeded, never before)."""
    app = release.app
    ok = ending.verdict is Verdict.SUCCEEDED
    hosts_ok, hosts_failed = host_counts(ending.status, ending.counts, ending.tally)
    change = StateChange(app, expect_owner=state.lock_owner)
    decision = Decision(app, change)
    decision.explain("release ended", release=release.release, reason=ending.reason)
    decision.transition(
        Transition(
            release.release,
            ReleaseStatus.SUCCEEDED if ok else ReleaseStatus.FAILED,
            ending.reason,
            _FROM_DEPLOYING,
            {"hosts_ok": hosts_ok, "hosts_failed": hosts_failed},
        )
    )
    if release.deploy_started_at is not None:
        decision.duration = max((now.at - release.deploy_started_at).total_seconds(), 0.0)
    rollback: int | None = None
    if ok:
        decision.explain("release succeeded")
        decision.count(DeployMetric.DEPLOY_SUCCEEDED)
        change.desired = release.release
        change.add_outbox.append(_notice(release.release, NoticeKind.SUCCEEDED))
        if rolled_back is not None:
            _mark_rolled_back(decision, release, rolled_back)
        _hand_on(
            decision,
            state,
            change,
            pending,
            last_good=release.release,
            token=token,
            now=now,
            after=release.release,
        )
    else:
        decision.count(DeployMetric.DEPLOY_FAILED)
        if blames_image(release, ending.failure_classes):
            # A digest that failed is never deployed automatically again (until an operator does).
            change.refuse = release.digest
        if target is not None and rolls_back_automatically(release, auto_rollback):
            decision.explain("release failed; rolling back", target=target.release)
            rollback = roll_back_failed(
                decision,
                state,
                change,
                failed=release,
                target=target,
                reason=f"automatic rollback: release {release.release} failed: {ending.reason}",
                token=token,
                now=now,
            )
            decision.explain("release failed; rolling back", rollback_release=rollback)
        else:
            # Held: the failed release stays what the app runs where it went live; nothing re-sends
            # it, and an operator decides (roll back, promote, or push a fix).
            decision.explain("release failed")
            change.desired = release.release
            failed_and_moved_on(decision, state, change, release, pending, token=token, now=now)
    decision.ended = Ended(
        release.release,
        ReleaseStatus.SUCCEEDED if ok else ReleaseStatus.FAILED,
        ending.reason,
        markers.owned_release(app, change.owner),
        rollback=rollback is not None,
    )
    return decision


def failed_and_moved_on(
    decision: Decision,
    state: AppStateRecord,
    change: StateChange,
    release: Release,
    pending: Sequence[Release],
    *,
    token: str,
    now: Now,
) -> None:
    """`release` failed and nothing takes its place: its `failed` notice is owed, and the app
    moves on past it (the release it replaced is the last good one)."""
    change.add_outbox.append(_notice(release.release, NoticeKind.FAILED))
    _hand_on(
        decision,
        state,
        change,
        pending,
        last_good=release.replaces,
        token=token,
        now=now,
        after=release.release,
    )


def _mark_rolled_back(decision: Decision, rollback: Release, previous: Release) -> None:
    """A rollback that succeeded: the release it put back is now ROLLED_BACK."""
    if rollback.rollback_of != previous.release:
        return
    if previous.status not in (ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED):
        return
    decision.transition(
        Transition(
            previous.release,
            ReleaseStatus.ROLLED_BACK,
            f"rolled back by release {rollback.release}: {previous.status_reason or previous.status.value}",
            frozenset({previous.status}),
        )
    )


def back_to_replaced(change: StateChange, release: Release) -> None:
    """The app's desired release goes back to the one `release` replaced; a first deploy had
    none, so nothing is desired (and no pointer)."""
    if release.replaces is not None:
        change.desired = release.replaces
    else:
        change.clear_desired = True


def roll_back_failed(
    decision: Decision,
    state: AppStateRecord,
    change: StateChange,
    *,
    failed: Release,
    target: Release,
    reason: str,
    token: str,
    now: Now,
) -> int:
    """A rollback release to `target` takes the failed release's place; the failed release's
    `rolled_back` notice goes out before the rollback's own. Returns the rollback's number."""
    number = _add_rollback(
        decision, state, change, target=target, of=failed, reason=reason, token=token, now=now
    )
    change.add_outbox.insert(0, _notice(failed.release, NoticeKind.ROLLED_BACK, target.release))
    decision.count(DeployMetric.ROLLBACKS)
    return number


def start_failed(  # noqa: PLR0917 - one decision's facts
    state: AppStateRecord, release: Release, error: str, pending: Sequence[Release], token: str, now: Now
) -> Decision:
    """A start that failed for good (not a throttle): the release FAILED, pointer and group go
    back to the release it replaced (`realign`), and the app moves on."""
    change = StateChange(release.app, expect_owner=state.lock_owner, realign=True)
    decision = Decision(release.app, change)
    decision.explain("deploy could not start", release=release.release, error=error)
    decision.transition(
        Transition(release.release, ReleaseStatus.FAILED, f"could not start: {error}", _FROM_DEPLOYING)
    )
    back_to_replaced(change, release)
    failed_and_moved_on(decision, state, change, release, pending, token=token, now=now)
    return decision.count(Metric.DEPLOY_START_FAILED)


def hand_on(state: AppStateRecord, pending: Sequence[Release], token: str, now: Now) -> Decision:
    """The lock's release ended elsewhere (an operator cancelled it): the app moves on."""
    change = StateChange(state.app, expect_owner=state.lock_owner)
    decision = Decision(state.app, change)
    decision.explain("the lock's release has ended; handing the app on")
    _hand_on(decision, state, change, pending, last_good=state.desired, token=token, now=now)
    return decision


def free_stale_lock(state: AppStateRecord) -> Decision:
    """The lock names a release that does not exist: free it."""
    change = StateChange(state.app, expect_owner=state.lock_owner, clear_owner=True)
    decision = Decision(state.app, change)
    decision.explain("lock held by no release; freeing it", owner=state.lock_owner)
    return decision


def realigned(state: AppStateRecord) -> Decision:
    """Pointer and group are back on the desired release: the flag that asked for it goes."""
    # On condition that the lock is still free (a StateChange's default).
    decision = Decision(state.app, StateChange(state.app, realign=False))
    decision.explain("pointer and group put back", desired=state.desired)
    return decision


def cancel(  # noqa: PLR0917 - one decision's facts
    state: AppStateRecord,
    release: Release,
    target: Release | None,
    reason: str,
    token: str,
    now: Now,
) -> Decision:
    """An operator stops the release rolling out: CANCELLED, and a rollback release to `target`
    takes its place; without a target (or for a rollback, which is not rolled back again: that
    would walk back through the history) the lock is freed and pointer and group go back."""
    app = release.app
    change = StateChange(app, expect_owner=state.lock_owner)
    decision = Decision(app, change)
    decision.explain("deploy cancelled", release=release.release)
    decision.transition(Transition(release.release, ReleaseStatus.CANCELLED, reason, _FROM_DEPLOYING))
    if target is None or release.source is ReleaseSource.ROLLBACK:
        change.clear_owner = True
        change.realign = True
        back_to_replaced(change, release)
    else:
        number = _add_rollback(
            decision,
            state,
            change,
            target=target,
            of=release,
            token=token,
            now=now,
            reason=f"cancel of release {release.release}: back to release {target.release}",
        )
        decision.explain("deploy cancelled", target=target.release, rollback_release=number)
    return decision.count(DeployMetric.DEPLOY_CANCELLED)


def supersede(app: str, pending: Sequence[Release], newer_than: int) -> Decision | None:
    """PENDING releases older than `newer_than` will never start: SUPERSEDED, in one decision."""
    older = sorted((r for r in pending if r.release < newer_than), key=lambda r: r.release)
    if not older:
        return None
    decision = Decision(app)
    for release in older[:SUPERSEDE_PER_DECISION]:
        decision.transition(_superseded(release, newer_than))
    decision.explain(
        "pending releases superseded", by=newer_than, releases=[t.release for t in decision.transitions]
    )
    return decision.count(Metric.RELEASES_SUPERSEDED, len(decision.transitions))


# The task's last output lines a failed release's reason quotes, and the reason's bound.
TASK_REASON_LINES = 5
TASK_REASON_MAX = 900


def task_verdict(ending: TaskEnding) -> tuple[bool, int | None, str]:
    """Whether the release task succeeded, its exit code, and the reason in words."""
    summary = ending.summary
    code: int | None
    if summary is not None:
        code = summary.container_exit if summary.container_exit is not None else summary.exit_code
        if ending.status_details == "Success" and summary.exit_code == 0:
            return True, 0, "release task succeeded (exit code 0)"
        lines = " | ".join(line.strip() for line in summary.log_tail[-TASK_REASON_LINES:])
        reason = f"release task failed (exit code {code}): {summary.message}"
        if lines:
            reason += f"; last lines: {lines}"
        return False, code, reason[:TASK_REASON_MAX]
    if ending.status_details == "Success" and ending.response_code == 0:
        # An agent that printed no summary but exited 0 (its output was cut): the task ran.
        return True, 0, "release task succeeded (exit code 0)"
    code = ending.response_code
    return False, code, f"release task did not finish: SSM says {ending.status_details} (exit code {code})"


def task_ended(  # noqa: PLR0917 - one decision's facts
    state: AppStateRecord,
    release: Release,
    ending: TaskEnding,
    pending: Sequence[Release],
    token: str,
    now: Now,
) -> Decision:
    """The release task ended. Succeeded: recorded, and the rollout goes on under this decision's
    send claim (pointer, launch template, group, swap). Failed: the release FAILED with the task's
    exit code and last lines; the pointer, the launch template and the group never moved and no
    host switched, so nothing goes back: the app's desired release is again the one it replaced."""
    ok, code, reason = task_verdict(ending)
    app = release.app
    task = {"task_result": TASK_SUCCEEDED if ok else TASK_FAILED, "task_exit_code": code}
    if ok:
        decision = Decision(app)
        decision.explain("release task succeeded", release=release.release)
        return decision.transition(
            Transition(
                release.release,
                ReleaseStatus.DEPLOYING,
                f"{reason}; deploying",
                _FROM_DEPLOYING,
                {**task, "send_claim": token, "send_claimed_at": now.epoch},
            )
        )
    change = StateChange(app, expect_owner=state.lock_owner)
    decision = Decision(app, change)
    decision.explain("release task failed", release=release.release, exit_code=code)
    decision.transition(Transition(release.release, ReleaseStatus.FAILED, reason, _FROM_DEPLOYING, task))
    if release.deploy_started_at is not None:
        decision.duration = max((now.at - release.deploy_started_at).total_seconds(), 0.0)
    if blames_image(release):
        change.refuse = release.digest
    back_to_replaced(change, release)
    failed_and_moved_on(decision, state, change, release, pending, token=token, now=now)
    decision.ended = Ended(
        release.release, ReleaseStatus.FAILED, reason, markers.owned_release(app, change.owner)
    )
    return decision.count(DeployMetric.DEPLOY_FAILED)
