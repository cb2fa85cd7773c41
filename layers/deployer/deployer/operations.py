"""Operator actions, invoked directly: rollback, promote (explicit deploy), cancel, continue (a
staged release's approval), pause, resume, status.

Rollback and promote go through the same rollout as a push (pointer, launch-template version,
swap command) with source `rollback` / `manual`. Every check runs before anything changes: an
unknown app, a target missing from the history, an image gone from ECR or a deploy in progress
is a clear error naming what is wrong, and nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer import controller, markers
from deployer.adapters.transactions import Refused
from deployer.admission import image_reference
from deployer.controller import decisions, stages
from deployer.errors import DeployerError, ReleaseNotFound
from deployer.metrics_names import DeployMetric
from deployer.models.lifecycle_events import (
    CancelRequest,
    ConfigDeployRequest,
    ContinueRequest,
    OperationRequest,
    PauseRequest,
    PromoteRequest,
    ResumeRequest,
    RollbackRequest,
    StatusRequest,
)
from deployer.models.records import Release, ReleaseSource, ReleaseStatus
from deployer.names import ecr_registry
from deployer.observability import count, logger

if TYPE_CHECKING:
    from deployer.adapters.images import Image
    from deployer.models.config import AppConfig
    from deployer.models.release_config import ReleaseConfig
    from deployer.wiring import Adapters


def run(ad: Adapters, request: OperationRequest) -> dict[str, Any]:
    """Dispatch one validated operator request."""
    if isinstance(request, RollbackRequest):
        return rollback(ad, request)
    if isinstance(request, PromoteRequest):
        return promote(ad, request)
    if isinstance(request, ConfigDeployRequest):
        return deploy_config(ad, request)
    if isinstance(request, PauseRequest):
        return pause(ad, request)
    if isinstance(request, ResumeRequest):
        return resume(ad, request)
    if isinstance(request, CancelRequest):
        return cancel(ad, request)
    if isinstance(request, ContinueRequest):
        return approve(ad, request)
    return status(ad, request)


def _describe(ref: int | str) -> str:
    if isinstance(ref, int):
        return f"release {ref}"
    return f"digest {ref}" if ref.startswith("sha256:") else f"tag {ref}"


def find_in_history(ad: Adapters, app: str, ref: int | str) -> Release:
    """The release a reference names (newest first for a tag or digest); ReleaseNotFound otherwise."""
    releases = ad.releases
    if isinstance(ref, int):
        return releases.get(app, ref)
    if ref.startswith("sha256:"):
        found = releases.find(app, lambda r: r.digest == ref)
    else:
        found = releases.find(app, lambda r: r.tag == ref)
    if found is None:
        raise ReleaseNotFound(f"{app} has no release with {_describe(ref)} in its history")
    return found


def rollback(ad: Adapters, request: RollbackRequest) -> dict[str, Any]:
    """Deploy an older release's image again: by default the newest release before the current
    one that succeeded with another image still in ECR (the automatic rollback's choice)."""
    config = ad.apps.get(request.app)
    state = ad.state.get(config.app)
    current_number = state.desired or _pointer_release(ad, config.app)
    current = ad.releases.get_or_none(config.app, current_number) if current_number else None
    if request.to is None:
        if current is None:
            raise ReleaseNotFound(f"{config.app} has never been deployed: there is nothing to roll back to")
        target = controller.rollback_target(ad, config, current)
        if target is None:
            raise ReleaseNotFound(
                f"{config.app} has no SUCCEEDED release before release {current.release} "
                "with a different image still in ECR: there is nothing to roll back to"
            )
    else:
        target = find_in_history(ad, config.app, request.to)
        # The image must still be in ECR, or hosts and new instances could not pull it.
        ad.images.by_digest(config.repository, target.digest)
    reason = request.reason or f"rollback to release {target.release}"
    started = _deploy(
        ad,
        config,
        image=target.image,
        digest=target.digest,
        tag=target.tag,
        source=ReleaseSource.ROLLBACK,
        reason=reason,
        rollback_of=current.release if current is not None and current.release != target.release else None,
        config_pin=target.config,
        with_task=request.with_task,
        staged=request.staged,
    )
    count(DeployMetric.ROLLBACKS)
    return {
        "action": "rollback",
        "app": config.app,
        "release": started.release,
        "target": target.release,
        "digest": target.digest,
        "tag": target.tag,
        "command_id": started.command_id,
    }


def _pointer_release(ad: Adapters, app: str) -> int | None:
    pointer = ad.pointer.get(app)
    return pointer.release if pointer else None


def promote(ad: Adapters, request: PromoteRequest) -> dict[str, Any]:
    """Deploy a tag, digest or earlier release's image explicitly (also lifts a refusal)."""
    config = ad.apps.get(request.app)
    ref = request.to
    image: Image
    # An earlier release is deployed again as it ran: its image and its pinned config.
    pinned: ReleaseConfig | None = None
    if isinstance(ref, int):
        known = ad.releases.get(config.app, ref)
        image = ad.images.by_digest(config.repository, known.digest)
        pinned = known.config
    elif ref.startswith("sha256:"):
        image = ad.images.by_digest(config.repository, ref)
    else:
        image = ad.images.by_tag(config.repository, ref)
    tag = (
        ref
        if isinstance(ref, str) and not ref.startswith("sha256:")
        else (image.tags[0] if image.tags else None)
    )
    registry = ecr_registry(image.registry_id, ad.region)
    reason = request.reason or f"explicit deploy of {_describe(ref)}"
    started = _deploy(
        ad,
        config,
        image=image_reference(config, registry, image.digest),
        digest=image.digest,
        tag=tag,
        source=ReleaseSource.MANUAL,
        reason=reason,
        config_pin=pinned,
    )
    return {
        "action": "promote",
        "app": config.app,
        "release": started.release,
        "digest": image.digest,
        "tag": tag,
        "command_id": started.command_id,
    }


def deploy_config(ad: Adapters, request: ConfigDeployRequest) -> dict[str, Any]:
    """A config-only release: the image of the release the app runs now (its desired release),
    with the stored environment and each secret's version current now. It deploys like any
    release (stages, zero-downtime swap, automatic rollback to the previous config)."""
    config = ad.apps.get(request.app)
    state = ad.state.get(config.app)
    number = state.desired or _pointer_release(ad, config.app)
    current = ad.releases.get_or_none(config.app, number) if number else None
    if current is None:
        raise ReleaseNotFound(
            f"{config.app} has never been deployed: a config-only release keeps the running image, "
            "and there is none yet (push an image, or deploy a tag)"
        )
    ad.images.by_digest(config.repository, current.digest)
    reason = request.reason or f"config-only release (the image of release {current.release})"
    started = _deploy(
        ad,
        config,
        image=current.image,
        digest=current.digest,
        tag=current.tag,
        source=ReleaseSource.CONFIG,
        reason=reason,
    )
    return {
        "action": "deploy_config",
        "app": config.app,
        "release": started.release,
        "image_of": current.release,
        "digest": current.digest,
        "tag": current.tag,
        "command_id": started.command_id,
    }


def _deploy(
    ad: Adapters,
    config: AppConfig,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    rollback_of: int | None = None,
    config_pin: ReleaseConfig | None = None,
    with_task: bool = False,
    staged: bool = False,
) -> Release:
    """Record and start an operator's release (DeployInProgress, nothing written, while another
    deploy runs). Run again after it died part-way, the same request finds its release rolling
    out and carries it on instead of starting a second one."""
    token = controller.new_token()
    state = ad.state.get(config.app)
    running = markers.owned_release(config.app, state.lock_owner)
    if running is not None:
        holder = ad.releases.get_or_none(config.app, running)
        if (
            holder is not None
            and holder.status is ReleaseStatus.DEPLOYING
            and holder.digest == digest
            and holder.source is source
        ):
            logger.info(
                "the same deploy is already under way; carrying it on", app=config.app, release=running
            )
            controller.converge(ad, config.app, config=config, token=token)
            return ad.releases.get(config.app, running)
    admitted = controller.admit(
        ad,
        config,
        image=image,
        digest=digest,
        tag=tag,
        source=source,
        reason=reason,
        token=token,
        operator=True,
        rollback_of=rollback_of,
        state=state,
        config_pin=config_pin,
        with_task=with_task,
        staged=staged,
    )
    assert admitted.release is not None
    report = controller.converge(ad, config.app, config=config, token=token, known=admitted.known)
    if admitted.known is not None and report.release == admitted.release and report.command_id:
        started = admitted.known[1].model_copy(update={"command_id": report.command_id})
    else:
        started = ad.releases.get(config.app, admitted.release)
    logger.info(
        "operator deploy started",
        app=config.app,
        release=started.release,
        source=source.value,
        digest=digest,
        reason=reason,
    )
    return started


def cancel(ad: Adapters, request: CancelRequest) -> dict[str, Any]:
    """Stop the app's deploy in progress and put back the release it replaced.

    One decision (`decisions.cancel`) marks the release CANCELLED (its command's end no longer
    decides anything) and starts a rollback release to the last good image in its place (or
    frees the app and puts pointer and group back when there is none); then the command is
    cancelled. Running it again after a failure part-way carries on from where it stopped."""
    config = ad.apps.get(request.app)
    state = ad.state.get(config.app)
    number = markers.owned_release(config.app, state.lock_owner)
    release = ad.releases.get_or_none(config.app, number) if number else None
    result: dict[str, Any] = {"action": "cancel", "app": config.app, "rollback_release": None, "target": None}
    cancelled = (
        ad.releases.get_or_none(config.app, release.rollback_of)
        if release is not None and release.rollback_of is not None
        else None
    )
    if release is not None and cancelled is not None and cancelled.status is ReleaseStatus.CANCELLED:
        # Run again: the app is rolling back from the cancelled release; make sure its command
        # is stopped.
        for command in (cancelled.command_id, cancelled.stage_command_id):
            if command:
                ad.fleet.cancel(command)
        controller.converge(ad, config.app, config=config)
        result.update(
            release=cancelled.release,
            status=cancelled.status.value,
            command_id=cancelled.command_id,
            rollback_release=release.release,
            target=release.replaces,
        )
        return result
    if release is None or release.status is not ReleaseStatus.DEPLOYING:
        raise ReleaseNotFound(f"{config.app} has no deploy in progress: there is nothing to cancel")
    reason = f"cancelled by an operator: {request.reason or 'deployer cancel'}"
    target = (
        None if release.source is ReleaseSource.ROLLBACK else controller.rollback_target(ad, config, release)
    )
    token = controller.new_token()
    decision = decisions.cancel(state, release, target, reason, token, controller.now(ad))
    try:
        controller.commit(ad, decision)
    except Refused as exc:
        raise DeployerError(
            f"{config.app} release {release.release} ended or moved on before it could be cancelled; "
            "check status, then roll back if needed"
        ) from exc
    for command in (release.command_id, release.stage_command_id):
        if command:
            ad.fleet.cancel(command)
    controller.converge(ad, config.app, config=config, token=token)
    result.update(
        release=release.release,
        status=ReleaseStatus.CANCELLED.value,
        command_id=release.command_id,
        rollback_release=decision.started,
        target=target.release if decision.started is not None and target is not None else None,
    )
    return result


def approve(ad: Adapters, request: ContinueRequest) -> dict[str, Any]:
    """`deployer continue APP`: the staged release awaiting approval goes on to its next stage
    (one decision, conditioned on the stage it read: a second `continue` is refused, never
    applied twice); then the stage is sent at once."""
    config = ad.apps.get(request.app)
    state = ad.state.get(config.app)
    number = markers.owned_release(config.app, state.lock_owner)
    release = ad.releases.get_or_none(config.app, number) if number else None
    if release is None:
        raise ReleaseNotFound(f"{config.app} has no deploy in progress: there is nothing to continue")
    token = controller.new_token()
    decision = stages.approved(release, token, controller.now(ad))
    try:
        controller.commit(ad, decision)
    except Refused as exc:
        raise DeployerError(
            f"{config.app} release {release.release} moved on before it could be approved; check status"
        ) from exc
    report = controller.converge(ad, config.app, config=config, token=token)
    assert release.stage is not None
    return {
        "action": "continue",
        "app": config.app,
        "release": release.release,
        "stage": release.stage + 1,
        "stages": len(config.rollout.stages),
        "command_id": report.command_id,
    }


def pause(ad: Adapters, request: PauseRequest) -> dict[str, Any]:
    config = ad.apps.get(request.app)
    ad.state.set_paused(config.app, True, request.reason or "paused by an operator")
    logger.info("automatic deploys paused", app=config.app, reason=request.reason)
    return {"action": "pause", "app": config.app, "paused": True}


def resume(ad: Adapters, request: ResumeRequest) -> dict[str, Any]:
    """Resume automatic deploys; the newest release that waited while paused starts now."""
    config = ad.apps.get(request.app)
    ad.state.set_paused(config.app, False, "")
    result: dict[str, Any] = {"action": "resume", "app": config.app, "paused": False}
    report = controller.converge(ad, config.app, config=config)
    if report.release is not None and report.state is not None and report.state.lock_owner is not None:
        result["release"] = report.release
        result["command_id"] = report.command_id
    logger.info("automatic deploys resumed", app=config.app, started=result.get("release"))
    return result


def status(ad: Adapters, request: StatusRequest) -> dict[str, Any]:
    config = ad.apps.get(request.app)
    state = ad.state.get(config.app)
    pointer = ad.pointer.get(config.app)
    releases = ad.releases.list_recent(config.app, request.limit)
    return {
        "action": "status",
        "app": config.app,
        "pointer": pointer.model_dump(mode="json") if pointer else None,
        "paused": state.paused,
        "pause_reason": state.pause_reason or None,
        "deploying": state.lock_owner,
        "desired": state.desired,
        "refused_digests": sorted(state.refused_digests),
        "releases": [
            {
                "release": r.release,
                "status": r.status.value,
                "source": r.source.value,
                "tag": r.tag,
                "digest": r.digest,
                "reason": r.status_reason or r.reason,
                "created_at": r.created_at.isoformat(),
                **(
                    {"stage": stages.stage_view(r, len(config.rollout.stages), ad.state.now())}
                    if r.stage is not None and state.lock_owner == markers.owner(config.app, r.release)
                    else {}
                ),
            }
            for r in releases
        ],
    }
