"""The reconciler (scheduled): per app, compare what should run with what does, and repair.

Compared, per app (docs/lifecycle.md, "Reconciler"):
- the newest image in ECR that passes the tag filter vs the releases: a digest no release has
  ever recorded is a missed push, deployed through the normal path;
- the pointer's release vs the group's launch-template version: the group is put back;
- the pointer's release vs each InService host's last reported outcome for it: hosts without a
  serving outcome get the swap again.
A deploy in progress (the lock held under an unexpired lease) means hands off. A DEPLOYING
release whose lease expired lost its terminal event: its command's status is read from SSM and
applied as on-command-status would have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand
from deployer.builders import swap_parameters
from deployer.errors import DeployerError
from deployer.lifecycle import LifecycleDeps, finish_release, notify_started, serving
from deployer.metrics_names import LifecycleMetric
from deployer.models.lifecycle_events import SsmStatus
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.observability import count, logger
from deployer.rollout import image_reference, lock_owner, new_release, start_rollout

if TYPE_CHECKING:
    from deployer.models.config import AppConfig

BATCH = 50  # SSM accepts at most 50 instance ids per command


def reconcile_all(ld: LifecycleDeps) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    for config in ld.core.apps.list():
        try:
            reports[config.app] = reconcile_app(ld, config)
        except DeployerError as exc:
            # One broken app must not stop the others from being reconciled.
            logger.error("reconcile failed", app=config.app, error=str(exc))
            reports[config.app] = {"action": "error", "error": str(exc)}
    return reports


def reconcile_app(ld: LifecycleDeps, config: AppConfig) -> dict[str, Any]:
    core = ld.core
    app = config.app
    state = core.state.get(app)
    if state.locked(core.clock()):
        logger.info("reconcile skipped: deploy in progress", app=app, owner=state.lock_owner)
        return {"action": "skipped", "reason": f"deploy in progress ({state.lock_owner})"}
    healed = _heal_lost_terminal(ld, config)
    if healed is not None:
        return healed
    drift: dict[str, Any] = {}
    pointer = core.pointer.get(app)

    newest = ld.images.newest(config.repository, config.accepts_tag)
    if newest is not None and (pointer is None or newest.digest != pointer.digest):
        known = core.releases.find(app, lambda r: r.digest == newest.digest)
        if known is None and newest.digest not in state.refused_digests:
            drift["missed_push"] = newest.digest
            if state.paused:
                logger.info(
                    "missed push found while paused: recorded, not started", app=app, digest=newest.digest
                )
            return _deploy_missed(
                ld,
                config,
                newest.digest,
                newest.tags[0] if newest.tags else None,
                newest.registry_id,
                paused=state.paused,
                drift=drift,
            )
    if pointer is None:
        return {"action": "none", "reason": "no release yet"}
    if state.paused:
        return {"action": "skipped", "reason": "paused"}

    release = core.releases.get(app, pointer.release)
    group = core.launch_templates.current(config)
    if release.launch_template_version is not None and group.version != release.launch_template_version:
        drift["launch_template_version"] = {
            "group": group.version,
            "release": release.launch_template_version,
        }
        core.launch_templates.point_group(group, release.launch_template_version)

    hosts = _in_service(ld, config.auto_scaling_group)
    outcomes = {o.instance_id: o for o in core.host_outcomes.for_release(release.key)}
    drifted = sorted(i for i in hosts if i not in outcomes or not serving(outcomes[i]))
    commands: list[str] = []
    if drifted:
        drift["hosts"] = drifted
        parameters = swap_parameters(config, release)
        for start in range(0, len(drifted), BATCH):
            batch = drifted[start : start + BATCH]
            command_id = core.fleet.send_swap_to_instances(
                config, batch, parameters, f"deployer drift {app} release {release.release}"
            )
            commands.append(command_id)
            for instance_id in batch:
                ld.tracked.put(
                    TrackedCommand(
                        command_id=command_id,
                        instance_id=instance_id,
                        purpose=CommandPurpose.DRIFT,
                        app=app,
                        release=release.release,
                    )
                )
    items = len(drift.get("hosts", [])) + (1 if "launch_template_version" in drift else 0)
    if items:
        count(LifecycleMetric.DRIFT_DETECTED, items)
        logger.warning("drift repaired", app=app, release=release.release, drift=drift, commands=commands)
    return {
        "action": "repaired" if items else "none",
        "release": release.release,
        "drift": drift,
        "commands": commands,
    }


def _heal_lost_terminal(ld: LifecycleDeps, config: AppConfig) -> dict[str, Any] | None:
    """Finish a DEPLOYING release whose lease ran out (its terminal event never arrived)."""
    core = ld.core
    stuck = core.releases.find(config.app, lambda r: r.command_id is not None, status=ReleaseStatus.DEPLOYING)
    if stuck is None or stuck.command_id is None:
        return None
    counts = ld.results.counts(stuck.command_id)
    if counts is None:
        return None
    # StatusDetails is the finer one (Incomplete, Delivery Timed Out); Status the fallback.
    status = SsmStatus.parse(counts.status_details) or SsmStatus.parse(counts.status)
    if status is None:
        return None
    if not status.terminal:
        logger.warning("deploy still running after its lease expired", app=config.app, release=stuck.release)
        return {"action": "skipped", "reason": f"release {stuck.release} still running in SSM"}
    # Take the lock back for the lost deploy so finish_release can hand it on as usual.
    if not core.state.acquire(config.app, lock_owner(stuck), core.settings.lock_lease_seconds):
        return {"action": "skipped", "reason": "deploy in progress"}
    logger.warning(
        "applying a terminal status whose event never arrived",
        app=config.app,
        release=stuck.release,
        status=status.value,
    )
    result = finish_release(ld, stuck, status)
    return {**result, "action": "healed"}


def _deploy_missed(
    ld: LifecycleDeps,
    config: AppConfig,
    digest: str,
    tag: str | None,
    registry_id: str | None,
    *,
    paused: bool,
    drift: dict[str, Any],
) -> dict[str, Any]:
    core = ld.core
    region = core.region
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    registry = f"{registry_id}.dkr.ecr.{region}.{suffix}"
    release = new_release(
        core,
        config,
        image=image_reference(config, registry, digest),
        digest=digest,
        tag=tag,
        source=ReleaseSource.PUSH,
        reason="push found by the reconciler (its event never arrived)",
    )
    count(LifecycleMetric.DRIFT_DETECTED)
    logger.warning("missed push found", app=config.app, digest=digest, tag=tag, release=release.release)
    if paused or not core.state.acquire(config.app, lock_owner(release), core.settings.lock_lease_seconds):
        return {"action": "pending", "release": release.release, "drift": drift}
    try:
        started = start_rollout(core, config, release)
    except DeployerError:
        core.state.release(config.app, lock_owner(release))
        raise
    notify_started(ld, started)
    return {
        "action": "deployed",
        "release": started.release,
        "command_id": started.command_id,
        "drift": drift,
    }


def _in_service(ld: LifecycleDeps, group: str) -> list[str]:
    return ld.hooks.in_service(group)
