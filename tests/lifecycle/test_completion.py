"""A deploy's completion: SSM status events decide the release's fate."""

from __future__ import annotations

from typing import Any

import pytest
from deployer.adapters.command_results import CommandCounts, InvocationTally
from deployer.admission import accept_push
from deployer.builders import swap_parameters
from deployer.command_events import CommandNotRecordedYet
from deployer.entry.events import handle_reconcile
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.observability import metrics
from deployer.verdicts import Verdict, command_verdict, host_outcome, serving

from tests.lifecycle.conftest import World, client, notifications

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
    # And the outbox announced the start and the success, each once, with its dedupe id
    messages = notifications(world)
    assert [m["event"] for m in messages] == ["deploy_started", "deploy_succeeded"]
    assert [m["dedupe_id"] for m in messages] == ["web#1#started", "web#1#succeeded"]
    assert messages[1]["hosts_ok"] == 3
    assert messages[1]["text"].startswith("Deployed web release 1 (v1)")
    assert world.core.state.get("web").outbox == frozenset()


def test_one_failing_host_with_auto_rollback_puts_the_fleet_back_on_the_last_success(world: World) -> None:
    # Given release 1 live everywhere and release 2 deploying
    first = world.push(1, "v1")
    world.complete(first)
    notifications(world)
    second = world.push(2, "v2")
    bad_host = world.instances[1]
    # When one of the three hosts fails the health gate and the command fails
    answer = world.complete(second, failures={bad_host: "health"})
    # Then release 2 is FAILED with the reason (not ROLLED_BACK while its rollback has not
    # succeeded), and a rollback release of release 1's image deploys
    failed = world.release(second.release)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason == "1 host(s) failed or timed out running the release"
    rollback = world.release(answer["rollback_release"])
    assert rollback.source is ReleaseSource.ROLLBACK
    assert rollback.status is ReleaseStatus.DEPLOYING
    assert rollback.digest == first.digest
    assert (rollback.rollback_of, rollback.replaces) == (second.release, first.release)
    assert world.core.state.get("web").lock_owner == f"web#{rollback.release}"
    # And what was sent to the hosts is release 1's image, never the failed one
    sent = _ssm_command(world, rollback.command_id or "")["Parameters"]
    assert sent["image"] == [first.image]
    assert sent["release"] == [str(rollback.release)]
    assert second.image != first.image
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(failed.key)}[bad_host]
    assert outcome.failure_class == "health"
    assert outcome.message == "GET /health answered 500 for 60s"
    # And the failed digest is refused for automatic deploys
    assert second.digest in world.core.state.get("web").refused_digests
    messages = notifications(world)
    assert [(m["event"], m["release"]) for m in messages] == [
        ("deploy_started", 2),
        ("deploy_rolled_back", 2),
        ("deploy_started", 3),
    ]
    rolled_back = messages[1]
    assert rolled_back["dedupe_id"] == "web#2#rolled_back"
    assert rolled_back["failure_classes"] == {"health": 1}
    assert (
        f"1 host failed the health check; {bad_host}: GET /health answered 500 for 60s."
        in rolled_back["text"]
    )
    assert "Rolling back to release 1." in rolled_back["text"]
    # When the hosts run the rollback (the one still on release 1 no-ops)
    world.complete(rollback)
    # Then everything agrees on release 1's image again, the lock is free, and only now is
    # release 2 ROLLED_BACK
    assert world.release(rollback.release).status is ReleaseStatus.SUCCEEDED
    assert world.assert_agree().digest == first.digest
    assert world.core.state.get("web").lock_owner is None
    back = world.release(second.release)
    assert back.status is ReleaseStatus.ROLLED_BACK
    assert back.status_reason.startswith(f"rolled back by release {rollback.release}")
    assert world.release(first.release).status is ReleaseStatus.SUCCEEDED


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
    assert [(m["event"], m["release"]) for m in messages] == [("deploy_started", 2), ("deploy_failed", 2)]
    assert messages[1]["dedupe_id"] == "web#2#failed"
    assert messages[1]["failure_classes"] == {"pull": 1}
    assert "could not pull the image" in messages[1]["text"]


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
    # Then exactly one rollback release exists and the duplicate did nothing more: it decided
    # nothing (it only saw the rollback rolling out) and sent no command
    releases = world.core.releases.list_recent("web", 100)
    assert [r.release for r in releases] == [3, 2, 1]
    assert first_answer["rollback_release"] == 3
    assert "release failed; rolling back" in first_answer["steps"]
    assert second_answer["steps"] == ["rolling out"]
    assert second_answer["release_status"] == "FAILED"
    assert len(world.shim.commands()) == 3
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


def test_a_release_whose_command_still_runs_keeps_the_lock_however_long_it_runs(world: World) -> None:
    # Given release 1 rolling out, and far more time gone by than any lease would have lasted
    release = world.push(1, "v1")
    started = world.core.state.now()
    world.core.state._clock = lambda: started + 30 * 24 * 3600
    # When an invocation reports InProgress, a newer push arrives and the reconciler ticks
    answer = world.deliver(world.invocation_event(release.command_id or "", world.instances[0], "InProgress"))
    newer = world.push(2, "v2")
    tick = handle_reconcile(world.ld, {})
    # Then the progress event recorded nothing, nobody took the lock over: release 1 still holds
    # it, release 2 waits PENDING, and no second command was sent
    assert answer["action"] == "progress"
    assert world.core.host_outcomes.for_release(release.key) == []
    assert world.core.state.get("web").lock_owner == "web#1"
    assert tick["apps"]["web"]["action"] == "converging"
    assert world.release(release.release).status is ReleaseStatus.DEPLOYING
    assert world.release(newer.release).status is ReleaseStatus.PENDING
    assert [c.command_id for c in world.shim.commands()] == [release.command_id]
    # When release 1's command ends, only then does release 2 take the app
    answer = world.complete(release)
    assert answer["release_status"] == "SUCCEEDED"
    assert answer["next_release"] == newer.release
    assert world.core.state.get("web").lock_owner == f"web#{newer.release}"
    assert world.release(newer.release).command_id is not None


def test_the_reconciler_finishes_a_deploying_release_whose_terminal_events_were_lost(world: World) -> None:
    # Given release 2 rolling out whose hosts all went live, but no status event ever arrived
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    notifications(world)
    world.run_command(second)  # events returned, never delivered
    assert world.release(second.release).status is ReleaseStatus.DEPLOYING
    # When the reconciler ticks
    tick = handle_reconcile(world.ld, {})
    # Then the release SUCCEEDED from SSM's own answer, the app is free, and the success is announced
    done = world.release(second.release)
    assert done.status is ReleaseStatus.SUCCEEDED
    assert done.hosts_ok == 3
    assert world.core.state.get("web").lock_owner is None
    world.assert_agree()
    assert [(m["event"], m["release"]) for m in notifications(world)] == [("deploy_succeeded", 2)]
    # And, the hosts' own events lost too, pointer and group needed nothing; the hosts without a
    # recorded outcome got the (idempotent) swap of release 2 again
    report = tick["apps"]["web"]
    assert (report["release"], report["drift"]) == (2, {"hosts": world.instances})
    assert len(report["commands"]) == 1
    resent = _ssm_command(world, report["commands"][0])["Parameters"]
    assert (resent["image"], resent["release"]) == ([second.image], ["2"])


def _ssm_command(world: World, command_id: str) -> dict[str, Any]:
    return dict(client("ssm").list_commands(CommandId=command_id)["Commands"][0])


def test_an_incomplete_command_with_no_errors_succeeds_though_its_event_says_failed(world: World) -> None:
    # Given release 1 deploying; one instance was scaled in before SSM could deliver to it
    release = world.push(1, "v1")
    gone = world.instances[0]
    invocations, commands = world.run_command(release, not_run={gone: "Undeliverable"})
    # (SSM's answer: StatusDetails Incomplete with no errors, and the coarse Failed in Status and
    # in both the host's and the command's event)
    command = _ssm_command(world, release.command_id or "")
    assert (command["Status"], command["StatusDetails"], command["ErrorCount"]) == ("Failed", "Incomplete", 0)
    assert commands[0]["detail"]["status"] == "Failed"
    assert invocations[0]["detail"]["status"] == "Failed"
    # When the events are delivered
    for event in invocations:
        world.deliver(event)
    answer = world.deliver(commands[0])
    # Then the release SUCCEEDED on the two hosts SSM reached, with no rollback, and the gone
    # host is recorded as unreached (not failed), for the reconciler
    assert answer["release_status"] == "SUCCEEDED"
    assert "rollback_release" not in answer
    done = world.release(release.release)
    assert (done.hosts_ok, done.hosts_failed) == (2, 0)
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(release.key)}[gone]
    assert (outcome.status, outcome.failure_class) == ("Undeliverable", "unreached")
    assert [m["event"] for m in notifications(world)] == ["deploy_started", "deploy_succeeded"]


def test_an_instance_that_vanished_mid_run_ends_delivery_timed_out_and_does_not_fail_the_release(
    world: World,
) -> None:
    # Given release 1 deploying; one instance terminated while its invocation was in progress,
    # which SSM ends Delivery Timed Out when the command expires (TimedOut in the events)
    release = world.push(1, "v1")
    gone = world.instances[1]
    invocations, commands = world.run_command(release, unreached=(gone,))
    assert commands[0]["detail"]["status"] == "TimedOut"
    assert _ssm_command(world, release.command_id or "")["StatusDetails"] == "Delivery Timed Out"
    # When the events are delivered
    for event in invocations:
        world.deliver(event)
    answer = world.deliver(commands[0])
    # Then the release SUCCEEDED for the reachable hosts and nothing is rolled back
    assert answer["release_status"] == "SUCCEEDED"
    assert "rollback_release" not in answer
    assert world.release(release.release).hosts_ok == 2
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(release.key)}[gone]
    assert outcome.failure_class == "unreached"
    assert not serving(outcome)


def test_a_release_no_host_ran_fails(world: World) -> None:
    # Given release 1 where SSM reached no host at all
    release = world.push(1, "v1")
    _, commands = world.run_command(release, not_run=dict.fromkeys(world.instances, "Undeliverable"))
    # When the command's event is delivered
    answer = world.deliver(commands[0])
    # Then the release FAILED: nothing moved to it
    assert answer["release_status"] == "FAILED"
    assert "no host ran the release" in (world.release(release.release).status_reason or "")


def test_hosts_terminated_by_max_errors_are_counted_neither_serving_nor_failed(
    world_no_rollback: World,
) -> None:
    world = world_no_rollback
    # Given release 1 where one host failed its health check, one went live, and SSM stopped
    # sending (MaxErrors 0 exceeded): the last invocation is Terminated
    release = world.push(1, "v1")
    failed, live, stopped = world.instances
    _, commands = world.run_command(release, failures={failed: "health"}, not_run={stopped: "Terminated"})
    command = _ssm_command(world, release.command_id or "")
    assert (command["CompletedCount"], command["ErrorCount"]) == (3, 1)
    # When the command's event is delivered
    answer = world.deliver(commands[0])
    # Then the release FAILED with one host serving and one failed: CompletedCount (3) minus the
    # errors would have counted the terminated host as serving
    assert answer["release_status"] == "FAILED"
    done = world.release(release.release)
    assert (done.hosts_ok, done.hosts_failed) == (1, 1)
    assert live in world.running


def test_a_host_live_with_a_cleanup_warning_serves_succeeds_and_is_counted(world: World) -> None:
    # Given release 1 live and release 2 deploying with MaxErrors 0, where one host went live but
    # could not stop the old container: its agent exits 0 with the warning "cleanup"
    world.complete(world.push(1, "v1"))
    notifications(world)
    second = world.push(2, "v2")
    warned = world.instances[0]
    metrics.clear_metrics()
    invocations, commands = world.run_command(second, warnings={warned: "cleanup"})
    # When the events are delivered
    for event in invocations:
        world.deliver(event)
    answer = world.deliver(commands[0])
    # Then SSM saw a Success everywhere, the release SUCCEEDED (no rollback), the host counts as
    # serving with its warning recorded, and the HostWarnings metric was emitted once
    assert commands[0]["detail"]["status"] == "Success"
    assert answer["release_status"] == "SUCCEEDED"
    assert "rollback_release" not in answer
    outcome = {o.instance_id: o for o in world.core.host_outcomes.for_release(f"web#{second.release}")}[
        warned
    ]
    assert serving(outcome)
    assert outcome.failure_class is None
    assert (outcome.summary or {})["warning"] == "cleanup"
    assert metrics.metric_set["HostWarnings"]["Value"] == [1.0]
    assert "HostsFailed" not in metrics.metric_set
    assert world.release(second.release).hosts_ok == 3
    world.assert_agree()


def test_an_event_for_a_command_that_is_not_ours_is_ignored(world: World) -> None:
    answer = world.deliver(world.command_event("0b7f2f7e-0000-4000-8000-000000000000", "Success"))
    assert answer["action"] == "ignored"
    assert world.core.releases.list_recent("web") == []


def test_a_malformed_status_event_is_rejected_without_any_change(world: World) -> None:
    # Given an event whose command id and status are not SSM's
    event = world.command_event("0b7f2f7e-0000-4000-8000-000000000000", "Success")
    event["detail"].update({"command-id": "not-a-command-id; rm -rf /", "status": "Exploded"})
    # When it is delivered
    answer = world.deliver(event)
    # Then it is rejected with the bad fields named, and nothing was written
    assert answer["status"] == "rejected"
    assert "command-id" in answer["error"]
    assert "status" in answer["error"]
    assert world.core.releases.list_recent("web") == []


def _counts(status: str, details: str) -> CommandCounts:
    return CommandCounts(
        command_id="c", status=status, status_details=details, target_count=3, completed_count=3
    )


@pytest.mark.parametrize(
    ("event_status", "counts", "tally", "verdict"),
    [
        (SsmStatus.SUCCESS, None, None, Verdict.SUCCEEDED),
        (SsmStatus.SUCCESS, _counts("Success", "Success"), None, Verdict.SUCCEEDED),
        (
            SsmStatus.FAILED,
            _counts("Failed", "Failed"),
            InvocationTally(succeeded=2, failed=1),
            Verdict.FAILED,
        ),
        (
            SsmStatus.TIMED_OUT,
            _counts("TimedOut", "Execution Timed Out"),
            InvocationTally(failed=3),
            Verdict.FAILED,
        ),
        (
            SsmStatus.CANCELLED,
            _counts("Cancelled", "Cancelled"),
            InvocationTally(succeeded=2),
            Verdict.FAILED,
        ),
        (SsmStatus.FAILED, _counts("Failed", "Rate Exceeded"), InvocationTally(), Verdict.FAILED),
        (SsmStatus.FAILED, _counts("Failed", "Access Denied"), InvocationTally(), Verdict.FAILED),
        # Incomplete with 0 errors: the coarse Failed of the event does not decide
        (
            SsmStatus.FAILED,
            _counts("Failed", "Incomplete"),
            InvocationTally(succeeded=2, unreached=1),
            Verdict.SUCCEEDED,
        ),
        (
            SsmStatus.FAILED,
            _counts("Failed", "Incomplete"),
            InvocationTally(succeeded=2, failed=1),
            Verdict.FAILED,
        ),
        (
            SsmStatus.TIMED_OUT,
            _counts("TimedOut", "Delivery Timed Out"),
            InvocationTally(succeeded=1, unreached=2),
            Verdict.SUCCEEDED,
        ),
        (
            SsmStatus.TIMED_OUT,
            _counts("TimedOut", "Delivery Timed Out"),
            InvocationTally(unreached=3),
            Verdict.FAILED,
        ),
        (
            SsmStatus.FAILED,
            _counts("Failed", "Failed"),
            InvocationTally(succeeded=1, failed=1, stopped=1),
            Verdict.FAILED,
        ),
        # without SSM's per-host answer only the coarse status is left: fail safe
        (SsmStatus.FAILED, None, None, Verdict.FAILED),
    ],
)
def test_each_terminal_ssm_status_maps_to_the_documented_verdict(
    event_status: SsmStatus, counts: CommandCounts | None, tally: InvocationTally | None, verdict: Verdict
) -> None:
    assert command_verdict(event_status, counts, tally)[0] is verdict


def test_an_invocation_without_a_summary_is_classified_from_its_ssm_status() -> None:
    outcome = host_outcome("web", 3, "i-0123456789abcdef0", SsmStatus.EXECUTION_TIMED_OUT, None)
    assert outcome.failure_class == "timeout"
    assert not serving(outcome)
    unreached = host_outcome("web", 3, "i-0123456789abcdef0", SsmStatus.UNDELIVERABLE, None)
    assert unreached.failure_class == "unreached"


def test_a_failed_rollback_is_not_rolled_back_again_nor_its_image_refused(world: World) -> None:
    # Given releases 1 and 2 live in turn (so an older target than the rollback's exists),
    # release 3 failed and its automatic rollback (release 4, release 2's image) running
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    world.complete(second)
    third = world.push(3, "v3")
    answer = world.complete(third, failures={world.instances[0]: "health"})
    rollback = world.release(answer["rollback_release"])
    assert rollback.digest == second.digest
    notifications(world)
    commands_before = len(world.shim.commands())
    # When the rollback fails too
    result = world.complete(rollback, failures={world.instances[1]: "pull"})
    # Then it stays FAILED and nothing older (release 1) is deployed: no release, no command
    assert "rollback_release" not in result
    assert world.release(rollback.release).status is ReleaseStatus.FAILED
    assert len(world.core.releases.list_recent("web", 100)) == 4
    assert len(world.shim.commands()) == commands_before
    state = world.core.state.get("web")
    assert state.lock_owner is None
    # And release 2's image, which the rollback ran, is not refused (release 3's still is)
    assert second.digest not in state.refused_digests
    assert third.digest in state.refused_digests
    # And release 3 stays FAILED: the rollback that would put it back never succeeded
    assert world.release(third.release).status is ReleaseStatus.FAILED
    assert [m["event"] for m in notifications(world)] == ["deploy_failed"]


def test_an_automatic_rollback_skips_a_target_with_the_failed_release_s_digest(world: World) -> None:
    # Given release 1 (image A) and release 2 (image B) live in turn, then image B pushed again
    # under a new tag (release 3)
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    world.complete(second)
    third = world.push(2, "v2-again")
    assert third.digest == second.digest
    # When release 3 fails on one host
    answer = world.complete(third, failures={world.instances[2]: "health"})
    # Then the rollback skips release 2 (the same image would fail the same way) and deploys
    # release 1's image: its record and the command sent to the hosts say so
    rollback = world.release(answer["rollback_release"])
    assert rollback.replaces == first.release
    assert rollback.digest == first.digest
    assert _ssm_command(world, rollback.command_id or "")["Parameters"]["image"] == [first.image]
    rolled_back = [m for m in notifications(world) if m["event"] == "deploy_rolled_back"]
    assert [(m["release"], m["rolled_back_to"]) for m in rolled_back] == [(third.release, first.release)]


def test_a_terminal_event_that_outruns_the_command_record_is_retried(world: World) -> None:
    # Given a swap command of ours that SSM reports on before its id is stored on the release
    release = world.push(1, "v1")
    early = world.core.fleet.send_swap(
        world.config,
        swap_parameters(world.config, release),
        f"deployer web release {release.release}",
        hosts=len(world.instances),
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
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 decided SUCCEEDED and announced
    stale = world.push(1, "v1")
    world.complete(stale)
    notifications(world)
    commands_before = len(world.shim.commands())
    # When a duplicate terminal event is handled while the command index still shows the
    # release as it was (DEPLOYING)
    assert stale.status is ReleaseStatus.DEPLOYING
    monkeypatch.setattr(world.ld.releases, "by_command_id", lambda _command_id: stale)
    answer = world.deliver(world.command_event(stale.command_id or "", "Success"))
    # Then the stored decision is reported, nothing is announced twice, and the app stays unlocked
    assert answer["release_status"] == "SUCCEEDED"
    assert notifications(world) == []
    assert world.release(stale.release).status is ReleaseStatus.SUCCEEDED
    assert world.core.state.get("web").lock_owner is None
    assert len(world.shim.commands()) == commands_before


def test_a_push_whose_hosts_all_failed_fetching_its_config_is_rolled_back_but_its_digest_stays_allowed(
    world: World,
) -> None:
    # Given web on release 1, then release 2 pushed
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    # When every host that failed it failed fetching the release's pinned config (class config)
    world.complete(second, failures={world.instances[0]: "config", world.instances[1]: "config"})
    # Then release 2 FAILED and is rolled back, but its image was never run: the digest stays
    # allowed, so the same image pushed again (once the secret is readable) deploys
    assert world.release(second.release).status is ReleaseStatus.FAILED
    assert second.digest not in world.core.state.get("web").refused_digests


def test_a_push_with_one_host_failing_its_health_gate_besides_config_failures_is_refused(
    world: World,
) -> None:
    # Given web on release 1, then release 2 pushed
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    # When one host failed fetching the config and another ran the image and failed its gate
    world.complete(second, failures={world.instances[0]: "config", world.instances[1]: "health"})
    # Then the image is to blame: refused for automatic deploys
    assert second.digest in world.core.state.get("web").refused_digests
