"""Pure decisions of the controller: a command's verdict, a host's outcome, a rollback's target,
which pending release starts. No AWS calls, no clock: inputs in, decision out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum

from deployer import markers
from deployer.adapters.command_results import CommandCounts, InvocationResult, InvocationTally
from deployer.agent_contract import IMAGE_INNOCENT_CLASSES, SERVING_OUTCOMES, AgentSummary, parse_summary
from deployer.models.records import HostOutcome, Release, ReleaseSource, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.notify import HostResult


class Verdict(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def command_detail(status: SsmStatus, counts: CommandCounts | None) -> SsmStatus:
    """The command's terminal status in SSM's finer vocabulary.

    The EventBridge event carries the coarse `Status` (Success, Failed, TimedOut, Cancelled):
    an Incomplete command, or one whose hosts were terminated, also reads Failed there. ListCommands'
    StatusDetails says which; the event's status stands only when SSM has nothing terminal yet."""
    if counts is not None:
        detail = SsmStatus.parse(counts.status_details) or SsmStatus.parse(counts.status)
        if detail is not None and detail.terminal:
            return detail
    return status


def command_verdict(
    status: SsmStatus, counts: CommandCounts | None, tally: InvocationTally | None = None
) -> tuple[Verdict, str]:
    """The release's fate from the command's terminal status (table in docs/lifecycle.md).

    `tally` (the invocations by StatusDetails) decides every command that is not a plain Success:
    a release fails only when a host that ran it failed or timed out, when the command was
    cancelled, or when no host ran it at all. Hosts SSM never reached (Delivery Timed Out,
    Undeliverable: e.g. an instance scaled in mid-deploy) or never sent to (Terminated) say
    nothing about the release; the reconciler re-sends to them."""
    detail = command_detail(status, counts)
    if detail is SsmStatus.NO_INSTANCES_IN_TAG or (
        counts is not None and counts.target_count == 0 and detail is SsmStatus.SUCCESS
    ):
        # SSM ends a tag-targeted command that matched no managed node "No Instances In Tag"
        # (Run Command's command statuses), with TargetCount 0: no host ran the release. Only an
        # empty group makes that a success (its instances will boot the release); instances SSM
        # could not target keep the old one.
        if counts is not None and counts.group_instances == 0:
            return Verdict.SUCCEEDED, EMPTY_GROUP_REASON
        return Verdict.FAILED, NO_TARGETS_REASON
    if detail is SsmStatus.SUCCESS:
        return Verdict.SUCCEEDED, "every targeted host is live on the release"
    refused = {
        SsmStatus.RATE_EXCEEDED: "SSM refused the command (rate exceeded); no host ran it",
        SsmStatus.ACCESS_DENIED: "SSM was denied running the command",
        SsmStatus.CANCELLED: "the command was cancelled",
    }
    if detail in refused:
        return Verdict.FAILED, refused[detail]
    if tally is None:
        # Without SSM's per-host answer only the coarse status is left, and it cannot tell a
        # failed host from an unreachable one: fail safe.
        return Verdict.FAILED, _COARSE_REASONS.get(detail, f"the command ended {detail.value}")
    if tally.failed:
        return Verdict.FAILED, f"{tally.failed} host(s) failed or timed out running the release"
    if tally.cancelled:
        return Verdict.FAILED, f"the command was cancelled before {tally.cancelled} host(s) ran it"
    skipped = tally.unreached + tally.stopped
    if tally.succeeded == 0:
        return Verdict.FAILED, f"no host ran the release: {skipped} host(s) were not reached"
    if skipped:
        return (
            Verdict.SUCCEEDED,
            f"live on the {tally.succeeded} host(s) SSM reached; {skipped} not reached "
            "(undeliverable or delivery timed out) are left to the reconciler",
        )
    return Verdict.SUCCEEDED, "every host that ran the release is live on it"


EMPTY_GROUP_REASON = (
    "the group has no instance yet: nothing to swap; the instances it launches boot the release"
)
NO_TARGETS_REASON = (
    "the command reached no host (SSM: No Instances In Tag): the group's instances are not managed "
    "by SSM (agent running, host role with AmazonSSMManagedInstanceCore, a route to SSM; "
    "`deployer doctor` checks them)"
)

_COARSE_REASONS = {
    SsmStatus.FAILED: "MaxErrors or more host(s) failed",
    SsmStatus.INCOMPLETE: "some host(s) did not succeed",
    SsmStatus.TIMED_OUT: "the command timed out on the fleet",
    SsmStatus.EXECUTION_TIMED_OUT: "the command timed out on the fleet",
    SsmStatus.DELIVERY_TIMED_OUT: "the command was not delivered to MaxErrors or more host(s)",
    SsmStatus.UNDELIVERABLE: "the command could not be delivered to the fleet",
    SsmStatus.TERMINATED: "the targeted instances were terminated",
}


# Invocation status -> failure class when the agent's summary cannot say more.
_INVOCATION_CLASS = {
    SsmStatus.TIMED_OUT: "timeout",
    SsmStatus.EXECUTION_TIMED_OUT: "timeout",
    SsmStatus.DELIVERY_TIMED_OUT: "unreached",
    SsmStatus.UNDELIVERABLE: "unreached",
    SsmStatus.TERMINATED: "unreached",
    SsmStatus.CANCELLED: "cancelled",
    SsmStatus.ACCESS_DENIED: "unknown",
    SsmStatus.RATE_EXCEEDED: "unreached",
}


def host_outcome(
    app: str, release: int, instance_id: str, status: SsmStatus, invocation: InvocationResult | None
) -> HostOutcome:
    """One host's outcome: the agent's summary when it printed one, else SSM's StatusDetails.

    The event's status is coarse (an Undeliverable or Terminated invocation reads Failed there);
    GetCommandInvocation's StatusDetails tells an unreached host from a failed one."""
    detail = SsmStatus.parse(invocation.status_details) if invocation else None
    if detail is not None and detail.terminal:
        status = detail
    summary: AgentSummary | None = parse_summary(invocation.stdout) if invocation else None
    if summary is not None:
        failure = None if summary.failure_class.value == "none" else summary.failure_class.value
        return HostOutcome(
            release_key=markers.release_key(app, release),
            instance_id=instance_id,
            app=app,
            release=release,
            status=status.value,
            exit_code=summary.exit_code,
            failure_class=failure,
            message=summary.message,
            summary=summary.model_dump(mode="json"),
        )
    failure_class = None if status is SsmStatus.SUCCESS else _INVOCATION_CLASS.get(status, "unknown")
    message = {
        None: "SSM reports success; the agent printed no summary",
        "unreached": f"SSM could not run the command on this host ({status.value})",
        "timeout": "the swap did not finish before the command timeout",
        "cancelled": "the command was cancelled",
    }.get(failure_class, "the swap failed and the agent printed no readable summary")
    return HostOutcome(
        release_key=markers.release_key(app, release),
        instance_id=instance_id,
        app=app,
        release=release,
        status=status.value,
        exit_code=invocation.response_code if invocation else None,
        failure_class=failure_class,
        message=message,
    )


def serving(outcome: HostOutcome) -> bool:
    """Whether the host serves the outcome's release (the agent's summary says live or already
    live, including a live release whose cleanup left a warning)."""
    if outcome.summary is not None:
        return outcome.summary.get("outcome") in SERVING_OUTCOMES
    return outcome.status == SsmStatus.SUCCESS.value


def host_counts(
    status: SsmStatus, counts: CommandCounts | None, tally: InvocationTally | None
) -> tuple[int | None, int | None]:
    """(hosts serving, hosts failed). CompletedCount also holds Undeliverable, Terminated and
    Cancelled invocations, so only a Success command's count is all serving hosts."""
    if tally is not None:
        return tally.succeeded, tally.failed
    if counts is not None and command_detail(status, counts) is SsmStatus.SUCCESS:
        return counts.completed_count, 0
    return None, None


def may_roll_back_to(candidate: Release, failed: Release) -> bool:
    """Whether `candidate` can be what `failed` is rolled back to: an older release that
    succeeded, running a different image or config (the same image with the same config would
    fail the same way; a failed config-only release goes back to the config before it)."""
    return (
        candidate.status is ReleaseStatus.SUCCEEDED
        and candidate.release < failed.release
        and (candidate.digest != failed.digest or candidate.config != failed.config)
    )


def rollback_candidates(history: Iterable[Release], failed: Release) -> Iterator[Release]:
    """Rollback targets for `failed` from a newest-first history, in that order; the caller takes
    the first whose image is still in the registry (lazily: most rollbacks read one page)."""
    return (r for r in history if may_roll_back_to(r, failed))


def rolls_back_automatically(release: Release, auto_rollback: bool) -> bool:
    """A failed release is rolled back when the app says so, unless it is itself a rollback:
    rolling a failed rollback back again would walk back through the history while a host keeps
    failing; an operator decides then."""
    return auto_rollback and release.source is not ReleaseSource.ROLLBACK


def blames_image(release: Release, failure_classes: Iterable[str | None] = ()) -> bool:
    """Whether a failed release's image is to blame (its digest is then refused).

    A failed rollback ran an image that succeeded before, and a failed config-only release the
    image already running: hosts, infrastructure or the config are suspect, not the image, which
    stays allowed. `failure_classes` are the failed hosts' classes, when known: hosts that all
    failed fetching the release's pinned config (`config`) never ran the image, so it stays
    allowed too; any other class, or none known, blames it."""
    if release.source in (ReleaseSource.ROLLBACK, ReleaseSource.CONFIG):
        return False
    classes = set(failure_classes)
    return not classes or not classes <= IMAGE_INNOCENT_CLASSES


def next_pending(pending: Iterable[Release], paused: bool) -> tuple[Release | None, list[Release]]:
    """The pending release to start (the newest) and the older ones it supersedes; nothing
    starts while the app is paused."""
    ordered = sorted(pending, key=lambda r: r.release)
    if paused or not ordered:
        return None, []
    return ordered[-1], ordered[:-1]


def host_result(outcome: HostOutcome) -> HostResult:
    return HostResult(
        instance_id=outcome.instance_id,
        ok=serving(outcome),
        failure_class=outcome.failure_class or "none",
        message=outcome.message,
    )
