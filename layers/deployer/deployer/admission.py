"""Push acceptance: an ECR push becomes a release of every app deploying from the repository.

Tag filter, refused (previously failed) digests and the pause flag decide; the release is
recorded with the app's counter and the push's admission marker in one transaction
(`controller.admit`), so a push delivered again after a crash is the same release. A release
that can start is driven by `controller.converge`; otherwise it waits PENDING (a newer pending
release supersedes older ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deployer import controller, markers
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.observability import Metric, count, logger

if TYPE_CHECKING:
    from deployer.models.config import AppConfig
    from deployer.models.events import EcrImageAction
    from deployer.wiring import Adapters


class PushAction(StrEnum):
    STARTED = "started"
    PENDING = "pending"
    IGNORED = "ignored"
    REFUSED = "refused"
    SUPERSEDED = "superseded"
    FAILED = "failed"  # recorded, but could not start (the reason says why); the app moved on


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


def image_reference(config: AppConfig, registry: str, digest: str) -> str:
    return f"{config.registry or registry}/{config.repository}@{digest}"


def accept_push(ad: Adapters, event: EcrImageAction) -> PushOutcome:
    """Turn one validated ECR push into releases (one per app using the repository)."""
    detail = event.detail
    outcome = PushOutcome(
        event_id=event.id, repository=detail.repository_name, digest=detail.image_digest, tag=detail.image_tag
    )
    configs = ad.apps.find_by_repository(detail.repository_name)
    if not configs:
        logger.info("push ignored: no app deploys this repository", repository=detail.repository_name)
        count(Metric.PUSH_IGNORED)
        return outcome
    token = controller.new_token()
    results = tuple(_accept_for_app(ad, config, event, token) for config in configs)
    return PushOutcome(**{**vars(outcome), "results": results})


def _accept_for_app(ad: Adapters, config: AppConfig, event: EcrImageAction, token: str) -> AppPushResult:
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
    admitted = controller.admit(
        ad,
        config,
        image=image_reference(config, event.registry, detail.image_digest),
        digest=detail.image_digest,
        tag=detail.image_tag,
        source=ReleaseSource.PUSH,
        reason=f"push of {detail.image_tag}",
        token=token,
        marker=markers.admission_key(config.app, config.repository, detail.image_digest, detail.image_tag),
        pushed_at=event.time,
        event_id=event.id,
    )
    return follow_admission(ad, config, admitted, token)


def follow_admission(
    ad: Adapters, config: AppConfig, admitted: controller.Admitted, token: str
) -> AppPushResult:
    """After a release was recorded: drive it, or leave it pending (and supersede what it makes
    pointless)."""
    app = config.app
    if admitted.release is None:
        logger.warning("push refused: this digest failed before; deploy it explicitly to retry", app=app)
        count(Metric.PUSH_REFUSED)
        return AppPushResult(app, PushAction.REFUSED, "digest failed before and is refused")
    number = admitted.release
    if admitted.failed:
        return AppPushResult(app, PushAction.FAILED, admitted.reason, number)
    if admitted.superseded:
        logger.info("push arrived after a newer one: recorded superseded", app=app, release=number)
        return AppPushResult(app, PushAction.SUPERSEDED, "a newer push arrived first", number)
    if admitted.started or admitted.replayed:
        report = controller.converge(ad, app, config=config, token=token, known=admitted.known)
        if report.release == number and report.command_id is None and not admitted.replayed:
            failed = ad.releases.get(app, number)
            if failed.status is not ReleaseStatus.DEPLOYING:
                why = failed.status_reason or "deploy did not start"
                return AppPushResult(app, PushAction.FAILED, why, number)
        if report.release == number:
            return AppPushResult(app, PushAction.STARTED, "deploy started", number, report.command_id)
        if admitted.replayed:
            earlier = ad.releases.get(app, number)
            why = f"admitted before as release {number} ({earlier.status.value})"
            return AppPushResult(app, PushAction.IGNORED, why, number)
        return AppPushResult(app, PushAction.PENDING, "recorded; the app is busy", number)
    why = "app is paused" if admitted.paused else "another deploy is in progress"
    logger.info("release pending", app=app, release=number, why=why)
    count(Metric.PUSH_PENDING)
    controller.supersede_older_pending(ad, app, newer_than=number)
    return AppPushResult(app, PushAction.PENDING, why, number)
