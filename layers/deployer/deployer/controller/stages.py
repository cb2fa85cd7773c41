"""Stages of a progressive rollout (docs/stages.md): which instances a stage sends to, and the
decisions that move a release through its stages. Nothing here reads or writes.

A staged release's stages before the last are each one swap command to chosen instances; the
pointer, the launch-template version and the group do not move, so an instance that launches
meanwhile boots the stable release. Each is sent with `keepStandby`: a host that takes it keeps
the stable release's container running, drained, so an abort is one rule switch back. The last
stage is the rollout as without stages (pointer, launch template, group, then the swap), sent to
every InService instance without `keepStandby`: the hosts that took an earlier stage answer
"already live" and remove their standby.

    stage_ended      a stage's command ended: BAKING until now + bake | FAILED + rollback
    bake_over        now >= the bake's end: the next stage | AWAITING_APPROVAL
    approved         an operator's `continue` while AWAITING_APPROVAL: the next stage

Each is conditioned on the stage and stage state it read (`Transition.expect`), so a decision
made from a stale read is refused, never applied twice.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from deployer import markers
from deployer.adapters.app_state import StateChange
from deployer.controller import decisions
from deployer.controller.types import Decision, Ended, Ending, Now, Transition
from deployer.errors import DeployerError
from deployer.markers import OutboxEntry
from deployer.metrics_names import DeployMetric
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, STAGE_RUNNING, Release, ReleaseStatus
from deployer.notify import NoticeKind
from deployer.verdicts import Verdict, blames_image, host_counts

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from deployer.adapters.app_state import AppStateRecord
    from deployer.models.config import Stage

_FROM_DEPLOYING = frozenset({ReleaseStatus.DEPLOYING})


def staged(stages: Sequence[Stage], release: Release) -> bool:
    """Whether `release` goes through stages: the app has them and the release is not a
    rollback (a rollback puts back a release the fleet ran: it skips them), unless the operator
    asked for a staged one (`deployer rollback --staged`)."""
    return bool(stages) and (release.rollback_of is None or release.staged_rollback)


def at_last_stage(stages: Sequence[Stage], release: Release) -> bool:
    """The release runs its last stage (the rollout as without stages). A release whose app
    lost stages meanwhile is at its last stage too."""
    return release.stage is not None and release.stage >= len(stages) - 1


def zone_order(instances: Mapping[str, str]) -> list[str]:
    """Instance ids (id -> Availability Zone) in the order stages take them: round-robin over
    the zones (sorted by name), each zone's instances sorted by id, so every invocation orders
    the same fleet the same way and a canary of n hosts covers min(n, zones) zones."""
    by_zone: dict[str, list[str]] = defaultdict(list)
    for instance, zone in instances.items():
        by_zone[zone].append(instance)
    queues = [sorted(by_zone[zone]) for zone in sorted(by_zone)]
    order: list[str] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def stage_targets(
    stages: Sequence[Stage], index: int, instances: Mapping[str, str], taken: Sequence[str]
) -> list[str]:
    """The instances stage `index` sends to: enough InService instances not taken by an earlier
    stage to bring the hosts on the release to the stage's count (a share of the InService
    fleet now, rounded up). The last stage takes every InService instance, those of earlier
    stages too: it carries no `keepStandby`, so their standby goes. Empty: the stage adds no
    host (a small fleet already has that many)."""
    if index >= len(stages) - 1:
        return zone_order(instances)
    order = [i for i in zone_order(instances) if i not in set(taken)]
    on_release = sum(1 for i in taken if i in instances)
    want = stages[index].resolve(len(instances)) - on_release
    return order[: max(want, 0)]


def _owe(release: Release, kind: NoticeKind) -> StateChange:
    """The stage notice a decision owes, written with it while the release holds the lock."""
    change = StateChange(release.app, expect_owner=markers.owner(release.app, release.release))
    change.add_outbox.append(OutboxEntry(release.release, kind.value, release.stage or 0).encode())
    return change


def _expect(release: Release, state: str) -> dict[str, object]:
    return {"stage": release.stage, "stage_state": state}


def _next_stage(release: Release, token: str, now: Now) -> dict[str, object]:
    """Fields that put `release` at its next stage, under this decision's send claim."""
    assert release.stage is not None
    return {
        "stage": release.stage + 1,
        "stage_state": STAGE_RUNNING,
        "stage_command_id": None,
        "bake_until": None,
        "send_claim": token,
        "send_claimed_at": now.epoch,
    }


def stage_ended(
    state: AppStateRecord,
    release: Release,
    stage: Stage,
    ending: Ending,
    *,
    target: Release | None,
    pending: Sequence[Release],
    token: str,
    now: Now,
) -> Decision:
    """A stage's command ended. Succeeded: the release bakes until now + the stage's bake.
    Failed: the release FAILED; with a rollback target, a rollback release to it (the one
    rollback path, at the rollback's own rate, skipping stages) puts back the hosts that took
    it; without one (a first deploy), the lock is freed and pointer and group, which never moved,
    stay where they are."""
    app = release.app
    if ending.verdict is Verdict.SUCCEEDED:
        decision = Decision(app, _owe(release, NoticeKind.STAGE_PASSED))
        decision.explain("stage succeeded; baking", release=release.release, stage=release.stage)
        return decision.transition(
            Transition(
                release.release,
                ReleaseStatus.DEPLOYING,
                f"stage {(release.stage or 0) + 1} succeeded; baking {stage.bake_seconds}s",
                _FROM_DEPLOYING,
                {
                    "stage_state": STAGE_BAKING,
                    "bake_started_at": now.epoch,
                    "bake_until": now.epoch + stage.bake_seconds,
                },
                expect=_expect(release, STAGE_RUNNING),
            )
        )
    hosts_ok, hosts_failed = host_counts(ending.status, ending.counts, ending.tally)
    return stage_failed(
        state,
        release,
        f"stage {(release.stage or 0) + 1} failed: {ending.reason}",
        blame=blames_image(release, ending.failure_classes),
        fields={"hosts_ok": hosts_ok, "hosts_failed": hosts_failed},
        target=target,
        pending=pending,
        token=token,
        now=now,
    )


def stage_failed(
    state: AppStateRecord,
    release: Release,
    reason: str,
    *,
    blame: bool,
    fields: dict[str, object] | None = None,
    target: Release | None,
    pending: Sequence[Release],
    token: str,
    now: Now,
) -> Decision:
    """A staged release failed at a stage (its command failed, or the stage could not be sent
    for good): FAILED; with a rollback target, a rollback release to it puts back the hosts that
    took it (the one rollback path, skipping stages); without one (a first deploy) the lock is
    freed and the app's desired release is again the one it replaced."""
    app = release.app
    change = StateChange(app, expect_owner=state.lock_owner)
    decision = Decision(app, change)
    decision.explain("stage failed", release=release.release, stage=release.stage, reason=reason)
    decision.transition(
        Transition(
            release.release,
            ReleaseStatus.FAILED,
            reason,
            _FROM_DEPLOYING,
            dict(fields or {}),
            expect={"stage": release.stage, "stage_state": release.stage_state},
        )
    )
    if blame:
        change.refuse = release.digest
    if release.deploy_started_at is not None:
        decision.duration = max((now.at - release.deploy_started_at).total_seconds(), 0.0)
    decision.count(DeployMetric.DEPLOY_FAILED)
    rollback = _roll_back(decision, state, change, release, target, pending, reason, token, now)
    followed = rollback if rollback is not None else markers.owned_release(app, change.owner)
    decision.ended = Ended(
        release.release, ReleaseStatus.FAILED, reason, followed, rollback=rollback is not None
    )
    return decision


def stage_skipped(stages: Sequence[Stage], release: Release, now: Now) -> Decision:
    """The stage adds no host (a small fleet already has that many on the release): it is
    recorded as sent to none, and bakes as any other."""
    index = release.stage or 0
    decision = Decision(release.app)
    decision.explain("stage adds no host; baking", release=release.release, stage=index)
    return decision.transition(
        Transition(
            release.release,
            ReleaseStatus.DEPLOYING,
            f"stage {index + 1} adds no host; baking {stages[index].bake_seconds}s",
            _FROM_DEPLOYING,
            {
                "stage": index,
                "stage_state": STAGE_BAKING,
                "bake_started_at": now.epoch,
                "bake_until": now.epoch + stages[index].bake_seconds,
                "stage_hosts": list(release.stage_hosts or []),
            },
            expect={"stage": release.stage, "stage_state": release.stage_state, "stage_command_id": None},
        )
    )


def _roll_back(  # noqa: PLR0917 - the failed stage's facts
    decision: Decision,
    state: AppStateRecord,
    change: StateChange,
    release: Release,
    target: Release | None,
    pending: Sequence[Release],
    reason: str,
    token: str,
    now: Now,
) -> int | None:
    if target is not None:
        return decisions.roll_back_failed(
            decision,
            state,
            change,
            failed=release,
            target=target,
            reason=f"automatic rollback: release {release.release} {reason}",
            token=token,
            now=now,
        )
    decisions.back_to_replaced(change, release)
    decisions.failed_and_moved_on(decision, state, change, release, pending, token=token, now=now)
    return None


def bake_over(stages: Sequence[Stage], release: Release, token: str, now: Now) -> Decision | None:
    """The bake has ended (now >= its end; whichever trigger comes first, at the latest the
    reconciler's tick): the next stage, or AWAITING_APPROVAL when the stage asks for it. None
    while it bakes."""
    if release.stage_state != STAGE_BAKING or release.bake_until is None or now.epoch < release.bake_until:
        return None
    assert release.stage is not None
    decision = Decision(release.app)
    label = release.stage + 1
    if release.stage < len(stages) and stages[release.stage].approve:
        decision.change = _owe(release, NoticeKind.STAGE_AWAITING)
        decision.explain("bake over; awaiting approval", release=release.release, stage=release.stage)
        return decision.transition(
            Transition(
                release.release,
                ReleaseStatus.DEPLOYING,
                f"stage {label} baked; awaiting approval (deployer continue {release.app})",
                _FROM_DEPLOYING,
                {"stage_state": STAGE_AWAITING, "bake_until": None},
                expect=_expect(release, STAGE_BAKING),
            )
        )
    decision.explain("bake over; next stage", release=release.release, stage=release.stage + 1)
    return decision.transition(
        Transition(
            release.release,
            ReleaseStatus.DEPLOYING,
            f"stage {label} baked; stage {label + 1} starting",
            _FROM_DEPLOYING,
            _next_stage(release, token, now),
            expect=_expect(release, STAGE_BAKING),
        )
    )


def approved(release: Release, token: str, now: Now) -> Decision:
    """An operator's `continue`: a release AWAITING_APPROVAL goes on to its next stage.
    DeployerError (nothing changes) when it is not waiting for one."""
    if release.status is not ReleaseStatus.DEPLOYING or release.stage_state != STAGE_AWAITING:
        raise DeployerError(
            f"{release.app} release {release.release} is not awaiting approval "
            f"({release.status.value}, stage state {release.stage_state or 'none'})"
        )
    assert release.stage is not None
    decision = Decision(release.app)
    decision.explain("stage approved", release=release.release, stage=release.stage + 1)
    return decision.transition(
        Transition(
            release.release,
            ReleaseStatus.DEPLOYING,
            f"stage {release.stage + 1} approved; stage {release.stage + 2} starting",
            _FROM_DEPLOYING,
            _next_stage(release, token, now),
            expect=_expect(release, STAGE_AWAITING),
        )
    )


def stage_view(release: Release, count: int, now: int) -> dict[str, object]:
    """Where a staged release is, for `deployer status` and `wait`: stage n of m (from 1), the
    hosts that took it so far, its state, the bake's seconds left."""
    assert release.stage is not None
    return {
        "stage": release.stage + 1,
        "stages": max(count, release.stage + 1),
        "state": release.stage_state,
        "hosts": list(release.stage_hosts or []),
        "bake_seconds_left": None if release.bake_until is None else max(release.bake_until - now, 0),
    }
