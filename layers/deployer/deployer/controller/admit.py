"""Admission: a new release recorded with the app's counter (and a push's admission marker) in
one decision, started now or left PENDING; and the PENDING releases a newer one makes pointless."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from deployer.adapters.config_versions import SecretNotResolvable
from deployer.adapters.transactions import Refused
from deployer.controller import decisions
from deployer.controller.loop import commit, now
from deployer.errors import AwsCallFailed
from deployer.models.records import Release, ReleaseSource, ReleaseStatus
from deployer.observability import logger

if TYPE_CHECKING:
    from deployer.adapters.app_state import AppStateRecord
    from deployer.models.config import AppConfig
    from deployer.models.release_config import ReleaseConfig
    from deployer.wiring import Adapters

# Decisions tried when other writers keep moving the app's state.
ADMIT_ATTEMPTS = 8


@dataclass(frozen=True)
class Admitted:
    release: int | None  # None: the digest is refused
    started: bool = False
    replayed: bool = False  # admitted before (a redelivery): `release` is the earlier answer
    paused: bool = False
    superseded: bool = False  # arrived after a newer push: recorded SUPERSEDED
    failed: bool = False  # a secret could not be pinned: recorded FAILED, nothing deploys
    reason: str = ""  # why it failed
    # A start: the state and the release exactly as written (converge's first round reads neither).
    known: tuple[AppStateRecord, Release] | None = None


def admit(
    ad: Adapters,
    config: AppConfig,
    *,
    image: str,
    digest: str,
    tag: str | None,
    source: ReleaseSource,
    reason: str,
    token: str,
    marker: str | None = None,
    operator: bool = False,
    rollback_of: int | None = None,
    pushed_at: datetime | None = None,
    event_id: str | None = None,
    state: AppStateRecord | None = None,
    config_pin: ReleaseConfig | None = None,
    with_task: bool = False,
    staged: bool = False,
) -> Admitted:
    """Record a release (decisions.admission). A push's second delivery finds its marker and
    answers the release it was.

    The release pins `config_pin` (a rollback's target's config), else the app's environment
    and each secret's version current now (read here, before the decision; never a value). A
    secret that cannot be described for good records a push's release FAILED, and refuses an
    operator's deploy with nothing written (SecretNotResolvable); a transient error raises."""
    app = config.app
    unresolved: str | None = None
    if config_pin is None:
        try:
            config_pin = ad.config_versions.resolve(config)
        except SecretNotResolvable as exc:
            if operator:
                raise
            unresolved = str(exc)
            logger.warning("release not deployable: a secret could not be pinned", app=app, error=unresolved)
    for _ in range(ADMIT_ATTEMPTS):
        # The caller's fresh read serves the first attempt; a refused write reads again.
        state = state or ad.state.get(app)
        decision = decisions.admission(
            config,
            state,
            image=image,
            digest=digest,
            tag=tag,
            source=source,
            reason=reason,
            token=token,
            now=now(ad),
            marker=marker,
            operator=operator,
            rollback_of=rollback_of,
            pushed_at=pushed_at,
            event_id=event_id,
            config_pin=config_pin,
            unresolved=unresolved,
            with_task=with_task,
            staged=staged,
        )
        if decision is None:
            return Admitted(None)
        (release,) = decision.creates
        try:
            commit(ad, decision, f"recording release {release.release} of {app}")
        except Refused as refused:
            if marker and "admission" in refused.labels:
                earlier = ad.admissions.release_of(marker)
                logger.info("push admitted before; carrying on with it", app=app, release=earlier)
                return Admitted(earlier, replayed=True)
            state = None
            continue
        started = decision.started == release.release
        assert decision.change is not None
        return Admitted(
            release.release,
            started=started,
            paused=state.paused,
            superseded=release.status is ReleaseStatus.SUPERSEDED,
            failed=release.status is ReleaseStatus.FAILED,
            reason=release.status_reason if release.status is ReleaseStatus.FAILED else "",
            known=(decision.change.applied_to(state), release) if started else None,
        )
    raise AwsCallFailed(f"could not record a release of {app}: its state kept changing")


def supersede_older_pending(ad: Adapters, app: str, newer_than: int) -> list[int]:
    """Mark PENDING releases older than `newer_than` SUPERSEDED, in one decision."""
    for _ in range(ADMIT_ATTEMPTS):
        decision = decisions.supersede(app, ad.releases.pending(app), newer_than)
        if decision is None:
            return []
        try:
            commit(ad, decision)
        except Refused:
            continue  # one of them started or was superseded meanwhile: read again
        return [t.release for t in decision.transitions]
    return []
