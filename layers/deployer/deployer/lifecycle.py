"""The deploy lifecycle: from SSM's status events to the release's fate (docs/lifecycle.md).

    invocation event  -> per-host outcome (agent summary)   + lease renewal while in progress
    command event     -> release SUCCEEDED | FAILED -> automatic rollback? -> next PENDING or unlock

The release's fate is decided from the command's own terminal status (and SSM's counts), never
from how many invocation events happened to arrive first, so duplicates and out-of-order
delivery give the same result. Every follow-up step is claimed with a conditional write on the
deploy lock (owner `<app>#<release>`), so a second delivery of the same event does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deployer.adapters.command_results import (
    CommandCounts,
    CommandResults,
    InvocationResult,
    InvocationTally,
)
from deployer.adapters.images import Images
from deployer.adapters.lifecycle_hooks import LifecycleHooks, LifecycleResult, ManagedInstances
from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand, TrackedCommands
from deployer.agent_contract import SERVING_OUTCOMES, AgentSummary, parse_summary
from deployer.errors import DeployerError, InvalidTransition, LockLost
from deployer.metrics_names import LifecycleMetric
from deployer.models.lifecycle_events import CommandInvocationStatusEvent, CommandStatusEvent, SsmStatus
from deployer.models.records import HostOutcome, Release, ReleaseSource, ReleaseStatus, utcnow
from deployer.notify import DeployNotice, HostResult, NoticeKind, Notifier, summarize_hosts
from deployer.observability import count, logger, metrics
from deployer.rollout import Deps, lock_owner, new_release, start_rollout, supersede_pending

if TYPE_CHECKING:
    from deployer.models.config import AppConfig

# Owner of the deploy lock between a failed release and the rollback release it starts.
ROLLBACK_CLAIM = "rollback-of:"


@dataclass
class LifecycleDeps:
    """The core's adapters plus the ones only the lifecycle needs."""

    core: Deps
    results: CommandResults
    images: Images
    hooks: LifecycleHooks
    instances: ManagedInstances
    tracked: TrackedCommands
    notifier: Notifier

    @classmethod
    def from_core(cls, core: Deps) -> LifecycleDeps:
        clients = core.clients
        return cls(
            core=core,
            results=CommandResults(clients.client("ssm")),
            images=Images(clients.client("ecr")),
            hooks=LifecycleHooks(clients.client("autoscaling")),
            instances=ManagedInstances(clients.client("ssm")),
            tracked=TrackedCommands(clients.client("dynamodb"), core.settings.host_outcomes_table),
            notifier=Notifier(core.settings.notification_topic_arn, lambda: clients.client("sns")),
        )


_wired: list[LifecycleDeps] = []


def wired() -> LifecycleDeps:
    """The process-wide lifecycle adapters, on top of the core's (`deployer.runtime`)."""
    from deployer import runtime  # noqa: PLC0415 - handlers only

    core = runtime.deps()
    if not _wired or _wired[0].core is not core:
        _wired[:] = [LifecycleDeps.from_core(core)]
    return _wired[0]


# --- decisions (pure) ----------------------------------------------------------------------


class Verdict(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def command_detail(status: SsmStatus, counts: CommandCounts | None) -> SsmStatus:
    """The command's terminal status in SSM's finer vocabulary.

    The EventBridge event carries the coarse `Status` (Success, Failed, TimedOut, Cancelled):
    an Incomplete command, or one whose hosts were terminated, also reads Failed there. ListCommands'
    StatusDetails says which; the event's status stands only when SSM has nothing terminal yet."""
    if counts is not None:
        detail = SsmStatus.parse(counts.status_details) or SsmStatus.parse(counts.status)
        if detail is not None and detail.terminal:
            return detail
    return status


def command_verdict(
    status: SsmStatus, counts: CommandCounts | None, tally: InvocationTally | None = None
) -> tuple[Verdict, str]:
    """The release's fate from the command's terminal status (table in docs/lifecycle.md).

    `tally` (the invocations by StatusDetails) decides every command that is not a plain Success:
    a release fails only when a host that ran it failed or timed out, when the command was
    cancelled, or when no host ran it at all. Hosts SSM never reached (Delivery Timed Out,
    Undeliverable: e.g. an instance scaled in mid-deploy) or never sent to (Terminated) say
    nothing about the release; the reconciler re-sends to them."""
    detail = command_detail(status, counts)
    if detail is SsmStatus.SUCCESS:
        return Verdict.SUCCEEDED, "every targeted host is live on the release"
    refused = {
        SsmStatus.RATE_EXCEEDED: "SSM refused the command (rate exceeded); no host ran it",
        SsmStatus.ACCESS_DENIED: "SSM was denied running the command",
        SsmStatus.CANCELLED: "the command was cancelled",
    }
    if detail in refused:
        return Verdict.FAILED, refused[detail]
    if tally is None:
        # Without SSM's per-host answer only the coarse status is left, and it cannot tell a
        # failed host from an unreachable one: fail safe.
        return Verdict.FAILED, _COARSE_REASONS.get(detail, f"the command ended {detail.value}")
    if tally.failed:
        return Verdict.FAILED, f"{tally.failed} host(s) failed or timed out running the release"
    if tally.cancelled:
        return Verdict.FAILED, f"the command was cancelled before {tally.cancelled} host(s) ran it"
    skipped = tally.unreached + tally.stopped
    if tally.succeeded == 0:
        return Verdict.FAILED, f"no host ran the release: {skipped} host(s) were not reached"
    if skipped:
        return (
            Verdict.SUCCEEDED,
            f"live on the {tally.succeeded} host(s) SSM reached; {skipped} not reached "
            "(undeliverable or delivery timed out) are left to the reconciler",
        )
    return Verdict.SUCCEEDED, "every host that ran the release is live on it"


_COARSE_REASONS = {
    SsmStatus.FAILED: "MaxErrors or more host(s) failed",
    SsmStatus.INCOMPLETE: "some host(s) did not succeed",
    SsmStatus.TIMED_OUT: "the command timed out on the fleet",
    SsmStatus.EXECUTION_TIMED_OUT: "the command timed out on the fleet",
    SsmStatus.DELIVERY_TIMED_OUT: "the command was not delivered to MaxErrors or more host(s)",
    SsmStatus.UNDELIVERABLE: "the command could not be delivered to the fleet",
    SsmStatus.TERMINATED: "the targeted instances were terminated",
}


# Invocation status -> failure class when the agent's summary cannot say more.
_INVOCATION_CLASS = {
    SsmStatus.TIMED_OUT: "timeout",
    SsmStatus.EXECUTION_TIMED_OUT: "timeout",
    SsmStatus.DELIVERY_TIMED_OUT: "unreached",
    SsmStatus.UNDELIVERABLE: "unreached",
    SsmStatus.TERMINATED: "unreached",
    SsmStatus.CANCELLED: "cancelled",
    SsmStatus.ACCESS_DENIED: "unknown",
    SsmStatus.RATE_EXCEEDED: "unreached",
}


def host_outcome(
    app: str, release: int, instance_id: str, status: SsmStatus, invocation: InvocationResult | None
) -> HostOutcome:
    """One host's outcome: the agent's summary when it printed one, else SSM's StatusDetails.

    The event's status is coarse (an Undeliverable or Terminated invocation reads Failed there);
    GetCommandInvocation's StatusDetails tells an unreached host from a failed one."""
    detail = SsmStatus.parse(invocation.status_details) if invocation else None
    if detail is not None and detail.terminal:
        status = detail
    summary: AgentSummary | None = parse_summary(invocation.stdout) if invocation else None
    if summary is not None:
        failure = None if summary.failure_class.value == "none" else summary.failure_class.value
        return HostOutcome(
            release_key=f"{app}#{release}",
            instance_id=instance_id,
            app=app,
            release=release,
            status=status.value,
            exit_code=summary.exit_code,
            failure_class=failure,
            message=summary.message,
            summary=summary.model_dump(mode="json"),
        )
    failure_class = None if status is SsmStatus.SUCCESS else _INVOCATION_CLASS.get(status, "unknown")
    message = {
        None: "SSM reports success; the agent printed no summary",
        "unreached": f"SSM could not run the command on this host ({status.value})",
        "timeout": "the swap did not finish before the command timeout",
        "cancelled": "the command was cancelled",
    }.get(failure_class, "the swap failed and the agent printed no readable summary")
    return HostOutcome(
        release_key=f"{app}#{release}",
        instance_id=instance_id,
        app=app,
        release=release,
        status=status.value,
        exit_code=invocation.response_code if invocation else None,
        failure_class=failure_class,
        message=message,
    )


def serving(outcome: HostOutcome) -> bool:
    """Whether the host serves the outcome's release (the agent's summary says live or already
    live, including a live release whose cleanup left a warning)."""
    if outcome.summary is not None:
        return outcome.summary.get("outcome") in SERVING_OUTCOMES
    return outcome.status == SsmStatus.SUCCESS.value


def _host_result(outcome: HostOutcome) -> HostResult:
    return HostResult(
        instance_id=outcome.instance_id,
        ok=serving(outcome),
        failure_class=outcome.failure_class or "none",
        message=outcome.message,
    )


# --- invocation events ---------------------------------------------------------------------

# Comments the control plane gives its swap commands: `deployer <app> release <n>` for a
# release's fleet command, `deployer launch|drift <app> release <n>` for single instances.
COMMENT_PREFIX = "deployer "
RELEASE_COMMENT = re.compile(r"^deployer [a-z][a-z0-9-]* release [0-9]+$")


class CommandNotRecordedYet(DeployerError):
    """A terminal event for one of our commands whose record is not readable yet; retry."""


def _unknown_command(ld: LifecycleDeps, command_id: str, status: SsmStatus) -> dict[str, Any]:
    """An event whose command has no release or tracked record.

    SSM can report before the command id is stored (it is written right after SendCommand
    returns) or before the command index catches up. A terminal event for a command that our
    comment marks as ours is raised, so Lambda retries it (then the dead-letter queue alarms);
    anything else is ignored."""
    if status.terminal and ld.results.comment(command_id).startswith(COMMENT_PREFIX):
        raise CommandNotRecordedYet(f"command {command_id} is ours but not recorded yet; retrying")
    logger.info("event for a command that is not ours", command_id=command_id, status=status.value)
    return {"action": "ignored", "reason": "unknown command"}


def on_invocation(ld: LifecycleDeps, event: CommandInvocationStatusEvent) -> dict[str, Any]:
    """Record one host's outcome (terminal statuses) or keep the deploy's lease alive."""
    detail = event.detail
    core = ld.core
    release = core.releases.by_command_id(detail.command_id)
    if release is None:
        tracked = ld.tracked.get(detail.command_id, detail.instance_id)
        if tracked is None:
            return _unknown_command(ld, detail.command_id, detail.status)
        return _on_tracked_invocation(ld, tracked, detail.status)
    _renew_lease(ld, release)
    if not detail.status.terminal:
        return {"action": "progress", "release": release.release, "status": detail.status.value}
    outcome = _record_outcome(
        ld,
        release.app,
        release.release,
        command_id=detail.command_id,
        instance_id=detail.instance_id,
        status=detail.status,
    )
    return {
        "action": "recorded",
        "release": release.release,
        "instance_id": detail.instance_id,
        "ok": serving(outcome),
        "failure_class": outcome.failure_class,
    }


def _record_outcome(
    ld: LifecycleDeps, app: str, release: int, *, command_id: str, instance_id: str, status: SsmStatus
) -> HostOutcome:
    invocation = ld.results.invocation(command_id, instance_id)
    outcome = host_outcome(app, release, instance_id, status, invocation)
    # Same event twice writes the same item: the record is keyed by release and instance.
    ld.core.host_outcomes.put(outcome)
    warning = (outcome.summary or {}).get("warning")
    if warning:
        # Live, but the old release was not stopped or images not pruned: the host serves and
        # the release is not failed for it; an operator should look at the host.
        count(LifecycleMetric.HOST_WARNINGS)
        logger.warning(
            "host live with a warning",
            app=app,
            release=release,
            instance_id=instance_id,
            warning=warning,
            detail=outcome.message,
        )
    if outcome.failure_class == "unreached":
        logger.info(
            "host not reached", app=app, release=release, instance_id=instance_id, status=outcome.status
        )
    elif not serving(outcome):
        count(LifecycleMetric.HOSTS_FAILED)
        logger.warning(
            "host failed",
            app=app,
            release=release,
            instance_id=instance_id,
            failure_class=outcome.failure_class,
            detail=outcome.message,
        )
    return outcome


def _renew_lease(ld: LifecycleDeps, release: Release) -> None:
    """Extend the deploy lock's lease while the fleet still reports progress for the release."""
    if release.status is not ReleaseStatus.DEPLOYING:
        return
    try:
        ld.core.state.renew(release.app, lock_owner(release), ld.core.settings.lock_lease_seconds)
    except LockLost:
        logger.warning(
            "deploy lock not held by the deploying release", app=release.app, release=release.release
        )


# --- command events --------------------------------------------------------------------------


def on_command(ld: LifecycleDeps, event: CommandStatusEvent) -> dict[str, Any]:
    """Decide the release's fate at the command's terminal status, then move the app on."""
    detail = event.detail
    release = ld.core.releases.by_command_id(detail.command_id)
    if release is None:
        if RELEASE_COMMENT.match(ld.results.comment(detail.command_id)):
            return _unknown_command(ld, detail.command_id, detail.status)
        # Launch and drift commands end with their invocations; others are not ours.
        logger.info("command event for a command that is not a release's", command_id=detail.command_id)
        return {"action": "ignored", "reason": "not a release command"}
    if not detail.status.terminal:
        _renew_lease(ld, release)
        return {"action": "progress", "release": release.release, "status": detail.status.value}
    return finish_release(ld, release, detail.status)


def finish_release(ld: LifecycleDeps, release: Release, status: SsmStatus) -> dict[str, Any]:
    """Apply a terminal command status to its release; safe to call again for the same command."""
    core = ld.core
    counts = ld.results.counts(release.command_id) if release.command_id else None
    tally = None
    if release.command_id and counts is not None and command_detail(status, counts) is not SsmStatus.SUCCESS:
        # Only a command that is not a plain Success needs the per-host StatusDetails.
        tally = ld.results.tally(release.command_id)
    verdict, reason = command_verdict(status, counts, tally)
    decided = False
    if release.status is ReleaseStatus.DEPLOYING:
        target = ReleaseStatus.SUCCEEDED if verdict is Verdict.SUCCEEDED else ReleaseStatus.FAILED
        hosts_ok, hosts_failed = _host_counts(status, counts, tally)
        try:
            # `decided` only for the delivery that made the change: the release read through
            # the command index may be behind a duplicate delivery's decision.
            release, decided = core.releases.transition(
                release.app,
                release.release,
                target,
                reason=reason,
                hosts_ok=hosts_ok,
                hosts_failed=hosts_failed,
            )
        except InvalidTransition as exc:
            release = exc.current or core.releases.get(release.app, release.release)
    result: dict[str, Any] = {
        "action": "finished",
        "release": release.release,
        "release_status": release.status.value,
        "reason": release.status_reason,
    }
    # The app's config only matters for a failure (auto-rollback) or a pending release to start.
    config = core.apps.get(release.app) if release.status is ReleaseStatus.FAILED else None
    # A rollback that fails is not rolled back again (that would walk back through the history)
    # and does not blame its image, which succeeded before: hosts or infrastructure are suspect.
    blamed = config is not None and release.source is not ReleaseSource.ROLLBACK
    auto = blamed and config is not None and config.auto_rollback
    notice = _report(ld, release, tally, announce=not auto) if decided else None
    if blamed and config is not None:
        # A digest that failed is never deployed automatically again (until an operator does).
        core.state.refuse_digest(release.app, release.digest)
        if config.auto_rollback:
            rolled = auto_rollback(ld, config, release, notice)
            if rolled is not None:
                result["rollback_release"] = rolled.release
                return result
    started = advance(ld, release.app, owner=lock_owner(release), config=config)
    if started is not None:
        result["next_release"] = started.release
    return result


def _host_counts(
    status: SsmStatus, counts: CommandCounts | None, tally: InvocationTally | None
) -> tuple[int | None, int | None]:
    """(hosts serving, hosts failed). CompletedCount also holds Undeliverable, Terminated and
    Cancelled invocations, so only a Success command's count is all serving hosts."""
    if tally is not None:
        return tally.succeeded, tally.failed
    if counts is not None and command_detail(status, counts) is SsmStatus.SUCCESS:
        return counts.completed_count, 0
    return None, None


def _report(
    ld: LifecycleDeps, release: Release, tally: InvocationTally | None, *, announce: bool
) -> DeployNotice:
    """Metrics, one log line and one notification for a release that just reached its fate.

    A failure that is about to be rolled back is announced by auto_rollback, which adds where
    it rolls back to; the notice is returned for that."""
    succeeded = release.status is ReleaseStatus.SUCCEEDED
    duration = None
    if release.deploy_started_at is not None:
        duration = max((utcnow() - release.deploy_started_at).total_seconds(), 0.0)
        metrics.add_metric(name=LifecycleMetric.DEPLOY_DURATION, unit="Seconds", value=duration)
    count(LifecycleMetric.DEPLOY_SUCCEEDED if succeeded else LifecycleMetric.DEPLOY_FAILED)
    outcomes = ld.core.host_outcomes.for_release(release.key) if not succeeded else []
    ok, failed, classes, top = summarize_hosts(_host_result(o) for o in outcomes)
    hosts_ok = release.hosts_ok if release.hosts_ok is not None else ok
    hosts_failed = release.hosts_failed if release.hosts_failed is not None else failed
    unreached = tally.unreached if tally else classes.get("unreached", 0)
    logger.info(
        "deploy finished",
        app=release.app,
        release=release.release,
        status=release.status.value,
        reason=release.status_reason,
        hosts_ok=hosts_ok,
        hosts_failed=hosts_failed,
        failure_classes=classes,
        duration=duration,
    )
    notice = DeployNotice(
        kind=NoticeKind.SUCCEEDED if succeeded else NoticeKind.FAILED,
        app=release.app,
        release=release.release,
        tag=release.tag,
        digest=release.digest,
        source=release.source.value,
        reason=release.status_reason,
        duration_seconds=duration,
        hosts_ok=hosts_ok,
        hosts_failed=hosts_failed,
        hosts_unreached=unreached,
        failure_classes=classes,
        top_failure=top or (None if succeeded else release.status_reason),
    )
    if announce:
        _publish(ld, notice)
    return notice


def _publish(ld: LifecycleDeps, notice: DeployNotice) -> None:
    try:
        ld.notifier.publish(notice)
    except DeployerError as exc:
        logger.error("notification not sent", app=notice.app, release=notice.release, error=str(exc))


def notify_started(ld: LifecycleDeps, release: Release) -> None:
    _publish(
        ld,
        DeployNotice(
            kind=NoticeKind.STARTED,
            app=release.app,
            release=release.release,
            tag=release.tag,
            digest=release.digest,
            source=release.source.value,
            reason=release.reason,
        ),
    )


# --- automatic rollback and the next pending release ------------------------------------------


def rollback_target(ld: LifecycleDeps, failed: Release) -> Release | None:
    """The last SUCCEEDED release before `failed` that runs a different image."""
    return ld.core.releases.find(
        failed.app,
        lambda r: r.release < failed.release and r.digest != failed.digest,
        status=ReleaseStatus.SUCCEEDED,
    )


def auto_rollback(
    ld: LifecycleDeps, config: AppConfig, failed: Release, notice: DeployNotice | None = None
) -> Release | None:
    """Roll the app back to its last SUCCEEDED release; None when there is nothing to do."""
    core = ld.core
    if failed.source is ReleaseSource.ROLLBACK:
        # Rolling a failed rollback back again would target the same release and loop forever
        # while a host keeps failing; stop here and let an operator decide.
        logger.warning("a rollback failed; not rolling back again", app=failed.app, release=failed.release)
        if notice is not None:
            _publish(ld, notice)
        return None
    target = rollback_target(ld, failed)
    if target is None:
        logger.warning("no SUCCEEDED release to roll back to", app=failed.app, release=failed.release)
        if notice is not None:
            _publish(ld, notice)
        return None
    claim = ROLLBACK_CLAIM + lock_owner(failed)
    try:
        # The claim: only one delivery of the terminal event moves the lock on from the release.
        core.state.transfer(failed.app, lock_owner(failed), claim, core.settings.lock_lease_seconds)
    except LockLost:
        logger.info("rollback already handled or lock taken over", app=failed.app, release=failed.release)
        return None
    reason = f"automatic rollback: release {failed.release} failed: {failed.status_reason}"
    rollback = new_release(
        core,
        config,
        image=target.image,
        digest=target.digest,
        tag=target.tag,
        source=ReleaseSource.ROLLBACK,
        reason=reason,
    )
    core.state.transfer(failed.app, claim, lock_owner(rollback), core.settings.lock_lease_seconds)
    try:
        core.releases.update_status(
            failed.app,
            failed.release,
            ReleaseStatus.ROLLED_BACK,
            reason=f"rolled back to release {target.release} (as release {rollback.release}): "
            f"{failed.status_reason}",
        )
    except InvalidTransition as exc:
        logger.warning("could not mark release rolled back", app=failed.app, error=str(exc))
    count(LifecycleMetric.ROLLBACKS)
    if notice is not None:
        _publish(
            ld, notice.model_copy(update={"kind": NoticeKind.ROLLED_BACK, "rolled_back_to": target.release})
        )
    try:
        started = start_rollout(core, config, rollback, ReleaseSource.ROLLBACK)
    except DeployerError as exc:
        logger.error("automatic rollback could not start", app=failed.app, error=str(exc))
        _release_lock(ld, failed.app, lock_owner(rollback))
        return None
    notify_started(ld, started)
    logger.info(
        "automatic rollback started",
        app=failed.app,
        failed=failed.release,
        target=target.release,
        release=started.release,
        command_id=started.command_id,
    )
    return started


def advance(ld: LifecycleDeps, app: str, owner: str, config: AppConfig | None = None) -> Release | None:
    """Hand the lock held by `owner` to the newest PENDING release and start it, or unlock.

    While the app is paused, pending releases wait and the lock is released."""
    core = ld.core
    pending = core.releases.pending(app)
    if pending and core.state.get(app).paused:
        pending = []
    if pending and config is None:
        config = core.apps.get(app)
    while pending and config is not None:
        newest = pending.pop()
        try:
            core.state.transfer(app, owner, lock_owner(newest), core.settings.lock_lease_seconds)
        except LockLost:
            logger.info("lock already handed on", app=app, owner=owner)
            return None
        owner = lock_owner(newest)
        supersede_pending(core, app, newer_than=newest.release)
        try:
            started = start_rollout(core, config, newest)
        except InvalidTransition:
            continue  # superseded concurrently; hand the lock to the next one
        except DeployerError as exc:
            logger.error("pending release could not start", app=app, release=newest.release, error=str(exc))
            break
        notify_started(ld, started)
        return started
    _release_lock(ld, app, owner)
    return None


def _release_lock(ld: LifecycleDeps, app: str, owner: str) -> None:
    try:
        ld.core.state.release(app, owner)
    except LockLost:
        logger.info("deploy lock already released or taken over", app=app, owner=owner)


# --- single-instance commands (launch, drift) ------------------------------------------------


def _on_tracked_invocation(ld: LifecycleDeps, tracked: TrackedCommand, status: SsmStatus) -> dict[str, Any]:
    from deployer import launch  # noqa: PLC0415 - launch imports this module

    if not status.terminal:
        if tracked.purpose is CommandPurpose.LAUNCH:
            launch.heartbeat(ld, tracked)
        return {"action": "progress", "instance_id": tracked.instance_id, "status": status.value}
    outcome = _record_outcome(
        ld,
        tracked.app,
        tracked.release,
        command_id=tracked.command_id,
        instance_id=tracked.instance_id,
        status=status,
    )
    if tracked.purpose is CommandPurpose.LAUNCH:
        return launch.on_swap_finished(ld, tracked, serving(outcome))
    return {
        "action": "recorded",
        "instance_id": tracked.instance_id,
        "release": tracked.release,
        "ok": serving(outcome),
        "purpose": tracked.purpose.value,
    }


__all__ = [
    "LifecycleDeps",
    "LifecycleResult",
    "Verdict",
    "advance",
    "auto_rollback",
    "command_detail",
    "command_verdict",
    "finish_release",
    "host_outcome",
    "on_command",
    "on_invocation",
    "serving",
]
