"""The rollout's steps: they move AWS toward a decision and say how it went; they never decide.

`drive`: the release task first when the app has one (its command sent once, under the release's
claim, to one InService instance; nothing else moves until a decision records that it succeeded),
then pointer, launch-template version, group, swap command for a DEPLOYING release (each step
idempotent, keyed by the release, the command sent once under the release's claim).
`realign`: pointer and group back on a release (after a start that failed, and the reconciler's
repair of drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from deployer import builders, markers
from deployer.adapters import is_transient, was_refused
from deployer.adapters.fleet import MAX_INSTANCE_IDS
from deployer.adapters.launch_templates import GroupTemplate, release_version_description
from deployer.controller import stages
from deployer.errors import DeployerError
from deployer.models.records import STAGE_RUNNING, Pointer, Release, ReleaseSource, ReleaseStatus, utcnow
from deployer.observability import Metric, count, logger

if TYPE_CHECKING:
    from deployer.models.config import AppConfig
    from deployer.wiring import Adapters

# A claim to send a release's command outlives any invocation (functions time out at 60 s), so
# a claim older than this belongs to an invocation that died.
SEND_CLAIM_SECONDS = 90
# How far before a release's start its command is looked for when a claim is taken over.
FIND_WINDOW = timedelta(minutes=5)
# Launch-template versions kept besides the default, the group's and the retained releases'.
KEEP_NEWEST_VERSIONS = 10
# Statuses of a release that may have gone live on hosts, so hosts may still retain it.
_MAY_BE_RETAINED = frozenset({ReleaseStatus.DEPLOYING, ReleaseStatus.SUCCEEDED, ReleaseStatus.ROLLED_BACK})


@dataclass(frozen=True)
class Sent:
    """The release's command is out (sent now, or found sent by an invocation that died)."""

    command_id: str
    launch_template_version: int


@dataclass(frozen=True)
class TaskSent:
    """The release's task command is out (sent now, or found sent by an invocation that died):
    nothing else moves until it ends and a decision records how."""

    command_id: str
    instance_id: str


def runs_task(config: AppConfig, release: Release) -> bool:
    """Whether the release still owes its task before anything moves: the app has one, the
    release does not skip it (a rollback not asked to run it), and no decision recorded it."""
    return config.release_task is not None and not release.skip_task and release.task_result is None


def task_instance(instances: list[str]) -> str | None:
    """The instance that runs a release's task: the lowest instance id among the group's
    InService instances, so every invocation that chooses picks the same one."""
    return min(instances) if instances else None


@dataclass(frozen=True)
class Busy:
    """Another invocation holds the release's claim and is starting it."""


@dataclass(frozen=True)
class CannotStart:
    """A step failed for good (not a throttle, not a timeout): the release cannot start."""

    error: str


def drive(
    ad: Adapters, config: AppConfig, release: Release, token: str
) -> Sent | TaskSent | Busy | CannotStart:
    """Start a DEPLOYING release that has no command yet (its task first, when it owes one). A
    transient failure raises (the next trigger carries on); one that is not is returned for the
    loop to decide on."""
    app = config.app
    resumed = False
    sending = False
    task: tuple[str, str] | None = None
    try:
        if release.send_claim != token:
            before = ad.releases.claim_send(app, release.release, token, ad.state.now(), SEND_CLAIM_SECONDS)
            if before is None:
                return Busy()
            # Someone claimed it before us and is gone: it may have sent the command already.
            resumed = before.send_claim is not None
        if runs_task(config, release):
            comment = markers.task_comment(app, release.release)
            if resumed:
                task = ad.fleet.find_task(comment, (release.deploy_started_at or utcnow()) - FIND_WINDOW)
            if task is None:
                instance = task_instance(ad.hooks.in_service(config.auto_scaling_group))
                if instance is None:
                    return CannotStart(
                        f"the release task needs an InService instance; {config.auto_scaling_group} has none"
                    )
                parameters = builders.task_parameters(config, release)
                sending = True
                task = (ad.fleet.send_task(config, instance, parameters, comment), instance)
        else:
            ad.pointer.put(Pointer.for_release(release))
            group = ad.launch_templates.current(config)
            script = builders.user_data(
                config, release, ad.settings.swap_document_name, ad.pointer.name(app), ad.region
            )
            version = ad.launch_templates.create_version(
                group, script, release_version_description(app, release.release, release.digest)
            )
            if group.version != version or group.versions - {version}:
                ad.launch_templates.point_group(group, version)
            comment = markers.release_comment(app, release.release)
            command_id = None
            if resumed:
                since = (release.deploy_started_at or utcnow()) - FIND_WINDOW
                command_id = ad.fleet.find(comment, since)
            if command_id is None:
                sending = True
                command_id = ad.fleet.send_swap(
                    config,
                    builders.swap_parameters(config, release),
                    comment,
                    hosts=group.max_size,
                    rollback=release.source is ReleaseSource.ROLLBACK,
                    instance_ids=_last_stage_targets(ad, config, release),
                )
    except DeployerError as exc:
        if not is_transient(exc):
            return CannotStart(str(exc))
        if not resumed and (not sending or was_refused(exc)):
            # Nothing was sent under this claim nor before it (a throttle is a refusal; a 5xx
            # or a timeout may have created the command): let the platform's retry (a new
            # invocation) start at once instead of waiting for the claim to go stale.
            _drop_claim(ad, release, token)
        raise
    # Sent: from here on a failure keeps the claim, so whoever resumes looks the command up.
    if task is not None:
        return _task_sent(ad, release, *task)
    assert command_id is not None
    ad.releases.set_fields(app, release.release, command_id=command_id, launch_template_version=version)
    count(Metric.DEPLOY_STARTED)
    _prune_versions(ad, config, group, version)
    return Sent(command_id, version)


def _last_stage_targets(ad: Adapters, config: AppConfig, release: Release) -> list[str] | None:
    """A staged release's last stage goes to every InService instance by id, the hosts of
    earlier stages too (they answer "already live" and, the command carrying no `keepStandby`,
    remove their standby). None (the group's tag, which reaches the same hosts): no stage took a
    host yet, or the group has more instances than one command takes by id."""
    if not release.stage_hosts:
        return None
    zones = ad.hooks.in_service_zones(config.auto_scaling_group)
    plan = config.rollout.stages
    every = stages.stage_targets(plan, len(plan), zones, release.stage_hosts)
    return every if 0 < len(every) <= MAX_INSTANCE_IDS else None


@dataclass(frozen=True)
class StageSent:
    """A stage's command is out (sent now, or found sent by an invocation that died); None: the
    stage adds no host (the fleet already has that many on the release)."""

    stage: int
    command_id: str | None
    instance_ids: list[str]


def send_stage(
    ad: Adapters, config: AppConfig, release: Release, token: str
) -> StageSent | Busy | CannotStart:
    """Send a staged release's current stage (not the last) once, under the release's claim, to
    the instances `stages.stage_targets` chooses, with `keepStandby` (each host keeps the stable
    release's container warm for an instant abort); a claim taken over looks the command up by
    its comment first. Pointer, launch template and group do not move."""
    app = config.app
    index = release.stage or 0
    taken = list(release.stage_hosts or [])
    resumed = False
    sending = False
    try:
        if release.send_claim != token:
            before = ad.releases.claim_send(app, release.release, token, ad.state.now(), SEND_CLAIM_SECONDS)
            if before is None:
                return Busy()
            resumed = before.send_claim is not None
        comment = markers.stage_comment(app, release.release, index)
        found = None
        if resumed:
            found = ad.fleet.find_sent(comment, (release.deploy_started_at or utcnow()) - FIND_WINDOW)
        if found is None:
            zones = ad.hooks.in_service_zones(config.auto_scaling_group)
            targets = stages.stage_targets(config.rollout.stages, index, zones, taken)[:MAX_INSTANCE_IDS]
            if not targets:
                return StageSent(index, None, [])
            sending = True
            command_id = ad.fleet.send_swap(
                config,
                builders.swap_parameters(config, release, keep_standby=True),
                comment,
                hosts=len(targets),
                instance_ids=targets,
            )
            found = (command_id, targets)
    except DeployerError as exc:
        if not is_transient(exc):
            return CannotStart(str(exc))
        if not resumed and (not sending or was_refused(exc)):
            _drop_claim(ad, release, token)
        raise
    command_id, sent_to = found
    hosts = taken + [i for i in sent_to if i not in taken]
    ad.releases.set_fields(
        app,
        release.release,
        stage=index,
        stage_state=STAGE_RUNNING,
        stage_command_id=command_id,
        stage_hosts=hosts,
    )
    logger.info(
        "stage sent", app=app, release=release.release, stage=index, command_id=command_id, hosts=sent_to
    )
    return StageSent(index, command_id, sent_to)


def _task_sent(ad: Adapters, release: Release, command_id: str, instance_id: str) -> TaskSent:
    app, number = release.app, release.release
    ad.releases.set_fields(app, number, task_command_id=command_id, task_instance=instance_id)
    logger.info("release task sent", app=app, release=number, command_id=command_id, instance_id=instance_id)
    return TaskSent(command_id, instance_id)


def _drop_claim(ad: Adapters, release: Release, token: str) -> None:
    try:
        ad.releases.drop_claim(release.app, release.release, token)
    except DeployerError as exc:
        logger.warning("send claim not dropped; it goes stale", app=release.app, error=str(exc))


@dataclass
class Drift:
    """What `realign` found out of place and put back."""

    pointer: dict[str, int | None] | None = None
    launch_template_version: dict[str, int] | None = None
    group_error: str | None = None

    @property
    def repaired(self) -> int:
        return (self.pointer is not None) + (self.launch_template_version is not None)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.pointer is not None:
            found["pointer"] = self.pointer
        if self.launch_template_version is not None:
            found["launch_template_version"] = self.launch_template_version
        if self.group_error is not None:
            found["group_error"] = self.group_error
        return found


def realign(ad: Adapters, config: AppConfig, desired: Release | None) -> Drift:
    """Pointer and group on `desired` (None: no release is desired, so no pointer)."""
    app = config.app
    drift = Drift()
    pointer = ad.pointer.get(app)
    if desired is None:
        if pointer is not None:
            ad.pointer.delete(app)
            drift.pointer = {"pointer": pointer.release, "desired": None}
        return drift
    if pointer is None or pointer.release != desired.release:
        ad.pointer.put(Pointer.for_release(desired))
        drift.pointer = {"pointer": pointer.release if pointer else None, "desired": desired.release}
    if desired.launch_template_version is None:
        return drift
    try:
        group = ad.launch_templates.current(config)
        if group.version != desired.launch_template_version:
            ad.launch_templates.point_group(group, desired.launch_template_version)
            drift.launch_template_version = {
                "group": group.version,
                "release": desired.launch_template_version,
            }
    except DeployerError as exc:
        if is_transient(exc):
            raise
        # The group is gone or no longer on the app's template: nothing to move back (the
        # reconciler repairs it toward `desired` once it is fixed). Raising would hold the
        # notices owed and every later trigger of the app.
        logger.warning("group not put back", app=app, desired=desired.release, error=str(exc))
        drift.group_error = str(exc)
    return drift


def _prune_versions(ad: Adapters, config: AppConfig, group: GroupTemplate, latest: int) -> None:
    """Delete launch-template versions no release needs any more. Best effort: the deploy has
    started, and a version left behind now is deleted by a later deploy."""
    if latest <= KEEP_NEWEST_VERSIONS:
        return
    try:
        recent = ad.releases.list_recent(config.app, limit=KEEP_NEWEST_VERSIONS + 4 * config.retain)
        retained = [
            r.launch_template_version
            for r in recent
            if r.status in _MAY_BE_RETAINED and r.launch_template_version is not None
        ][: config.retain]
        deleted = ad.launch_templates.prune(group, config.app, latest, KEEP_NEWEST_VERSIONS, retained)
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
