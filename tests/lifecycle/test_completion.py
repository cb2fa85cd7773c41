"""A deploy's completion: SSM status events decide the release's fate."""

from __future__ import annotations

import pytest
from deployer.adapters.command_results import CommandCounts
from deployer.builders import swap_parameters
from deployer.lifecycle import (
    CommandNotRecordedYet,
    Verdict,
    command_verdict,
    finish_release,
    host_outcome,
    serving,
)
from deployer.models.events import parse_push_event
from deployer.models.lifecycle_events import SsmStatus
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.rollout import accept_push

from tests.lifecycle.conftest import World, notifications

pytestmark = pytest.mark.unit


def test_a_deploy_every_host_reports_live_succeeds_and_unlocks(world: World) -> None:
    # Given a deploy of release 1 in progress on three hosts
    release = world.push(1, "v1")
    assert release.status is ReleaseStatus.DEPLOYING
    # When every host reports live and the command succeeds
    answer = world.complete(release)
    # Then the release SUCCEEDED, the lock is free, and pointer, group and hosts agree
    assert answer["status"] == "ok"
    assert answer["release_status"] == "SUCCEEDED"
    done = world.release(release.release)
    assert done.status is ReleaseStatus.SUCCEEDED
    assert done.hosts_ok == 3
    assert done.hosts_failed == 0
    assert world.core.state.get("web").lock_owner is None
    world.assert_agree()
    outcomes = world.core.host_outcomes.for_release(done.key)
    assert sorted(o.instance_id for o in outcomes) == world.instances
    assert all(o.summary and o.summary["outcome"] == "live" for o in outcomes)
    messages = notifications(world)
    assert [m["event"] for m in messages] == ["deploy_succeeded"]
    assert messages[0]["hosts_ok"] == 3
    assert messages[0]["text"].startswith("Deployed web release 1 (v1)")


def test_one_failing_host_with_auto_rollback_puts_the_fleet_back_on_the_last_success(world: World) -> None:
    # Given release 1 live everywhere and release 2 deploying
    first = world.push(1, "v1")
    world.complete(first)
    notifications(world)
    second = world.push(2, "v2")
    bad_host = world.instances[1]
    # When one of the three hosts fails the health gate and the command fails
    answer = world.complete(second, failures={bad_host: "health"})
    # Then release 2 is ROLLED_BACK with the reason, and a rollback release of release 1's image deploys
    failed = world.release(second.release)
    assert failed.status is ReleaseStatus.ROLLED_BACK
    assert "rolled back to release 1" in failed.status_reason
    rollback = world.release(answer["rollback_release"])
    assert rollback.source is ReleaseSource.ROLLBACK
    assert rollback.status is ReleaseStatus.DEPLOYING
    assert rollback.digest == first.digest
    assert world.core.state.get("web").lock_owner == f"web#{rollback.release}"
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(failed.key)}[bad_host]
    assert outcome.failure_class == "health"
    assert outcome.message == "GET /health answered 500 for 60s"
    # And the failed digest is refused for automatic deploys
    assert second.digest in world.core.state.get("web").refused_digests
    messages = notifications(world)
    assert [m["event"] for m in messages] == ["deploy_rolled_back", "deploy_started"]
    assert messages[0]["failure_classes"] == {"health": 1}
    assert (
        f"1 host failed the health check; {bad_host}: GET /health answered 500 for 60s."
        in messages[0]["text"]
    )
    assert "Rolling back to release 1." in messages[0]["text"]
    # When the hosts run the rollback (the one still on release 1 no-ops)
    world.complete(rollback)
    # Then everything agrees on release 1's image again and the lock is free
    assert world.release(rollback.release).status is ReleaseStatus.SUCCEEDED
    assert world.assert_agree().digest == first.digest
    assert world.core.state.get("web").lock_owner is None


def test_one_failing_host_without_auto_rollback_leaves_the_release_failed_and_unlocks(
    world_no_rollback: World,
) -> None:
    world = world_no_rollback
    # Given release 1 live and release 2 deploying with auto-rollback off
    world.complete(world.push(1, "v1"))
    notifications(world)
    second = world.push(2, "v2")
    # When one host fails to pull and the command fails
    answer = world.complete(second, failures={world.instances[0]: "pull"})
    # Then release 2 is FAILED, no rollback starts, the lock is free and a failure is announced
    assert "rollback_release" not in answer
    failed = world.release(second.release)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.hosts_failed == 1
    assert world.core.state.get("web").lock_owner is None
    assert world.core.pointer.get("web").release == second.release  # type: ignore[union-attr]
    assert len(world.core.releases.list_recent("web")) == 2
    messages = notifications(world)
    assert [m["event"] for m in messages] == ["deploy_failed"]
    assert messages[0]["failure_classes"] == {"pull": 1}
    assert "could not pull the image" in messages[0]["text"]


def test_a_repush_of_a_failed_digest_is_refused_until_promoted(world: World) -> None:
    # Given release 2 failed and was rolled back
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.complete(second, failures={world.instances[0]: "start"})
    releases_before = len(world.core.releases.list_recent("web", 100))
    # When the same digest is pushed again
    outcome = accept_push(world.core, parse_push_event(world.push_event(second.digest, "v2-again")))
    # Then it is refused and no release is recorded
    assert outcome.results[0].action.value == "refused"
    assert len(world.core.releases.list_recent("web", 100)) == releases_before


def test_duplicate_status_events_change_nothing_the_second_time(world: World) -> None:
    # Given release 1 live and release 2 failing on one host
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    invocations, commands = world.run_command(second, failures={world.instances[2]: "health"})
    # When every event is delivered twice
    for event in invocations:
        world.deliver(event)
        world.deliver(event)
    first_answer = world.deliver(commands[0])
    second_answer = world.deliver(commands[0])
    # Then exactly one rollback release exists and the duplicate did nothing more
    releases = world.core.releases.list_recent("web", 100)
    assert [r.release for r in releases] == [3, 2, 1]
    assert first_answer["rollback_release"] == 3
    assert "rollback_release" not in second_answer
    assert second_answer["release_status"] == "ROLLED_BACK"
    assert len(world.core.host_outcomes.for_release("web#2")) == 3
    assert [m["event"] for m in notifications(world)].count("deploy_rolled_back") == 1


def test_invocation_events_after_the_command_event_give_the_same_outcome(world: World) -> None:
    # Given release 1 deploying, its hosts done
    release = world.push(1, "v1")
    invocations, commands = world.run_command(release, failures={world.instances[0]: "health"})
    # When the command event arrives before every invocation event
    world.deliver(commands[0])
    for event in reversed(invocations):
        world.deliver(event)
    # Then the release and the per-host records are what in-order delivery gives
    done = world.release(release.release)
    assert done.status is ReleaseStatus.FAILED  # nothing succeeded before it: no rollback target
    assert done.hosts_ok == 2
    assert done.hosts_failed == 1
    outcomes = {o.instance_id: o for o in world.core.host_outcomes.for_release(done.key)}
    assert sorted(outcomes) == world.instances
    assert [serving(outcomes[i]) for i in world.instances] == [False, True, True]
    assert world.core.state.get("web").lock_owner is None


def test_progress_events_renew_the_lease_and_record_nothing(world: World) -> None:
    # Given a deploy holding the lock with a lease
    release = world.push(1, "v1")
    before = world.core.state.get("web").lock_expires_at
    world.core.state._clock = lambda: 10**10  # the renewal computes from "now"
    # When an invocation reports InProgress
    answer = world.deliver(world.invocation_event(release.command_id or "", world.instances[0], "InProgress"))
    # Then the lease moved forward and no outcome was written
    assert answer["action"] == "progress"
    assert (world.core.state.get("web").lock_expires_at or 0) > (before or 0)
    assert world.core.host_outcomes.for_release(release.key) == []


def test_only_unreached_hosts_still_count_as_success(world: World) -> None:
    # Given release 1 deploying; one host never gets the command (Delivery Timed Out)
    release = world.push(1, "v1")
    invocations, _ = world.run_command(release, unreached=(world.instances[0],))
    for event in invocations:
        world.deliver(event)
    # When the command ends Incomplete with no execution errors
    answer = world.deliver(world.command_event(release.command_id or "", "Incomplete"))
    # Then the release SUCCEEDED and the unreached host is recorded as such (the reconciler resends)
    assert answer["release_status"] == "SUCCEEDED"
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(release.key)}[
        world.instances[0]
    ]
    assert outcome.failure_class == "unreached"


def test_an_event_for_a_command_that_is_not_ours_is_ignored(world: World) -> None:
    answer = world.deliver(world.command_event("0b7f2f7e-0000-4000-8000-000000000000", "Success"))
    assert answer["action"] == "ignored"
    assert world.core.releases.list_recent("web") == []


def test_a_malformed_status_event_is_rejected_without_any_change(world: World) -> None:
    # Given an event whose command id and status are not SSM's
    event = world.command_event("not-a-command-id; rm -rf /", "Exploded")
    # When it is delivered
    answer = world.deliver(event)
    # Then it is rejected with the bad fields named, and nothing was written
    assert answer["status"] == "rejected"
    assert "command-id" in answer["error"]
    assert "status" in answer["error"]
    assert world.core.releases.list_recent("web") == []


COUNTS = CommandCounts(command_id="c", status="Failed", target_count=3, completed_count=3, error_count=1)


@pytest.mark.parametrize(
    ("status", "counts", "verdict"),
    [
        (SsmStatus.SUCCESS, None, Verdict.SUCCEEDED),
        (SsmStatus.FAILED, COUNTS, Verdict.FAILED),
        (SsmStatus.TIMED_OUT, None, Verdict.FAILED),
        (SsmStatus.CANCELLED, None, Verdict.FAILED),
        (SsmStatus.DELIVERY_TIMED_OUT, None, Verdict.FAILED),
        (SsmStatus.UNDELIVERABLE, None, Verdict.FAILED),
        (SsmStatus.RATE_EXCEEDED, None, Verdict.FAILED),
        (SsmStatus.INCOMPLETE, COUNTS, Verdict.FAILED),
        (
            SsmStatus.INCOMPLETE,
            COUNTS.model_copy(update={"error_count": 0, "delivery_timed_out_count": 1}),
            Verdict.SUCCEEDED,
        ),
        (SsmStatus.INCOMPLETE, None, Verdict.FAILED),
    ],
)
def test_each_terminal_ssm_status_maps_to_the_documented_verdict(
    status: SsmStatus, counts: CommandCounts | None, verdict: Verdict
) -> None:
    assert command_verdict(status, counts)[0] is verdict


def test_an_invocation_without_a_summary_is_classified_from_its_ssm_status() -> None:
    outcome = host_outcome("web", 3, "i-0123456789abcdef0", SsmStatus.EXECUTION_TIMED_OUT, None)
    assert outcome.failure_class == "timeout"
    assert not serving(outcome)
    unreached = host_outcome("web", 3, "i-0123456789abcdef0", SsmStatus.UNDELIVERABLE, None)
    assert unreached.failure_class == "unreached"


def test_a_failed_rollback_is_not_rolled_back_again_nor_its_image_refused(world: World) -> None:
    # Given release 2 failed and its automatic rollback (release 3, release 1's image) running
    first = world.push(1, "v1")
    world.complete(first)
    answer = world.complete(world.push(2, "v2"), failures={world.instances[0]: "health"})
    rollback = world.release(answer["rollback_release"])
    notifications(world)
    # When the rollback fails too
    result = world.complete(rollback, failures={world.instances[1]: "pull"})
    # Then it stays FAILED, nothing older is deployed, the lock is free, and release 1's image is not refused
    assert "rollback_release" not in result
    assert world.release(rollback.release).status is ReleaseStatus.FAILED
    assert len(world.core.releases.list_recent("web", 100)) == 3
    assert world.core.state.get("web").lock_owner is None
    assert first.digest not in world.core.state.get("web").refused_digests
    assert [m["event"] for m in notifications(world)] == ["deploy_failed"]


def test_a_terminal_event_that_outruns_the_command_record_is_retried(world: World) -> None:
    # Given a swap command of ours that SSM reports on before its id is stored on the release
    release = world.push(1, "v1")
    early = world.core.fleet.send_swap(
        world.config, swap_parameters(world.config, release), f"deployer web release {release.release}"
    )
    # When its terminal events arrive
    # Then they fail (so Lambda retries them) instead of being dropped
    with pytest.raises(CommandNotRecordedYet):
        world.deliver(world.command_event(early, "Success"))
    with pytest.raises(CommandNotRecordedYet):
        world.deliver(world.invocation_event(early, world.instances[0], "Success"))
    # And progress events are simply ignored
    assert (
        world.deliver(world.invocation_event(early, world.instances[0], "InProgress"))["action"] == "ignored"
    )


def test_a_duplicate_terminal_event_read_from_a_lagging_index_announces_nothing_again(
    world: World,
) -> None:
    # Given release 1 decided SUCCEEDED and announced
    stale = world.push(1, "v1")
    world.complete(stale)
    notifications(world)
    # When a duplicate terminal event is handled with the release as a lagging index still
    # shows it (DEPLOYING)
    assert stale.status is ReleaseStatus.DEPLOYING
    answer = finish_release(world.ld, stale, SsmStatus.SUCCESS)
    # Then the stored decision is reported, nothing is announced twice, and the app stays unlocked
    assert answer["release_status"] == "SUCCEEDED"
    assert notifications(world) == []
    assert world.release(stale.release).status is ReleaseStatus.SUCCEEDED
    assert world.core.state.get("web").lock_owner is None
