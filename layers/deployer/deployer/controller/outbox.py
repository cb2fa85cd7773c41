"""Notices owed for recorded transitions (the outbox): published after the decision that owes
them, struck off once published; a notice that cannot be published never holds a deploy up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.errors import DeployerError
from deployer.markers import OutboxEntry
from deployer.metrics_names import DeployMetric
from deployer.notify import DeployNotice, NoticeKind, summarize_hosts
from deployer.observability import count, logger
from deployer.verdicts import host_result

if TYPE_CHECKING:
    from deployer.models.records import Release
    from deployer.wiring import Adapters

# A release's start is announced before its end (both owed when the start's publish failed).
_ORDER = [
    k.value
    for k in (
        NoticeKind.STARTED,
        NoticeKind.STAGE_PASSED,
        NoticeKind.STAGE_AWAITING,
        NoticeKind.SUCCEEDED,
        NoticeKind.FAILED,
        NoticeKind.ROLLED_BACK,
    )
]


def drain_outbox(ad: Adapters, app: str, entries: frozenset[str]) -> int:
    """Publish every notice owed, then strike it off; returns how many were published. A notice
    that cannot be published stays owed (the next converge, at the latest the reconciler's tick,
    tries again)."""
    published = 0
    for raw in sorted(entries, key=outbox_order):
        entry = OutboxEntry.decode(raw)
        try:
            release = ad.releases.get_or_none(app, entry.release) if entry else None
            if entry is not None and release is not None:
                ad.notifier.publish(notice_for(ad, release, entry), entry.dedupe_id(app))
                published += 1
            ad.state.outbox_done(app, raw)
        except DeployerError as exc:
            logger.error("notice not sent; it stays owed", app=app, entry=raw, error=str(exc))
            count(DeployMetric.NOTICES_OWED)
    return published


def outbox_order(raw: str) -> tuple[int, int]:
    """Oldest release first; within a release, its start before its end."""
    entry = OutboxEntry.decode(raw)
    if entry is None:
        return (0, 0)
    return (entry.release, _ORDER.index(entry.kind) if entry.kind in _ORDER else len(_ORDER))


def notice_for(ad: Adapters, release: Release, entry: OutboxEntry) -> DeployNotice:
    kind = NoticeKind(entry.kind)
    base = {
        "app": release.app,
        "release": release.release,
        "tag": release.tag,
        "digest": release.digest,
        "source": release.source.value,
    }
    if kind is NoticeKind.STARTED:
        return DeployNotice(kind=kind, reason=release.reason, **base)
    if kind in (NoticeKind.STAGE_PASSED, NoticeKind.STAGE_AWAITING):
        hosts = list(release.stage_hosts or [])
        return DeployNotice(
            kind=kind,
            reason=release.status_reason,
            stage=(entry.rolled_back_to or 0) + 1,
            stage_hosts=hosts,
            hosts_ok=len(hosts),
            **base,
        )
    duration = None
    if release.deploy_started_at is not None and release.finished_at is not None:
        duration = max((release.finished_at - release.deploy_started_at).total_seconds(), 0.0)
    succeeded = kind is NoticeKind.SUCCEEDED
    outcomes = [] if succeeded else ad.host_outcomes.for_release(release.key)
    ok, failed, classes, top = summarize_hosts(host_result(o) for o in outcomes)
    return DeployNotice(
        kind=kind,
        reason=release.status_reason,
        duration_seconds=duration,
        hosts_ok=release.hosts_ok if release.hosts_ok is not None else ok,
        hosts_failed=release.hosts_failed if release.hosts_failed is not None else failed,
        hosts_unreached=classes.get("unreached", 0),
        failure_classes=classes,
        top_failure=top or (None if succeeded else release.status_reason),
        rolled_back_to=entry.rolled_back_to,
        **base,
    )
