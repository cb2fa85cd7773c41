"""What decisions read, read before deciding: how a command ended, how the release task ended,
the rollback target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.agent_contract import parse_summary
from deployer.controller.types import Ending, TaskEnding
from deployer.errors import ImageNotFound
from deployer.models.ssm_status import SsmStatus
from deployer.observability import logger
from deployer.verdicts import Verdict, command_detail, command_verdict, rollback_candidates

if TYPE_CHECKING:
    from deployer.models.config import AppConfig
    from deployer.models.records import Release
    from deployer.wiring import Adapters


def ending(
    ad: Adapters, release: Release, hint: tuple[str, SsmStatus] | None, command_id: str | None = None
) -> Ending | None:
    """How the release's command (or `command_id`: one of its stages') ended, or None while it
    runs. `hint`: a terminal status an SSM event reported for a command (SSM's own listing may
    lag behind its event)."""
    command = command_id or release.command_id
    assert command is not None
    counts = ad.results.counts(command)
    reported = hint[1] if hint is not None and hint[0] == command else None
    # While the command is not listed, a Success is not taken on the event's word alone: only the
    # listing says how many hosts it reached (none at all is no success); a later trigger decides.
    if counts is None and reported is SsmStatus.SUCCESS:
        reported = None
    listed = None
    if counts is not None:
        listed = SsmStatus.parse(counts.status_details) or SsmStatus.parse(counts.status)
    if listed is not None and listed.terminal:
        status = listed
    elif reported is not None and reported.terminal:
        status = reported  # the event is ahead of SSM's listing
    else:
        return None
    tally = None
    if counts is not None and command_detail(status, counts) is not SsmStatus.SUCCESS:
        # Only a command that is not a plain Success needs the per-host StatusDetails.
        tally = ad.results.tally(command)
    verdict, reason = command_verdict(status, counts, tally)
    classes: frozenset[str | None] = frozenset()
    if verdict is not Verdict.SUCCEEDED:
        # Whether the image is to blame depends on how the hosts failed (a host that could not
        # fetch the release's config never ran it); outcomes not recorded yet count as unknown.
        classes = frozenset(
            o.failure_class for o in ad.host_outcomes.for_release(release.key) if o.status != "Success"
        )
    return Ending(status, counts, tally, verdict, reason, classes)


def task_ending(ad: Adapters, release: Release) -> TaskEnding | None:
    """How the release's task command ended on its one instance, or None while it runs (or
    while SSM does not list its invocation yet: a later trigger reads again)."""
    assert release.task_command_id is not None
    assert release.task_instance is not None
    invocation = ad.results.invocation(release.task_command_id, release.task_instance)
    if invocation is None:
        return None
    status = SsmStatus.parse(invocation.status_details) or SsmStatus.parse(invocation.status)
    if status is None or not status.terminal:
        return None
    return TaskEnding(
        invocation.status_details or invocation.status,
        invocation.response_code,
        parse_summary(invocation.stdout),
    )


def rollback_target(ad: Adapters, config: AppConfig, failed: Release) -> Release | None:
    """The newest release before `failed` that succeeded with another image still in ECR (the
    automatic and the operator rollback both choose so)."""
    history = ad.releases.succeeded_before(config.app, failed.release)
    for candidate in rollback_candidates(history, failed):
        try:
            ad.images.by_digest(config.repository, candidate.digest)
        except ImageNotFound:
            logger.warning(
                "rollback candidate's image is gone from ECR; trying an older one",
                app=config.app,
                release=candidate.release,
            )
            continue
        return candidate
    return None
