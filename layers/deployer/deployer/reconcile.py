"""The reconciler (scheduled): per app, converge, then compare what should run with what does.

Per app (docs/lifecycle.md, "Reconciler"):
- `controller.converge`: finishes whatever a lost event or a dead invocation left half done (a
  start without its command, a command whose end was never reported, a notice owed);
- the newest image in ECR that passes the tag filter vs the releases: a digest no release has
  ever recorded is a missed push, admitted as a push would have been;
- with the app idle, the desired release vs the pointer and the group's launch-template version:
  put back; vs each InService host's last reported outcome: hosts without a serving outcome get
  the swap again, only when the desired release SUCCEEDED (never a FAILED or ROLLED_BACK one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer import controller, markers
from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand
from deployer.admission import follow_admission, image_reference
from deployer.builders import swap_parameters
from deployer.errors import DeployerError
from deployer.metrics_names import DeployMetric
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.names import ecr_registry
from deployer.observability import count, logger
from deployer.verdicts import serving

if TYPE_CHECKING:
    from deployer.models.config import AppConfig
    from deployer.wiring import Adapters

BATCH = 50  # SSM accepts at most 50 instance ids per command


def reconcile_all(ad: Adapters) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    for config in ad.apps.list():
        try:
            reports[config.app] = reconcile_app(ad, config)
        except DeployerError as exc:
            # One broken app must not stop the others from being reconciled.
            logger.error("reconcile failed", app=config.app, error=str(exc))
            reports[config.app] = {"action": "error", "error": str(exc)}
    return reports


def reconcile_app(ad: Adapters, config: AppConfig) -> dict[str, Any]:
    app = config.app
    token = controller.new_token()
    report = controller.converge(ad, app, config=config, token=token)
    state = report.state
    assert state is not None
    if state.lock_owner is not None:
        return {"action": "converging", **report.as_dict()}
    drift: dict[str, Any] = {}
    pointer = ad.pointer.get(app)
    newest = ad.images.newest(config.repository, config.accepts_tag)
    if newest is not None and (pointer is None or newest.digest != pointer.digest):
        known = ad.releases.find(app, lambda r: r.digest == newest.digest)
        if known is None and newest.digest not in state.refused_digests:
            tag = newest.tags[0] if newest.tags else None
            drift["missed_push"] = newest.digest
            count(DeployMetric.DRIFT_DETECTED)
            logger.warning("missed push found", app=app, digest=newest.digest, tag=tag, paused=state.paused)
            admitted = controller.admit(
                ad,
                config,
                image=image_reference(config, ecr_registry(newest.registry_id, ad.region), newest.digest),
                digest=newest.digest,
                tag=tag,
                source=ReleaseSource.PUSH,
                reason="push found by the reconciler (its event never arrived)",
                token=token,
                marker=markers.admission_key(app, config.repository, newest.digest, tag),
            )
            result = follow_admission(ad, config, admitted, token)
            return {
                "action": result.action.value,
                "release": result.release,
                "command_id": result.command_id,
                "drift": drift,
            }

    if state.desired is None:
        return {"action": "none", "reason": "no release yet"}
    if state.paused:
        return {"action": "skipped", "reason": "paused"}
    desired = ad.releases.get(app, state.desired)
    repaired = controller.realign(ad, config, desired)
    drift.update(repaired.as_dict())

    commands: list[str] = []
    if desired.status is ReleaseStatus.SUCCEEDED:
        hosts = ad.hooks.in_service(config.auto_scaling_group)
        outcomes = {o.instance_id: o for o in ad.host_outcomes.for_release(desired.key)}
        drifted = sorted(i for i in hosts if i not in outcomes or not serving(outcomes[i]))
        if drifted:
            drift["hosts"] = drifted
            commands = _resend(ad, config, desired, drifted)
    items = len(drift.get("hosts", [])) + repaired.repaired
    if items:
        count(DeployMetric.DRIFT_DETECTED, items)
        logger.warning("drift repaired", app=app, release=desired.release, drift=drift, commands=commands)
    return {
        "action": "repaired" if items else "none",
        "release": desired.release,
        "drift": drift,
        "commands": commands,
    }


def _resend(ad: Adapters, config: AppConfig, release: Any, drifted: list[str]) -> list[str]:
    commands = []
    parameters = swap_parameters(config, release)
    for start in range(0, len(drifted), BATCH):
        batch = drifted[start : start + BATCH]
        command_id = ad.fleet.send_swap_to_instances(
            config, batch, parameters, markers.host_comment("drift", config.app, release.release)
        )
        commands.append(command_id)
        for instance_id in batch:
            ad.tracked.put(
                TrackedCommand(
                    command_id=command_id,
                    instance_id=instance_id,
                    purpose=CommandPurpose.DRIFT,
                    app=config.app,
                    release=release.release,
                )
            )
    return commands
