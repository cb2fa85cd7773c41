"""The rollout: every trigger (push, rollback, promote, pending, reconciler) ends here.

`accept_push(deps, event)` turns an ECR push into releases, one per app deploying from the
repository: tag filter, refused (previously failed) digests, pause flag, then the release is
recorded and either started under the app's deploy lock or left PENDING (a newer pending
release supersedes older ones).

`start_rollout(deps, config, release, source)` is the common path. The caller holds the app's
lock (owner `lock_owner(release)`); it moves the release PENDING → DEPLOYING, then

1. moves the pointer (SSM parameter),
2. creates a launch-template version booting this release and puts the group on it,
3. sends the swap command to the group's instances at the app's rate,
4. stores the command id and launch-template version on the release.

A release recorded DEPLOYING by its caller (`new_release(..., deploying=True)`) skips the move.

If a step fails, what was changed is put back (pointer, group version), the release is marked
FAILED with the reason, and RolloutFailed is raised; the caller releases the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deployer import builders
from deployer.adapters.app_state import AppState
from deployer.adapters.apps import AppsStore
from deployer.adapters.fleet import Fleet
from deployer.adapters.host_outcomes import HostOutcomesStore
from deployer.adapters.launch_templates import GroupTemplate, LaunchTemplates, release_version_description
from deployer.adapters.pointer import PointerStore
from deployer.adapters.releases import ReleasesStore
from deployer.aws import ClientFactory
from deployer.errors import DeployerError, InvalidTransition, RolloutFailed
from deployer.models.config import AppConfig
from deployer.models.events import EcrImageAction
from deployer.models.records import Pointer, Release, ReleaseSource, ReleaseStatus, utcnow
from deployer.observability import Metric, count, logger

if TYPE_CHECKING:
    import boto3

    from deployer.settings import Settings


@dataclass
class Deps:
    """The adapters the rollout uses, built once per process."""

    settings: Settings
    apps: AppsStore
    state: AppState
    releases: ReleasesStore
    host_outcomes: HostOutcomesStore
    pointer: PointerStore
    launch_templates: LaunchTemplates
    fleet: Fleet
    region: str
    clients: ClientFactory
    clock: Callable[[], float] = field(default_factory=lambda: time.time)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session: boto3.session.Session | None = None,
        clients: ClientFactory | None = None,
    ) -> Deps:
        clients = clients or ClientFactory(session=session, region=settings.region)
        dynamodb = clients.client("dynamodb")
        ssm = clients.client("ssm")
        region = settings.region or clients.session.region_name
        if not region:
            raise DeployerError("no AWS region configured (AWS_REGION)")
        return cls(
            settings=settings,
            apps=AppsStore(dynamodb, settings.apps_table),
            state=AppState(dynamodb, settings.app_state_table),
            releases=ReleasesStore(dynamodb, settings.releases_table),
            host_outcomes=HostOutcomesStore(dynamodb, settings.host_outcomes_table),
            pointer=PointerStore(ssm, settings.parameter_prefix),
            launch_templates=LaunchTemplates(clients.client("ec2"), clients.client("autoscaling")),
            fleet=Fleet(ssm, settings.swap_document_name, settings.command_log_group),
            region=region,
            clients=clients,
        )


class PushAction(StrEnum):
    STARTED = "started"
    PENDING = "pending"
    IGNORED = "ignored"
    REFUSED = "refused"


@dataclass(frozen=True)
class AppPushResult:
    app: str
    action: PushAction
    reason: str
    release: int | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class PushOutcome:
    """What one push did, per app deploying from the repository."""

    event_id: str
    repository: str
    digest: str
    tag: str | None
    results: tuple[AppPushResult, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "results": [
                {k: (v.value if isinstance(v, StrEnum) else v) for k, v in vars(r).items()}
                for r in self.results
            ],
        }


def lock_owner(release: Release) -> str:
    """The deploy-lock owner while `release` deploys (the lifecycle releases it by this name)."""
    return owner_of(release.app, release.release)


def owner_of(app: str, release: int) -> str:
    """`lock_owner` of release number `release` of `app`, before the release is recorded."""
    return f"{app}#{release}"


def image_reference(config: AppConfig, registry: str, digest: str) -> str:
    return f"{config.registry or registry}/{config.repository}@{digest}"


def accept_push(deps: Deps, event: EcrImageAction) -> PushOutcome:
    """Turn one validated ECR push into releases (one per app using the repository)."""
    detail = event.detail
    outcome = PushOutcome(
        event_id=event.id, repository=detail.repository_name, digest=detail.image_digest, tag=detail.image_tag
    )
    configs = deps.apps.find_by_repository(detail.repository_name)
    if not configs:
        logger.info("push ignored: no app deploys this repository", repository=detail.repository_name)
        count(Metric.PUSH_IGNORED)
        return outcome
    results = tuple(_accept_for_app(deps, config, event) for config in configs)
    return PushOutcome(**{**vars(outcome), "results": results})


def _accept_for_app(deps: Deps, config: AppConfig, event: EcrImageAction) -> AppPushResult:
    detail = event.detail
    if detail.image_tag is None:
        logger.info(
            "push ignored: untagged (a multi-arch child, an attestation or a push by digest)",
            app=config.app,
            digest=detail.image_digest,
        )
        count(Metric.PUSH_UNTAGGED)
        return AppPushResult(config.app, PushAction.IGNORED, "untagged push")
    if not config.accepts_tag(detail.image_tag):
        logger.info(
            "push ignored: tag filter", app=config.app, tag=detail.image_tag, filter=config.tag_filter
        )
        count(Metric.PUSH_IGNORED)
        return AppPushResult(
            config.app, PushAction.IGNORED, f"tag {detail.image_tag} does not pass the filter"
        )
    # One write: the release number, unless the digest is refused, and the pause flag.
    state = deps.state.admit(config.app, detail.image_digest)
    if state is None:
        logger.warning(
            "push refused: this digest failed before; deploy it explicitly to retry",
            app=config.app,
            digest=detail.image_digest,
        )
        count(Metric.PUSH_REFUSED)
        return AppPushResult(config.app, PushAction.REFUSED, "digest failed before and is refused")
    number = state.last_release
    owner = owner_of(config.app, number)
    holder = "" if state.paused else deps.state.take(config.app, owner, deps.settings.lock_lease_seconds)
    deploying = holder is None
    try:
        release = new_release(
            deps,
            config,
            image=image_reference(config, event.registry, detail.image_digest),
            digest=detail.image_digest,
            tag=detail.image_tag,
            source=ReleaseSource.PUSH,
            reason=f"push of {detail.image_tag or detail.image_digest}",
            pushed_at=event.time,
            event_id=event.id,
            number=number,
            deploying=deploying,
        )
    except DeployerError:
        if deploying:
            deps.state.release(config.app, owner)
        raise
    if not deploying:
        newer = _holder_release(config.app, holder or "")
        if newer is not None and newer > release.release:
            # A newer push won the lock first: deploying this one after it would go back.
            supersede_pending(deps, config.app, newer_than=newer)
            why = f"superseded by release {newer}, which is deploying"
            return AppPushResult(config.app, PushAction.PENDING, why, release.release)
        return _leave_pending(
            deps, release, "app is paused" if state.paused else "another deploy is in progress"
        )
    try:
        started = start_rollout(deps, config, release)
    except DeployerError:
        deps.state.release(config.app, owner)
        raise
    supersede_pending(deps, config.app, newer_than=release.release)
    return AppPushResult(
        config.app, PushAction.STARTED, "deploy started", release.release, started.command_id
    )


def _holder_release(app: str, holder: str) -> int | None:
    """The release number a lock holder deploys, when it is a release of `app`."""
    name, _, number = holder.rpartition("#")
    return int(number) if name == app and number.isdigit() else None


def new_release(
    deps: Deps,
    config: AppConfig,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
    number: int | None = None,
    deploying: bool = False,
) -> Release:
    """Record a release, PENDING, with `number` or else the app's next release number.

    `deploying`: the caller holds the lock as `lock_owner` of this release and starts it now;
    the release is recorded DEPLOYING, which saves start_rollout a write and leaves no moment
    in which a newer push could supersede it."""
    if number is None:
        number = deps.state.next_release(config.app)
    started: dict[str, Any] = {}
    if deploying:
        started = {
            "status": ReleaseStatus.DEPLOYING,
            "status_reason": f"{source.value} deploy started",
            "deploy_started_at": utcnow(),
        }
    release = Release(
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
        **started,
    )
    deps.releases.create(release)
    logger.info(
        "release recorded", app=config.app, release=number, digest=digest, tag=tag, source=source.value
    )
    return release


def _leave_pending(deps: Deps, release: Release, why: str) -> AppPushResult:
    logger.info("release pending", app=release.app, release=release.release, why=why)
    count(Metric.PUSH_PENDING)
    supersede_pending(deps, release.app, newer_than=release.release)
    return AppPushResult(release.app, PushAction.PENDING, why, release.release)


def supersede_pending(deps: Deps, app: str, newer_than: int) -> list[int]:
    """Mark PENDING releases older than `newer_than` SUPERSEDED; returns their numbers."""
    superseded: list[int] = []
    for pending in deps.releases.pending(app):
        if pending.release >= newer_than:
            continue
        try:
            deps.releases.update_status(
                app, pending.release, ReleaseStatus.SUPERSEDED, reason=f"superseded by release {newer_than}"
            )
        except InvalidTransition:
            continue  # started or superseded concurrently: nothing to do
        superseded.append(pending.release)
    if superseded:
        logger.info("pending releases superseded", app=app, releases=superseded, by=newer_than)
        count(Metric.RELEASES_SUPERSEDED, len(superseded))
    return superseded


def start_rollout(
    deps: Deps, config: AppConfig, release: Release, source: ReleaseSource | None = None
) -> Release:
    """Deploy a PENDING release to the app's fleet and group; the caller holds the app's lock."""
    source = source or release.source
    if release.status is not ReleaseStatus.DEPLOYING:
        release = deps.releases.update_status(
            config.app,
            release.release,
            ReleaseStatus.DEPLOYING,
            reason=f"{source.value} deploy started",
            deploy_started_at=utcnow(),
        )
    group: GroupTemplate | None = None
    group_moved = False
    pointer_version: int | None = None
    try:
        pointer_version = deps.pointer.put(Pointer.for_release(release, source))
        group = deps.launch_templates.current(config)
        script = builders.user_data(
            config, release, deps.settings.swap_document_name, deps.pointer.name(config.app), deps.region
        )
        version = deps.launch_templates.create_version(
            group, script, release_version_description(config.app, release.release, release.digest)
        )
        deps.launch_templates.point_group(group, version)
        group_moved = True
        command_id = deps.fleet.send_swap(
            config,
            builders.swap_parameters(config, release),
            f"deployer {config.app} release {release.release}",
            hosts=group.max_size,
            rollback=source is ReleaseSource.ROLLBACK,
        )
        release = deps.releases.set_fields(
            config.app, release.release, command_id=command_id, launch_template_version=version
        )
    except DeployerError as exc:
        _undo(deps, config, pointer_version, group if group_moved else None)
        deps.releases.update_status(config.app, release.release, ReleaseStatus.FAILED, reason=str(exc))
        logger.error("deploy could not start", app=config.app, release=release.release, error=str(exc))
        count(Metric.DEPLOY_START_FAILED)
        raise RolloutFailed(
            f"deploy of {config.app} release {release.release} could not start: {exc}"
        ) from exc
    logger.info(
        "deploy started",
        app=config.app,
        release=release.release,
        digest=release.digest,
        source=source.value,
        command_id=command_id,
        launch_template_version=version,
    )
    count(Metric.DEPLOY_STARTED)
    _prune_versions(deps, config, group, version)
    return release


# Launch-template versions kept besides the default, the group's and the retained releases'.
KEEP_NEWEST_VERSIONS = 10
# Statuses of a release that may have gone live on hosts, so hosts may still retain it.
_MAY_BE_RETAINED = frozenset({ReleaseStatus.DEPLOYING, ReleaseStatus.SUCCEEDED, ReleaseStatus.ROLLED_BACK})


def _prune_versions(deps: Deps, config: AppConfig, group: GroupTemplate | None, latest: int) -> None:
    """Delete launch-template versions no release needs any more. Best effort: the deploy has
    started, and a version left behind now is deleted by a later deploy."""
    if group is None or latest <= KEEP_NEWEST_VERSIONS:
        return
    try:
        recent = deps.releases.list_recent(config.app, limit=KEEP_NEWEST_VERSIONS + 4 * config.retain)
        retained = [
            r.launch_template_version
            for r in recent
            if r.status in _MAY_BE_RETAINED and r.launch_template_version is not None
        ][: config.retain]
        deleted = deps.launch_templates.prune(group, config.app, latest, KEEP_NEWEST_VERSIONS, retained)
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


def _undo(deps: Deps, config: AppConfig, pointer_version: int | None, group: GroupTemplate | None) -> None:
    """Put back what a failed start changed, so pointer and group keep agreeing.

    The pointer goes back to the parameter version before ours (SSM keeps the history; the
    lock kept anyone else from moving it), or is removed when ours was the first."""
    try:
        if pointer_version == 1:
            deps.pointer.delete(config.app)
        elif pointer_version is not None:
            previous = deps.pointer.version(config.app, pointer_version - 1)
            if previous is not None:
                deps.pointer.put(previous)
            else:
                logger.error(
                    "the previous pointer version is gone", app=config.app, version=pointer_version - 1
                )
        if group is not None:
            deps.launch_templates.point_group(group, group.version)
    except DeployerError as exc:
        logger.error("could not restore the previous release", app=config.app, error=str(exc))
