"""`converge(app)`: read the facts, decide, commit, act; round after round, until nothing moves.

    lock held by no release                             -> free_stale_lock
    lock held by a DEPLOYING release without a command  -> rollout.drive; start_failed if it cannot
      ... whose task command is out, not yet decided    -> at the task's end, `task_ended`
      ... staged, before its last stage                 -> send the stage; at its end `stage_ended`;
                                                           while it bakes, canary analysis
                                                           (`analysis.checked`: a fail fails it);
                                                           `bake_over` once now >= bake_until
                                                           (alarm gate before each stage is sent
                                                           and while baking; a tick kept pending)
    lock held by a DEPLOYING release with a command     -> SSM's status; at its end, `end`
    lock held by a PENDING release                      -> start_pending
    lock held by a release that has ended               -> hand_on
    lock free, `realign` set                            -> rollout.realign, then realigned
    lock free, PENDING releases, not paused             -> start_pending
    then                                                -> publish the notices owed (outbox)

Every trigger calls it: a push, an SSM status event, an operator request, the launch hook's
follow-up, the reconciler's tick, and any redelivery after a crash. `commit` is the one place a
decision is written; nothing is decided twice, because each decision is conditioned on what it
read, and a command is sent only under a claim on its release.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deployer import markers
from deployer.adapters.transactions import Refused, Transaction
from deployer.controller import analysis, decisions, facts, rollout, stages, watch
from deployer.controller.outbox import drain_outbox
from deployer.controller.types import Decision, Now, Report
from deployer.metrics_names import DeployMetric
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, Release, ReleaseStatus, utcnow
from deployer.observability import count, logger, metrics
from deployer.verdicts import Verdict, rolls_back_automatically

if TYPE_CHECKING:
    from deployer.adapters.app_state import AppStateRecord
    from deployer.models.config import AppConfig
    from deployer.models.ssm_status import SsmStatus
    from deployer.wiring import Adapters

# Decisions per converge call; each round reads the state again. A push-start-finish-handoff
# chain needs four; more means the state keeps moving under us, and the next trigger goes on.
MAX_ROUNDS = 8


def new_token() -> str:
    """Identifies one invocation's claims."""
    return uuid.uuid4().hex


def now(ad: Adapters) -> Now:
    return Now(ad.state.now(), utcnow())


def transaction(ad: Adapters, decision: Decision) -> Transaction:
    """The decision as DynamoDB transaction items, each labelled for the log and for `Refused`."""
    app = decision.app
    tx = Transaction()
    if decision.admission is not None:
        marker, number = decision.admission
        tx.add("admission", ad.admissions.create_item(marker, app, number))
    for release in decision.creates:
        tx.add(f"create {release.release}", ad.releases.create_item(release))
    for write in decision.transitions:
        tx.add(
            write.label,
            ad.releases.transition_item(
                app,
                write.release,
                write.status,
                write.reason,
                allowed_from=write.allowed_from,
                expect=write.expect,
                **write.fields,
            ),
        )
    if decision.change is not None:
        tx.add("state", ad.state.change_item(decision.change))
    return tx


def commit(ad: Adapters, decision: Decision, what: str | None = None) -> None:
    """Write a decision, all or nothing (Refused: its conditions no longer hold), then count it.
    `what`: the decision in an error's words (default: "recording a decision for <app>")."""
    transaction(ad, decision).commit(ad.dynamodb, what or f"recording a decision for {decision.app}")
    logger.info(decision.note or "decision recorded", app=decision.app, **decision.context)
    for metric, value in decision.counts:
        count(metric, value)
    if decision.duration is not None:
        metrics.add_metric(name=DeployMetric.DEPLOY_DURATION, unit="Seconds", value=decision.duration)


def _decide(ad: Adapters, report: Report, decision: Decision | None) -> bool:
    """Commit a decision; one that raced another is simply made again from a fresh read."""
    if decision is None:
        return False
    try:
        commit(ad, decision)
    except Refused as refused:
        report.note("decision overtaken; reading again", refused=sorted(refused.labels))
        return False
    report.steps.append(decision.note)
    return True


def _decided(ad: Adapters, report: Report, decision: Decision) -> bool:
    """Commit a decision; either way the next round reads the state again."""
    _decide(ad, report, decision)
    return True


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


@dataclass
class _Round:
    """One round's context: what the caller passed and what this call found so far."""

    ad: Adapters
    cfg: _Config
    report: Report
    token: str
    hint: tuple[str, SsmStatus] | None


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
    times, concurrently. `hint`: a terminal status an SSM event reported for a command.
    `token`: the caller's claims (a start it decided). `known`: the state and the lock's release
    exactly as the caller's own decision wrote them (spares the first round's reads)."""
    ctx = _Round(ad, _Config(ad, app, config), Report(app), token or new_token(), hint)
    for _ in range(MAX_ROUNDS):
        state, release = known or _read(ad, app)
        known = None
        ctx.report.state = state
        if not _step(ctx, state, release):
            break
    else:
        ctx.report.note("still moving after the most rounds one call makes; the next trigger goes on")
    last = ctx.report.state
    if last is not None and last.outbox:
        drain_outbox(ad, app, last.outbox)
    return ctx.report


def _read(ad: Adapters, app: str) -> tuple[AppStateRecord, Release | None]:
    """The app's state and the release its lock names."""
    state = ad.state.get(app)
    number = markers.owned_release(app, state.lock_owner)
    return state, ad.releases.get_or_none(app, number) if number else None


def _step(ctx: _Round, state: AppStateRecord, release: Release | None) -> bool:
    """One round; True when the state moved and the next round should read it again."""
    ad, app = ctx.ad, state.app
    if state.lock_owner is None:
        if state.realign:
            desired = ad.releases.get_or_none(app, state.desired) if state.desired else None
            rollout.realign(ad, ctx.cfg.get(), desired)
            return _decided(ad, ctx.report, decisions.realigned(state))
        if state.paused:
            return False
        started = decisions.start_pending(state, ad.releases.pending(app), ctx.token, now(ad))
        return started is not None and _decided(ad, ctx.report, started)
    if release is None:
        return _decided(ad, ctx.report, decisions.free_stale_lock(state))
    ctx.report.release = release.release
    if release.status is ReleaseStatus.PENDING:
        started = decisions.start_pending(state, [release], ctx.token, now(ad))
        return started is not None and _decided(ad, ctx.report, started)
    if release.status is not ReleaseStatus.DEPLOYING:
        pending = ad.releases.pending(app)
        return _decided(ad, ctx.report, decisions.hand_on(state, pending, ctx.token, now(ad)))
    if release.command_id is None:
        return _start(ctx, state, release)
    return _finish(ctx, state, release)


def _start(ctx: _Round, state: AppStateRecord, release: Release) -> bool:
    ad, report = ctx.ad, ctx.report
    if release.task_command_id is not None and release.task_result is None:
        return _task(ctx, state, release)
    if not rollout.runs_task(ctx.cfg.get(), release):
        plan = ctx.cfg.get().rollout.stages
        if stages.staged(plan, release) and not stages.at_last_stage(plan, release):
            return _stage(ctx, state, release)
        if stages.staged(plan, release) and release.stage is not None:
            blocked = watch.alarm_block(ad, ctx.cfg.get(), release, now(ad))  # the last stage's boundary
            if blocked is not None:
                return _blocked(ctx, state, release, blocked)
    outcome = rollout.drive(ad, ctx.cfg.get(), release, ctx.token)
    if isinstance(outcome, rollout.Busy):
        report.note("another invocation is starting this release", release=release.release)
        return False
    if isinstance(outcome, rollout.TaskSent):
        report.note(
            "release task started",
            release=release.release,
            command_id=outcome.command_id,
            instance_id=outcome.instance_id,
        )
        return False
    if isinstance(outcome, rollout.CannotStart):
        if release.stage_hosts:
            return _stage_failed(ctx, state, release, f"could not start: {outcome.error}")
        pending = ad.releases.pending(state.app)
        return _decided(
            ad, report, decisions.start_failed(state, release, outcome.error, pending, ctx.token, now(ad))
        )
    report.command_id = outcome.command_id
    report.note(
        "deploy started",
        release=release.release,
        digest=release.digest,
        source=release.source.value,
        command_id=outcome.command_id,
        launch_template_version=outcome.launch_template_version,
    )
    return False


def _stage(ctx: _Round, state: AppStateRecord, release: Release) -> bool:
    """A staged release before its last stage: send the stage, then at its command's end bake,
    then (approved when asked) the next stage (controller.stages)."""
    ad, report, config = ctx.ad, ctx.report, ctx.cfg.get()
    plan = config.rollout.stages
    index = release.stage or 0
    if release.stage_state == STAGE_BAKING:
        if _analysis_gate(ctx, state, release):
            return True
        blocked = watch.alarm_block(ad, config, release, now(ad))
        if blocked is not None:
            return _stage_failed(ctx, state, release, blocked)
        decision = stages.bake_over(plan, release, ctx.token, now(ad))
        if decision is None:
            watch.ensure_tick(ad, config, release, now(ad))
            report.note("baking", release=release.release, stage=index, until=release.bake_until)
            return False
        return _decided(ad, report, decision)
    if release.stage_state == STAGE_AWAITING:
        report.note("awaiting approval", release=release.release, stage=index)
        return False
    if release.stage_command_id is None:
        blocked = watch.alarm_block(ad, config, release, now(ad))  # the stage's boundary
        if blocked is not None:
            return _blocked(ctx, state, release, blocked)
        outcome = rollout.send_stage(ad, config, release, ctx.token)
        if isinstance(outcome, rollout.Busy):
            report.note("another invocation is sending this stage", release=release.release)
            return False
        if isinstance(outcome, rollout.CannotStart):
            if release.stage_hosts:
                return _stage_failed(
                    ctx, state, release, f"stage {index + 1} could not start: {outcome.error}"
                )
            pending = ad.releases.pending(state.app)
            decision = decisions.start_failed(state, release, outcome.error, pending, ctx.token, now(ad))
            return _decided(ad, report, decision)
        if outcome.command_id is None:
            return _decided(ad, report, stages.stage_skipped(plan, release, now(ad)))
        report.command_id = outcome.command_id
        report.note("stage started", release=release.release, stage=index, command_id=outcome.command_id)
        return False
    ending = facts.ending(ad, release, ctx.hint, release.stage_command_id)
    if ending is None:
        report.note(
            "stage running", release=release.release, stage=index, command_id=release.stage_command_id
        )
        return False
    target = None
    if ending.verdict is not Verdict.SUCCEEDED:
        target = facts.rollback_target(ad, config, release)
    decision = stages.stage_ended(
        state,
        release,
        plan[min(index, len(plan) - 1)],
        ending,
        target=target,
        pending=ad.releases.pending(state.app) if target is None else [],
        token=ctx.token,
        now=now(ad),
    )
    if _decide(ad, report, decision) and decision.ended is not None:
        report.ended = decision.ended
    return True


def _analysis_gate(ctx: _Round, state: AppStateRecord, release: Release) -> bool:
    """Canary analysis of a baking stage (controller/analysis.py), on every converge: the
    figures over the bake so far, the check recorded, a fail decided. True when the release
    failed (the next round reads it again); a pass or an inconclusive check lets the bake go
    on, and at its end the last check has decided."""
    ad, cfg = ctx.ad, ctx.cfg.get()
    at = now(ad)
    if not analysis.applies(cfg.rollout.analysis, release, at.epoch):
        return False
    assert release.bake_started_at is not None
    assert release.replaces is not None
    span = analysis.window(release.bake_started_at, release.bake_until, at.epoch)
    figures = ad.proxy_metrics.figures(release.app, release.release, release.replaces, *span)
    verdict = analysis.judge(cfg.rollout.analysis, *figures)
    target = facts.rollback_target(ad, cfg, release) if verdict.failed else None
    pending = ad.releases.pending(state.app) if verdict.failed and target is None else []
    decision = analysis.checked(
        state, release, verdict, figures, span, target=target, pending=pending, token=ctx.token, now=at
    )
    if decision is None or not _decide(ad, ctx.report, decision):
        return verdict.failed
    if decision.ended is not None:
        ctx.report.ended = decision.ended
    return verdict.failed


def _stage_failed(ctx: _Round, state: AppStateRecord, release: Release, reason: str) -> bool:
    """A staged release that hosts took cannot go on: FAILED, and those hosts roll back."""
    ad = ctx.ad
    target = facts.rollback_target(ad, ctx.cfg.get(), release)
    decision = stages.stage_failed(
        state,
        release,
        reason,
        blame=False,
        target=target,
        pending=ad.releases.pending(state.app) if target is None else [],
        token=ctx.token,
        now=now(ad),
    )
    if _decide(ad, ctx.report, decision) and decision.ended is not None:
        ctx.report.ended = decision.ended
    return True


def _blocked(ctx: _Round, state: AppStateRecord, release: Release, reason: str) -> bool:
    """An alarm stops a stage before it is sent: the hosts that took earlier stages roll back;
    with none yet, the release fails as a start that could not begin."""
    if release.stage_hosts:
        return _stage_failed(ctx, state, release, reason)
    pending = ctx.ad.releases.pending(state.app)
    decision = decisions.start_failed(state, release, reason, pending, ctx.token, now(ctx.ad))
    return _decided(ctx.ad, ctx.report, decision)


def _task(ctx: _Round, state: AppStateRecord, release: Release) -> bool:
    """The release's task command is out: at its end, record how it went (task_ended)."""
    ad, report = ctx.ad, ctx.report
    ending = facts.task_ending(ad, release)
    if ending is None:
        report.note("release task running", release=release.release, command_id=release.task_command_id)
        return False
    ok = decisions.task_verdict(ending)[0]
    pending = [] if ok else ad.releases.pending(state.app)
    decision = decisions.task_ended(state, release, ending, pending, ctx.token, now(ad))
    if _decide(ad, report, decision) and decision.ended is not None:
        report.ended = decision.ended
    return True


def _finish(ctx: _Round, state: AppStateRecord, release: Release) -> bool:
    """The release's command is out: at its end, decide the release's verdict and what follows."""
    ad, report = ctx.ad, ctx.report
    report.command_id = release.command_id
    ending = facts.ending(ad, release, ctx.hint)
    if ending is None:
        report.note("rolling out", release=release.release, command_id=release.command_id)
        return False
    ok = ending.verdict is Verdict.SUCCEEDED
    # The app's config matters only to a failure (a success reads nothing more).
    auto_rollback = not ok and ctx.cfg.get().auto_rollback
    target = None
    if rolls_back_automatically(release, auto_rollback):
        target = facts.rollback_target(ad, ctx.cfg.get(), release)
    rolled_back = None
    if ok and release.rollback_of is not None:
        rolled_back = ad.releases.get_or_none(release.app, release.rollback_of)
    decision = decisions.end(
        state,
        release,
        ending,
        auto_rollback=auto_rollback,
        pending=ad.releases.pending(state.app),
        target=target,
        rolled_back=rolled_back,
        token=ctx.token,
        now=now(ad),
    )
    if not _decide(ad, report, decision):
        return True
    report.ended = decision.ended
    change = decision.change
    assert change is not None
    if change.clear_owner and not change.realign:
        # Ended and nothing follows: the state is what this decision wrote.
        report.state = change.applied_to(state)
        return False
    return True
