"""Operator actions, invoked directly: rollback, promote (explicit deploy), cancel, pause, resume,
status.

Rollback and promote go through the same rollout as a push (pointer, launch-template version,
swap command) with source `rollback` / `manual`. Every check runs before anything changes: an
unknown app, a target missing from the history, an image gone from ECR or a deploy in progress
is a clear error naming what is wrong, and nothing is written.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import TYPE_CHECKING, Any

from deployer.errors import DeployerError, InvalidTransition, LockLost, ReleaseNotFound
from deployer.lifecycle import LifecycleDeps, advance, notify_started, rollback_target
from deployer.metrics_names import LifecycleMetric
from deployer.models.lifecycle_events import (
    CancelRequest,
    OperationRequest,
    PauseRequest,
    PromoteRequest,
    ResumeRequest,
    RollbackRequest,
    StatusRequest,
)
from deployer.models.records import Release, ReleaseSource, ReleaseStatus
from deployer.observability import count, logger
from deployer.rollout import image_reference, lock_owner, new_release, owner_of, start_rollout

if TYPE_CHECKING:
    from deployer.adapters.images import Image
    from deployer.models.config import AppConfig


def run(ld: LifecycleDeps, request: OperationRequest) -> dict[str, Any]:
    """Dispatch one validated operator request."""
    if isinstance(request, RollbackRequest):
        return rollback(ld, request)
    if isinstance(request, PromoteRequest):
        return promote(ld, request)
    if isinstance(request, PauseRequest):
        return pause(ld, request)
    if isinstance(request, ResumeRequest):
        return resume(ld, request)
    if isinstance(request, CancelRequest):
        return cancel(ld, request)
    return status(ld, request)


def _describe(ref: int | str) -> str:
    if isinstance(ref, int):
        return f"release {ref}"
    return f"digest {ref}" if ref.startswith("sha256:") else f"tag {ref}"


def find_in_history(ld: LifecycleDeps, app: str, ref: int | str) -> Release:
    """The release a reference names (newest first for a tag or digest); ReleaseNotFound otherwise."""
    releases = ld.core.releases
    if isinstance(ref, int):
        return releases.get(app, ref)
    if ref.startswith("sha256:"):
        found = releases.find(app, lambda r: r.digest == ref)
    else:
        found = releases.find(app, lambda r: r.tag == ref)
    if found is None:
        raise ReleaseNotFound(f"{app} has no release with {_describe(ref)} in its history")
    return found


def rollback(ld: LifecycleDeps, request: RollbackRequest) -> dict[str, Any]:
    core = ld.core
    config = core.apps.get(request.app)
    pointer = core.pointer.get(config.app)
    if request.to is None:
        if pointer is None:
            raise ReleaseNotFound(f"{config.app} has never been deployed: there is nothing to roll back to")
        current_digest = pointer.digest
        target = core.releases.find(
            config.app,
            lambda r: r.release < pointer.release and r.digest != current_digest,
            status=ReleaseStatus.SUCCEEDED,
        )
        if target is None:
            raise ReleaseNotFound(
                f"{config.app} has no SUCCEEDED release before release {pointer.release} "
                "with a different image: there is nothing to roll back to"
            )
    else:
        target = find_in_history(ld, config.app, request.to)
    # The image must still be in ECR, or hosts and new instances could not pull it.
    ld.images.by_digest(config.repository, target.digest)
    reason = request.reason or f"rollback to release {target.release}"
    started = _deploy(
        ld,
        config,
        image=target.image,
        digest=target.digest,
        tag=target.tag,
        source=ReleaseSource.ROLLBACK,
        reason=reason,
        last_release_hint=pointer.release if pointer is not None else target.release,
    )
    if target.status is not ReleaseStatus.SUCCEEDED:
        # An operator chose a release that did not succeed: that is an explicit deploy of it.
        core.state.allow_digest(config.app, target.digest)
    if pointer is not None:
        _mark_rolled_back(
            ld, config.app, pointer.release, target=target.release, new=started.release, reason=reason
        )
    return {
        "action": "rollback",
        "app": config.app,
        "release": started.release,
        "target": target.release,
        "digest": target.digest,
        "tag": target.tag,
        "command_id": started.command_id,
    }


def promote(ld: LifecycleDeps, request: PromoteRequest) -> dict[str, Any]:
    """Deploy a tag, digest or earlier release's image explicitly (also lifts a refusal)."""
    core = ld.core
    config = core.apps.get(request.app)
    ref = request.to
    image: Image
    if isinstance(ref, int):
        known = core.releases.get(config.app, ref)
        image = ld.images.by_digest(config.repository, known.digest)
    elif ref.startswith("sha256:"):
        image = ld.images.by_digest(config.repository, ref)
    else:
        image = ld.images.by_tag(config.repository, ref)
    tag = (
        ref
        if isinstance(ref, str) and not ref.startswith("sha256:")
        else (image.tags[0] if image.tags else None)
    )
    registry = _registry(ld, image)
    reason = request.reason or f"explicit deploy of {_describe(ref)}"
    started = _deploy(
        ld,
        config,
        image=image_reference(config, registry, image.digest),
        digest=image.digest,
        tag=tag,
        source=ReleaseSource.MANUAL,
        reason=reason,
    )
    core.state.allow_digest(config.app, image.digest)
    return {
        "action": "promote",
        "app": config.app,
        "release": started.release,
        "digest": image.digest,
        "tag": tag,
        "command_id": started.command_id,
    }


def _registry(ld: LifecycleDeps, image: Image) -> str:
    region = ld.core.region
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{image.registry_id}.dkr.ecr.{region}.{suffix}"


def _deploy(
    ld: LifecycleDeps,
    config: AppConfig,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    last_release_hint: int = 0,
) -> Release:
    """Record and start a release under the app's lock; DeployInProgress leaves nothing behind.

    `last_release_hint`: the app's newest release number as the caller knows it, so taking the
    lock and the release number is usually one write."""
    core = ld.core
    number = core.state.reserve(
        config.app,
        lambda n: owner_of(config.app, n),
        core.settings.lock_lease_seconds,
        last_release_hint=last_release_hint,
    )
    owner = owner_of(config.app, number)
    try:
        release = new_release(
            core,
            config,
            image=image,
            digest=digest,
            tag=tag,
            source=source,
            reason=reason,
            number=number,
            deploying=True,
        )
        started = start_rollout(core, config, release, source)
    except DeployerError:
        with contextlib.suppress(LockLost):
            core.state.release(config.app, owner)
        raise
    notify_started(ld, started)
    logger.info(
        "operator deploy started",
        app=config.app,
        release=started.release,
        source=source.value,
        digest=digest,
        reason=reason,
    )
    return started


def _mark_rolled_back(
    ld: LifecycleDeps, app: str, current: int, *, target: int, new: int, reason: str
) -> None:
    if current == target:
        return
    # Already ROLLED_BACK (say, by the automatic rollback) is fine.
    with contextlib.suppress(InvalidTransition, ReleaseNotFound):
        ld.core.releases.update_status(
            app,
            current,
            ReleaseStatus.ROLLED_BACK,
            reason=f"rolled back to release {target} (as release {new}): {reason}",
        )


def cancel(ld: LifecycleDeps, request: CancelRequest) -> dict[str, Any]:
    """Stop the app's deploy in progress and put back the release it replaced.

    The release is marked CANCELLED first (one conditional write), so the cancelled command's
    status events no longer decide its fate nor start an automatic rollback; then the command
    is cancelled, and a rollback release to the last SUCCEEDED image takes the deploy lock over
    and returns the hosts already swapped, the pointer and the group. Running it again after a
    failure part-way carries on from where it stopped."""
    core = ld.core
    config = core.apps.get(request.app)
    state = core.state.get(config.app)
    match = re.fullmatch(rf"{re.escape(config.app)}#([0-9]+)", state.lock_owner or "")
    if match is None or not state.locked(core.clock()):
        raise ReleaseNotFound(f"{config.app} has no deploy in progress: there is nothing to cancel")
    release = core.releases.get(config.app, int(match.group(1)))
    reason = f"cancelled by an operator: {request.reason or 'deployer cancel'}"
    if release.status is ReleaseStatus.DEPLOYING:
        try:
            release = core.releases.update_status(
                config.app, release.release, ReleaseStatus.CANCELLED, reason
            )
        except InvalidTransition as exc:
            raise DeployerError(
                f"{config.app} release {release.release} ended {exc.current.status if exc.current else '?'} "
                "before it could be cancelled; roll back instead"
            ) from exc
        count(LifecycleMetric.DEPLOY_CANCELLED)
    elif release.status is not ReleaseStatus.CANCELLED:
        raise DeployerError(
            f"{config.app} release {release.release} is {release.status.value}, not deploying: "
            "nothing to cancel"
        )
    if release.command_id:
        ld.core.fleet.cancel(release.command_id)
    result: dict[str, Any] = {
        "action": "cancel",
        "app": config.app,
        "release": release.release,
        "status": release.status.value,
        "command_id": release.command_id,
        "rollback_release": None,
        "target": None,
    }
    # A cancelled rollback is not rolled back again (that would walk back through the history).
    target = None if release.source is ReleaseSource.ROLLBACK else rollback_target(ld, release)
    if target is None:
        with contextlib.suppress(LockLost):
            core.state.release(config.app, lock_owner(release))
        logger.info("deploy cancelled; nothing to roll back to", app=config.app, release=release.release)
        return result
    rollback_release = new_release(
        core,
        config,
        image=target.image,
        digest=target.digest,
        tag=target.tag,
        source=ReleaseSource.ROLLBACK,
        reason=f"cancel of release {release.release}: back to release {target.release}",
    )
    try:
        core.state.transfer(
            config.app, lock_owner(release), lock_owner(rollback_release), core.settings.lock_lease_seconds
        )
    except LockLost as exc:
        core.releases.update_status(
            config.app, rollback_release.release, ReleaseStatus.SUPERSEDED, "another cancel took over"
        )
        raise DeployerError(f"{config.app}: the deploy lock moved on while cancelling; check status") from exc
    try:
        started = start_rollout(core, config, rollback_release, ReleaseSource.ROLLBACK)
    except DeployerError:
        with contextlib.suppress(LockLost):
            core.state.release(config.app, lock_owner(rollback_release))
        raise
    count(LifecycleMetric.ROLLBACKS)
    notify_started(ld, started)
    logger.info(
        "deploy cancelled; rolling back",
        app=config.app,
        release=release.release,
        target=target.release,
        rollback_release=started.release,
    )
    result.update(rollback_release=started.release, target=target.release)
    return result


def pause(ld: LifecycleDeps, request: PauseRequest) -> dict[str, Any]:
    config = ld.core.apps.get(request.app)
    ld.core.state.set_paused(config.app, True, request.reason or "paused by an operator")
    logger.info("automatic deploys paused", app=config.app, reason=request.reason)
    return {"action": "pause", "app": config.app, "paused": True}


def resume(ld: LifecycleDeps, request: ResumeRequest) -> dict[str, Any]:
    """Resume automatic deploys; the newest release that waited while paused starts now."""
    core = ld.core
    config = core.apps.get(request.app)
    core.state.set_paused(config.app, False, "")
    result: dict[str, Any] = {"action": "resume", "app": config.app, "paused": False}
    claim = f"operator:{uuid.uuid4()}"
    if core.state.acquire(config.app, claim, core.settings.lock_lease_seconds):
        started = advance(ld, config.app, owner=claim, config=config)
        if started is not None:
            result["release"] = started.release
            result["command_id"] = started.command_id
    logger.info("automatic deploys resumed", app=config.app, started=result.get("release"))
    return result


def status(ld: LifecycleDeps, request: StatusRequest) -> dict[str, Any]:
    core = ld.core
    config = core.apps.get(request.app)
    state = core.state.get(config.app)
    pointer = core.pointer.get(config.app)
    releases = core.releases.list_recent(config.app, request.limit)
    return {
        "action": "status",
        "app": config.app,
        "pointer": pointer.model_dump(mode="json") if pointer else None,
        "paused": state.paused,
        "pause_reason": state.pause_reason or None,
        "deploying": state.lock_owner if state.locked(core.clock()) else None,
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
            }
            for r in releases
        ],
    }
