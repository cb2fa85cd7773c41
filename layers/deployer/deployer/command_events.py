"""SSM's status events: per-host outcomes, and the controller at each release command's end.

    invocation event (terminal)  -> the host's outcome (agent summary, else StatusDetails);
                                    a launch swap's end also lets the instance in or not
    command event (terminal)     -> converge(app): the controller reads SSM and decides
    task command (terminal)      -> converge(app): the controller records the release task's end
                                    (its invocation event records nothing: the release's per-host
                                    outcomes are its swap's)

The release's fate is decided from the command's terminal status and SSM's per-host counts,
never from how many invocation events happened to arrive first, so duplicates and out-of-order
delivery give the same result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer import controller, launch, markers
from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand
from deployer.errors import DeployerError
from deployer.metrics_names import DeployMetric
from deployer.models.lifecycle_events import CommandInvocationStatusEvent, CommandStatusEvent
from deployer.models.records import HostOutcome, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.observability import count, logger
from deployer.verdicts import host_outcome, serving

if TYPE_CHECKING:
    from deployer.wiring import Adapters


class CommandNotRecordedYet(DeployerError):
    """A terminal event for one of our commands whose record is not readable yet; retry."""


def _unknown_command(ad: Adapters, command_id: str, status: SsmStatus) -> dict[str, Any]:
    """An event whose command has no release or tracked record.

    SSM can report before the command id is stored (it is written right after SendCommand
    returns) or before the command index catches up. A terminal event for a command that our
    comment marks as ours is raised, so Lambda retries it (then the dead-letter queue alarms);
    anything else is ignored."""
    if status.terminal and markers.is_ours(ad.results.comment(command_id)):
        raise CommandNotRecordedYet(f"command {command_id} is ours but not recorded yet; retrying")
    logger.info("event for a command that is not ours", command_id=command_id, status=status.value)
    return {"action": "ignored", "reason": "unknown command"}


def on_invocation(ad: Adapters, event: CommandInvocationStatusEvent) -> dict[str, Any]:
    """Record one host's outcome at its terminal status."""
    detail = event.detail
    release = ad.releases.by_command_id(detail.command_id)
    if release is None:
        tracked = ad.tracked.get(detail.command_id, detail.instance_id)
        if tracked is None:
            comment = ad.results.comment(detail.command_id)
            stage = markers.parse_stage_comment(comment)
            if stage is not None:
                return _on_stage_invocation(ad, stage, detail.command_id, detail.instance_id, detail.status)
            if markers.parse_task_comment(comment):
                return {
                    "action": "ignored",
                    "reason": "a release task's invocation (its command event decides)",
                }
            return _unknown_command(ad, detail.command_id, detail.status)
        return _on_tracked_invocation(ad, tracked, detail.status)
    if not detail.status.terminal:
        return {"action": "progress", "release": release.release, "status": detail.status.value}
    outcome = record_outcome(
        ad,
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


def record_outcome(
    ad: Adapters, app: str, release: int, *, command_id: str, instance_id: str, status: SsmStatus
) -> HostOutcome:
    invocation = ad.results.invocation(command_id, instance_id)
    outcome = host_outcome(app, release, instance_id, status, invocation)
    # Same event twice writes the same item: the record is keyed by release and instance.
    ad.host_outcomes.put(outcome)
    warning = (outcome.summary or {}).get("warning")
    if warning:
        # Live, but the old release was not stopped or images not pruned: the host serves and
        # the release is not failed for it; an operator should look at the host.
        count(DeployMetric.HOST_WARNINGS)
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
        count(DeployMetric.HOSTS_FAILED)
        logger.warning(
            "host failed",
            app=app,
            release=release,
            instance_id=instance_id,
            failure_class=outcome.failure_class,
            detail=outcome.message,
        )
    return outcome


def on_command(ad: Adapters, event: CommandStatusEvent) -> dict[str, Any]:
    """At a release command's terminal status, the controller decides and moves the app on."""
    detail = event.detail
    release = ad.releases.by_command_id(detail.command_id)
    if release is None:
        comment = ad.results.comment(detail.command_id)
        task = markers.parse_task_comment(comment)
        if task is not None:
            return _on_task_command(ad, task, detail.command_id, detail.status)
        stage = markers.parse_stage_comment(comment)
        if stage is not None:
            return _on_stage_command(ad, stage, detail.command_id, detail.status)
        if markers.parse_release_comment(comment):
            return _unknown_command(ad, detail.command_id, detail.status)
        # Launch and drift commands end with their invocations; others are not ours.
        logger.info("command event for a command that is not a release's", command_id=detail.command_id)
        return {"action": "ignored", "reason": "not a release command"}
    if not detail.status.terminal:
        return {"action": "progress", "release": release.release, "status": detail.status.value}
    report = controller.converge(ad, release.app, hint=(detail.command_id, detail.status))
    ended = report.ended if report.ended is not None and report.ended.release == release.release else None
    if ended is None:
        # Decided by an earlier delivery (or still running): report the record as it stands.
        after = ad.releases.get(release.app, release.release)
        return {
            "action": "finished",
            "release": release.release,
            "release_status": after.status.value,
            "reason": after.status_reason,
            "steps": report.steps,
        }
    # Only the delivery that decided names what followed.
    result: dict[str, Any] = {
        "action": "finished",
        "release": release.release,
        "release_status": ended.status.value,
        "reason": ended.reason,
        "steps": report.steps,
    }
    if ended.followed_by is not None:
        result["rollback_release" if ended.rollback else "next_release"] = ended.followed_by
    return result


def _on_stage_invocation(
    ad: Adapters, stage: tuple[str, int], command_id: str, instance_id: str, status: SsmStatus
) -> dict[str, Any]:
    """One host's outcome of a stage's command, recorded under its release as a swap's is."""
    app, number = stage
    if not status.terminal:
        return {"action": "progress", "release": number, "status": status.value, "stage": True}
    outcome = record_outcome(ad, app, number, command_id=command_id, instance_id=instance_id, status=status)
    return {
        "action": "recorded",
        "release": number,
        "instance_id": instance_id,
        "ok": serving(outcome),
        "failure_class": outcome.failure_class,
        "stage": True,
    }


def _on_stage_command(
    ad: Adapters, stage: tuple[str, int], command_id: str, status: SsmStatus
) -> dict[str, Any]:
    """A stage's command event: at its end the controller decides the stage (bake or fail)."""
    app, number = stage
    if not status.terminal:
        return {"action": "progress", "release": number, "status": status.value, "stage": True}
    report = controller.converge(ad, app, hint=(command_id, status))
    after = ad.releases.get(app, number)
    return {
        "action": "stage_finished",
        "release": number,
        "release_status": after.status.value,
        "stage": after.stage,
        "stage_state": after.stage_state,
        "reason": after.status_reason,
        "steps": report.steps,
    }


def _on_task_command(
    ad: Adapters, task: tuple[str, int], command_id: str, status: SsmStatus
) -> dict[str, Any]:
    """A release task's command event: at its end the controller records how the task went and
    moves the release on (or fails it)."""
    app, number = task
    release = ad.releases.get_or_none(app, number)
    if release is None or not status.terminal:
        return {"action": "progress", "release": number, "status": status.value, "task": True}
    if release.task_command_id is None and release.status is ReleaseStatus.DEPLOYING:
        # Sent, but the sender has not recorded it yet: retry (the reconciler also carries on).
        raise CommandNotRecordedYet(
            f"task command {command_id} of {app} release {number} is not recorded yet"
        )
    report = controller.converge(ad, app, hint=(command_id, status))
    after = ad.releases.get(app, number)
    return {
        "action": "task_finished",
        "release": number,
        "release_status": after.status.value,
        "task_result": after.task_result,
        "task_exit_code": after.task_exit_code,
        "reason": after.status_reason,
        "steps": report.steps,
    }


def _on_tracked_invocation(ad: Adapters, tracked: TrackedCommand, status: SsmStatus) -> dict[str, Any]:
    if not status.terminal:
        if tracked.purpose is CommandPurpose.LAUNCH:
            launch.heartbeat(ad, tracked)
        return {"action": "progress", "instance_id": tracked.instance_id, "status": status.value}
    outcome = record_outcome(
        ad,
        tracked.app,
        tracked.release,
        command_id=tracked.command_id,
        instance_id=tracked.instance_id,
        status=status,
    )
    if tracked.purpose is CommandPurpose.LAUNCH:
        return launch.on_swap_finished(ad, tracked, serving(outcome))
    return {
        "action": "recorded",
        "instance_id": tracked.instance_id,
        "release": tracked.release,
        "ok": serving(outcome),
        "purpose": tracked.purpose.value,
    }
