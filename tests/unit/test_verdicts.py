"""The controller's pure decisions (deployer.verdicts): a command's verdict and its reason, a
host's outcome, the hosts counted, rollback targets, which pending release starts. Inputs in,
decision out: every assertion is on what the function returns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deployer.adapters.command_results import CommandCounts, InvocationResult, InvocationTally
from deployer.models.records import HostOutcome, Release, ReleaseSource, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.verdicts import (
    Verdict,
    blames_image,
    command_detail,
    command_verdict,
    host_counts,
    host_outcome,
    host_result,
    may_roll_back_to,
    next_pending,
    rollback_candidates,
    rolls_back_automatically,
    serving,
)

from tests.conftest import digest_of as numbered_digest
from tests.conftest import make_release

pytestmark = pytest.mark.unit

HOST = "i-0123456789abcdef0"


def counts(status: str, details: str = "", completed: int = 3) -> CommandCounts:
    return CommandCounts(
        command_id="c", status=status, status_details=details, target_count=3, completed_count=completed
    )


def invocation(
    details: str, stdout: str = "", code: int | None = None, status: str = "Failed"
) -> InvocationResult:
    return InvocationResult(
        command_id="c",
        instance_id=HOST,
        status=status,
        status_details=details,
        response_code=code,
        stdout=stdout,
    )


def summary(**fields: Any) -> str:
    line = {
        "agent": "deployer",
        "version": 1,
        "host": HOST,
        "app": "web",
        "release": 3,
        "outcome": "live",
        "failure_class": "none",
        "exit_code": 0,
        "message": "live on release 3",
    }
    line.update(fields)
    return f"pulling\n{json.dumps(line)}\n"


def release(
    number: int,
    status: ReleaseStatus = ReleaseStatus.SUCCEEDED,
    digest_of: int | None = None,
    source: ReleaseSource = ReleaseSource.PUSH,
) -> Release:
    digest = None if digest_of is None else numbered_digest(digest_of)
    return make_release(number, digest=digest, tag=None, status=status, source=source)


# ------------------------------------------------------------------ command_detail
def test_the_command_s_status_details_say_more_than_the_event_s_coarse_status() -> None:
    # An Incomplete command reads Failed in the event and in Status; StatusDetails says which
    assert command_detail(SsmStatus.FAILED, counts("Failed", "Incomplete")) is SsmStatus.INCOMPLETE


def test_without_status_details_the_command_s_status_stands() -> None:
    assert command_detail(SsmStatus.FAILED, counts("Success", "")) is SsmStatus.SUCCESS


def test_a_command_ssm_still_runs_leaves_the_event_s_status() -> None:
    assert command_detail(SsmStatus.TIMED_OUT, counts("InProgress", "In Progress")) is SsmStatus.TIMED_OUT
    assert command_detail(SsmStatus.TIMED_OUT, counts("", "")) is SsmStatus.TIMED_OUT
    assert command_detail(SsmStatus.CANCELLED, None) is SsmStatus.CANCELLED


# ------------------------------------------------------------------ command_verdict
def test_a_success_command_succeeds_whatever_the_event_said() -> None:
    assert command_verdict(SsmStatus.FAILED, counts("Success", "Success")) == (
        Verdict.SUCCEEDED,
        "every targeted host is live on the release",
    )


@pytest.mark.parametrize(
    ("status", "details"),
    [("Success", "No Instances In Tag"), ("Failed", "No Instances In Tag"), ("Success", "Success")],
)
def test_a_command_that_matched_no_managed_host_fails_and_never_says_every_host_is_live(
    status: str, details: str
) -> None:
    # Given a tag-targeted command SSM resolved to no managed node (TargetCount 0) while the
    # group has instances, or while their number is unknown
    listed = CommandCounts(
        command_id="c", status=status, status_details=details, target_count=0, group_instances=3
    )
    unknown = listed.model_copy(update={"group_instances": None})

    # Then the release fails, naming why no host ran it, whatever the event said
    verdict, reason = command_verdict(SsmStatus.SUCCESS, listed, InvocationTally())
    assert verdict is Verdict.FAILED
    assert reason.startswith("the command reached no host (SSM: No Instances In Tag)")
    assert command_verdict(SsmStatus.SUCCESS, listed) == (verdict, reason)
    assert command_verdict(SsmStatus.SUCCESS, unknown) == (verdict, reason)


def test_a_command_to_a_group_without_instances_succeeds_saying_there_was_nothing_to_swap() -> None:
    # Given the group-tag command of a group that has no instance yet
    listed = CommandCounts(
        command_id="c",
        status="Success",
        status_details="No Instances In Tag",
        target_count=0,
        group_instances=0,
    )

    # Then the release succeeds, and says why no host ran it
    assert command_verdict(SsmStatus.SUCCESS, listed) == (
        Verdict.SUCCEEDED,
        "the group has no instance yet: nothing to swap; the instances it launches boot the release",
    )


def test_ssm_s_spellings_of_no_instances_in_tag_parse_as_one_terminal_status() -> None:
    for spelling in ("No Instances In Tag", "NoInstancesInTag"):
        assert SsmStatus.parse(spelling) is SsmStatus.NO_INSTANCES_IN_TAG
    assert SsmStatus.NO_INSTANCES_IN_TAG.terminal


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ("Rate Exceeded", "SSM refused the command (rate exceeded); no host ran it"),
        ("Access Denied", "SSM was denied running the command"),
        ("Cancelled", "the command was cancelled"),
    ],
)
def test_a_refused_or_cancelled_command_fails_whatever_the_hosts_did(details: str, reason: str) -> None:
    tally = InvocationTally(succeeded=3)
    assert command_verdict(SsmStatus.FAILED, counts("Failed", details), tally) == (Verdict.FAILED, reason)


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ("Failed", "MaxErrors or more host(s) failed"),
        ("Incomplete", "some host(s) did not succeed"),
        ("TimedOut", "the command timed out on the fleet"),
        ("Execution Timed Out", "the command timed out on the fleet"),
        ("Delivery Timed Out", "the command was not delivered to MaxErrors or more host(s)"),
        ("Undeliverable", "the command could not be delivered to the fleet"),
        ("Terminated", "the targeted instances were terminated"),
    ],
)
def test_without_the_hosts_answers_a_command_that_did_not_succeed_fails_with_ssm_s_reason(
    details: str, reason: str
) -> None:
    assert command_verdict(SsmStatus.FAILED, counts("Failed", details)) == (Verdict.FAILED, reason)


def test_without_the_hosts_answers_an_unlisted_status_fails_naming_it() -> None:
    assert command_verdict(SsmStatus.PENDING, None) == (Verdict.FAILED, "the command ended Pending")


@pytest.mark.parametrize(
    ("tally", "verdict", "reason"),
    [
        (
            InvocationTally(succeeded=1, failed=2, unreached=1),
            Verdict.FAILED,
            "2 host(s) failed or timed out running the release",
        ),
        (
            InvocationTally(succeeded=1, cancelled=2, unreached=1),
            Verdict.FAILED,
            "the command was cancelled before 2 host(s) ran it",
        ),
        (
            InvocationTally(unreached=2, stopped=1),
            Verdict.FAILED,
            "no host ran the release: 3 host(s) were not reached",
        ),
        (
            InvocationTally(succeeded=2, unreached=1, stopped=2),
            Verdict.SUCCEEDED,
            "live on the 2 host(s) SSM reached; 3 not reached (undeliverable or delivery timed out) "
            "are left to the reconciler",
        ),
        (
            InvocationTally(succeeded=3),
            Verdict.SUCCEEDED,
            "every host that ran the release is live on it",
        ),
    ],
)
def test_the_hosts_answers_decide_a_command_that_is_not_a_plain_success(
    tally: InvocationTally, verdict: Verdict, reason: str
) -> None:
    assert command_verdict(SsmStatus.FAILED, counts("Failed", "Incomplete"), tally) == (verdict, reason)


# ------------------------------------------------------------------ host_outcome
def test_a_host_s_outcome_is_the_agent_s_summary_when_it_printed_one() -> None:
    line = summary(outcome="failed", failure_class="health", exit_code=5, message="GET /health answered 500")
    outcome = host_outcome("web", 3, HOST, SsmStatus.FAILED, invocation("Failed", line, code=5))
    assert outcome.release_key == "web#3"
    assert (outcome.instance_id, outcome.app, outcome.release) == (HOST, "web", 3)
    assert outcome.status == "Failed"
    assert outcome.exit_code == 5
    assert outcome.failure_class == "health"
    assert outcome.message == "GET /health answered 500"
    assert outcome.summary is not None
    assert (outcome.summary["outcome"], outcome.summary["failure_class"]) == ("failed", "health")
    assert not serving(outcome)


def test_a_live_host_s_summary_has_no_failure_class_and_keeps_the_agent_s_exit_code() -> None:
    # SSM's response code and the agent's exit code differ: the agent's is kept
    outcome = host_outcome("web", 3, HOST, SsmStatus.SUCCESS, invocation("Success", summary(), code=None))
    assert outcome.failure_class is None
    assert outcome.exit_code == 0
    assert outcome.message == "live on release 3"
    assert outcome.status == "Success"
    assert serving(outcome)


def test_the_invocation_s_terminal_status_details_replace_the_event_s_status() -> None:
    outcome = host_outcome("web", 3, HOST, SsmStatus.FAILED, invocation("Undeliverable", code=-1))
    assert outcome.status == "Undeliverable"
    assert outcome.failure_class == "unreached"
    assert outcome.message == "SSM could not run the command on this host (Undeliverable)"
    assert outcome.exit_code == -1
    # a summary line does not stop the finer status from being recorded
    with_summary = host_outcome(
        "web", 3, HOST, SsmStatus.FAILED, invocation("Execution Timed Out", summary())
    )
    assert with_summary.status == "Execution Timed Out"


def test_an_invocation_ssm_still_runs_leaves_the_event_s_status() -> None:
    outcome = host_outcome("web", 3, HOST, SsmStatus.TIMED_OUT, invocation("In Progress", code=None))
    assert outcome.status == "TimedOut"
    assert outcome.failure_class == "timeout"


@pytest.mark.parametrize(
    ("status", "failure_class", "message"),
    [
        (SsmStatus.SUCCESS, None, "SSM reports success; the agent printed no summary"),
        (SsmStatus.EXECUTION_TIMED_OUT, "timeout", "the swap did not finish before the command timeout"),
        (SsmStatus.TIMED_OUT, "timeout", "the swap did not finish before the command timeout"),
        (
            SsmStatus.DELIVERY_TIMED_OUT,
            "unreached",
            "SSM could not run the command on this host (Delivery Timed Out)",
        ),
        (SsmStatus.TERMINATED, "unreached", "SSM could not run the command on this host (Terminated)"),
        (SsmStatus.RATE_EXCEEDED, "unreached", "SSM could not run the command on this host (Rate Exceeded)"),
        (SsmStatus.CANCELLED, "cancelled", "the command was cancelled"),
        (SsmStatus.ACCESS_DENIED, "unknown", "the swap failed and the agent printed no readable summary"),
        (SsmStatus.FAILED, "unknown", "the swap failed and the agent printed no readable summary"),
    ],
)
def test_without_a_summary_a_host_is_classified_from_its_ssm_status(
    status: SsmStatus, failure_class: str | None, message: str
) -> None:
    outcome = host_outcome("web", 3, HOST, status, invocation(status.value, "no summary here\n", code=7))
    assert (outcome.status, outcome.failure_class, outcome.message) == (status.value, failure_class, message)
    assert outcome.exit_code == 7
    assert outcome.summary is None
    assert outcome.release_key == "web#3"
    assert serving(outcome) is (status is SsmStatus.SUCCESS)


def test_without_an_invocation_a_host_has_no_exit_code() -> None:
    outcome = host_outcome("web", 3, HOST, SsmStatus.FAILED, None)
    assert (outcome.status, outcome.exit_code, outcome.failure_class) == ("Failed", None, "unknown")


def test_serving_reads_the_agent_s_outcome_before_ssm_s_status() -> None:
    def outcome(status: str, agent_outcome: str | None) -> HostOutcome:
        return HostOutcome(
            release_key="web#3",
            instance_id=HOST,
            app="web",
            release=3,
            status=status,
            summary=None if agent_outcome is None else {"outcome": agent_outcome},
        )

    assert serving(outcome("Failed", "already_live"))
    assert serving(outcome("Failed", "live"))
    assert not serving(outcome("Success", "failed"))
    assert serving(outcome("Success", None))
    assert not serving(outcome("Failed", None))


def test_a_host_result_says_none_for_a_host_without_a_failure() -> None:
    live = host_outcome("web", 3, HOST, SsmStatus.SUCCESS, invocation("Success", summary()))
    assert host_result(live).model_dump() == {
        "instance_id": HOST,
        "ok": True,
        "failure_class": "none",
        "message": "live on release 3",
    }
    failed = host_outcome("web", 3, HOST, SsmStatus.CANCELLED, None)
    assert host_result(failed).model_dump() == {
        "instance_id": HOST,
        "ok": False,
        "failure_class": "cancelled",
        "message": "the command was cancelled",
    }


# ------------------------------------------------------------------ host_counts
def test_the_hosts_tally_counts_serving_and_failed_hosts() -> None:
    tally = InvocationTally(succeeded=2, failed=1, unreached=4)
    assert host_counts(SsmStatus.FAILED, counts("Failed", "Failed"), tally) == (2, 1)


def test_without_a_tally_only_a_success_command_s_count_is_all_serving_hosts() -> None:
    # the command's own status decides, not the event's
    assert host_counts(SsmStatus.FAILED, counts("Success", "Success", completed=3), None) == (3, 0)
    assert host_counts(SsmStatus.SUCCESS, counts("", "", completed=2), None) == (2, 0)
    assert host_counts(SsmStatus.SUCCESS, counts("Failed", "Incomplete"), None) == (None, None)
    assert host_counts(SsmStatus.FAILED, counts("Failed", "Failed"), None) == (None, None)
    assert host_counts(SsmStatus.SUCCESS, None, None) == (None, None)


# ------------------------------------------------------------------ rollback
def test_a_rollback_target_is_an_older_success_with_another_image() -> None:
    failed = release(5, ReleaseStatus.FAILED)
    assert may_roll_back_to(release(4), failed)
    assert not may_roll_back_to(release(4, ReleaseStatus.FAILED), failed)
    assert not may_roll_back_to(release(4, ReleaseStatus.ROLLED_BACK), failed)
    assert not may_roll_back_to(release(4, digest_of=5), failed)  # the same image fails the same way
    assert not may_roll_back_to(release(6), failed)  # newer
    assert not may_roll_back_to(release(5, digest_of=9), failed)  # itself, by number


def test_rollback_candidates_keep_the_history_s_newest_first_order() -> None:
    failed = release(6, ReleaseStatus.FAILED)
    history = [
        release(7),
        failed,
        release(5, digest_of=6),
        release(4),
        release(3, ReleaseStatus.FAILED),
        release(2),
    ]
    assert [r.release for r in rollback_candidates(history, failed)] == [4, 2]


def test_a_failed_push_rolls_back_when_the_app_says_so_and_a_failed_rollback_never() -> None:
    assert rolls_back_automatically(release(3, source=ReleaseSource.PUSH), auto_rollback=True)
    assert rolls_back_automatically(release(3, source=ReleaseSource.MANUAL), auto_rollback=True)
    assert not rolls_back_automatically(release(3, source=ReleaseSource.PUSH), auto_rollback=False)
    assert not rolls_back_automatically(release(3, source=ReleaseSource.ROLLBACK), auto_rollback=True)


def test_a_failed_rollback_does_not_blame_its_image() -> None:
    assert blames_image(release(3, source=ReleaseSource.PUSH))
    assert blames_image(release(3, source=ReleaseSource.MANUAL))
    assert not blames_image(release(3, source=ReleaseSource.ROLLBACK))


def test_a_release_whose_hosts_all_failed_fetching_its_config_does_not_blame_its_image() -> None:
    # Given a pushed release that failed on every host because a pinned secret was unreadable
    push = release(3, source=ReleaseSource.PUSH)
    # Then its image is not refused: no host ran it, and it deploys once the secret is readable
    assert not blames_image(push, ["config"])
    assert not blames_image(push, ["config", "config"])


def test_any_image_failure_beside_a_config_failure_still_blames_the_image() -> None:
    push = release(3, source=ReleaseSource.PUSH)
    assert blames_image(push, ["config", "health"])
    assert blames_image(push, ["start"])
    assert blames_image(push, [None])
    assert blames_image(push, [])  # nothing known: the image is suspect, as before


# ------------------------------------------------------------------ next_pending
def test_the_newest_pending_release_starts_and_supersedes_the_older_ones_in_order() -> None:
    pending = [
        release(4, ReleaseStatus.PENDING),
        release(2, ReleaseStatus.PENDING),
        release(3, ReleaseStatus.PENDING),
    ]
    start, superseded = next_pending(pending, paused=False)
    assert start is not None
    assert start.release == 4
    assert [r.release for r in superseded] == [2, 3]


def test_a_single_pending_release_starts_alone() -> None:
    start, superseded = next_pending(iter([release(2, ReleaseStatus.PENDING)]), paused=False)
    assert (start.release if start else None, superseded) == (2, [])


def test_nothing_starts_while_paused_or_with_nothing_pending() -> None:
    assert next_pending([release(2, ReleaseStatus.PENDING)], paused=True) == (None, [])
    assert next_pending([], paused=False) == (None, [])
