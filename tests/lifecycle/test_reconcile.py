"""The reconciler: converges first (finishes what a lost event left), then missed pushes, drifted
pointer, group and hosts, repaired toward the desired release (hosts only toward a SUCCEEDED one)."""

from __future__ import annotations

import time

import pytest
from deployer.entry.events import handle_reconcile
from deployer.models.records import Pointer, ReleaseSource, ReleaseStatus
from deployer.reconcile import reconcile_app

from tests.lifecycle.conftest import World, snapshot, summary_line

pytestmark = pytest.mark.unit


def test_a_push_whose_event_never_arrived_is_deployed(world: World) -> None:
    # Given release 1 live, and v2 pushed to ECR without an event reaching us
    world.complete(world.push(1, "v1"))
    time.sleep(1.1)  # moto records push times in whole seconds; v2 must be the newer one
    digest = world.image(2, "v2")
    # When the reconciler runs
    answer = handle_reconcile(world.ld, {"source": "aws.events", "detail-type": "Scheduled Event"})
    # Then v2 becomes release 2 and deploys through the normal path
    report = answer["apps"]["web"]
    assert report["action"] == "started"
    assert report["drift"] == {"missed_push": digest}
    release = world.release(report["release"])
    assert release.digest == digest
    assert release.tag == "v2"
    assert release.source is ReleaseSource.PUSH
    assert release.status is ReleaseStatus.DEPLOYING
    world.complete(release)
    world.assert_agree()


def test_the_reconciler_leaves_a_running_deploy_to_its_command(world: World) -> None:
    # Given a deploy in progress and a newer image in ECR without an event
    first = world.push(1, "v1")
    world.image(2, "v2")
    before = snapshot(world)
    # When the reconciler runs while the command is still running
    report = reconcile_app(world.ld, world.config)
    # Then it converges (nothing to decide yet), admits no missed push and changes nothing
    assert report["action"] == "converging"
    assert report["deploying"] == "web#1"
    assert report["release"] == 1
    assert report["command_id"] == first.command_id
    assert snapshot(world) == before
    # And once the deploy has ended, the next run finds the image that was missed
    world.complete(first)
    time.sleep(1.1)  # moto records push times in whole seconds; v3 must be the newest image
    digest = world.image(3, "v3")
    after = reconcile_app(world.ld, world.config)
    assert after["action"] == "started"
    assert after["drift"] == {"missed_push": digest}


def test_an_image_already_recorded_or_refused_is_not_a_missed_push(world: World) -> None:
    # Given release 2 failed (refused) and rolled back to release 1
    world.complete(world.push(1, "v1"))
    answer = world.complete(world.push(2, "v2"), failures={world.instances[0]: "health"})
    world.complete(world.release(answer["rollback_release"]))
    before = snapshot(world)
    # When the reconciler runs (the newest ECR image is the refused v2)
    report = reconcile_app(world.ld, world.config)
    # Then it neither redeploys v2 nor changes anything
    assert report["action"] == "none"
    assert snapshot(world) == before


def test_a_group_moved_off_the_pointer_is_put_back(world: World) -> None:
    # Given release 1 live, then someone points the group at the original template version
    first = world.push(1, "v1")
    world.complete(first)
    group = world.core.launch_templates.current(world.config)
    world.core.launch_templates.point_group(group, 1)
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then the group is back on release 1's version, and the drift is reported
    assert report["drift"]["launch_template_version"] == {
        "group": 1,
        "release": first.launch_template_version,
    }
    assert world.core.launch_templates.current(world.config).version == first.launch_template_version


def test_hosts_that_missed_the_swap_get_it_again(world: World) -> None:
    # Given release 1 where one host was never reached
    release = world.push(1, "v1")
    unreached = world.instances[2]
    invocations, commands = world.run_command(release, unreached=(unreached,))
    for event in invocations:
        world.deliver(event)
    world.deliver(commands[0])
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then the swap is re-sent to that host only, and tracked so its result is recorded
    assert report["drift"]["hosts"] == [unreached]
    command = world.shim.commands()[-1]
    assert command.instance_ids == [unreached]
    assert command.parameters["release"] == ["1"]
    world.shim.invocation(command.command_id, unreached, "Success", summary_line(unreached, release))
    answer = world.deliver(world.invocation_event(command.command_id, unreached, "Success"))
    assert answer["purpose"] == "drift"
    assert answer["ok"] is True
    # And the next run finds nothing to repair
    assert reconcile_app(world.ld, world.config)["action"] == "none"


def test_a_paused_app_is_left_alone(world: World) -> None:
    world.complete(world.push(1, "v1"))
    world.core.state.set_paused("web", True, "incident")
    group = world.core.launch_templates.current(world.config)
    world.core.launch_templates.point_group(group, 1)
    before = snapshot(world)
    assert reconcile_app(world.ld, world.config) == {"action": "skipped", "reason": "paused"}
    assert snapshot(world) == before


def test_a_missed_push_of_a_refused_digest_is_ignored(world: World) -> None:
    # Given release 1 live, and an image whose digest the app refuses, in ECR without an event
    world.complete(world.push(1, "v1"))
    time.sleep(1.1)  # moto records push times in whole seconds; v2 must be the newest image
    digest = world.image(2, "v2")
    world.core.state.refuse_digest("web", digest)
    before = snapshot(world)
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then the refused image is not taken for a missed push: no drift, no release, no command
    assert report["action"] == "none"
    assert "missed_push" not in report["drift"]
    assert snapshot(world) == before


def test_a_failed_desired_release_is_never_sent_again_to_the_hosts_that_refused_it(
    world_no_rollback: World,
) -> None:
    world = world_no_rollback
    # Given release 2 FAILED on one host, held as the desired release (no automatic rollback)
    world.complete(world.push(1, "v1"))
    bad_host = world.instances[0]
    world.complete(world.push(2, "v2"), failures={bad_host: "health"})
    assert world.release(2).status is ReleaseStatus.FAILED
    assert world.core.state.get("web").desired == 2
    before = snapshot(world)
    # When the reconciler runs, twice
    reports = [reconcile_app(world.ld, world.config) for _ in range(2)]
    # Then the failed host is not sent release 2 again, and nothing else changes
    for report in reports:
        assert report["action"] == "none"
        assert "hosts" not in report["drift"]
    assert snapshot(world) == before


def test_a_deploy_whose_command_ended_incomplete_with_no_failed_host_succeeds(world: World) -> None:
    # Given release 1's command ended Incomplete (one host undeliverable, none failed), its hosts'
    # events delivered and the command's event lost: SSM's coarse Status says Failed, only
    # StatusDetails says Incomplete
    release = world.push(1, "v1")
    unreached = world.instances[1]
    invocations, commands = world.run_command(release, not_run={unreached: "Undeliverable"})
    assert commands[0]["detail"]["status"] == "Failed"
    for event in invocations:
        world.deliver(event)
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then it reads the per-host StatusDetails: the release SUCCEEDED on the hosts SSM reached
    done = world.release(1)
    assert done.status is ReleaseStatus.SUCCEEDED
    assert done.hosts_ok == 2
    assert done.hosts_failed == 0
    assert report["action"] == "repaired"
    # And the host SSM never reached gets the swap (the desired release SUCCEEDED)
    assert report["drift"]["hosts"] == [unreached]
    command = world.shim.commands()[-1]
    assert command.instance_ids == [unreached]
    assert command.parameters["release"] == ["1"]


def test_a_pointer_moved_by_hand_is_put_back_on_the_desired_release(world: World) -> None:
    # Given releases 1 and 2 live, then the pointer written back to release 1 by hand
    first = world.push(1, "v1")
    world.complete(first)
    world.complete(world.push(2, "v2"))
    world.core.pointer.put(Pointer.for_release(world.release(1)))
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then the pointer names release 2 again, and the drift is reported
    assert report["drift"]["pointer"] == {"pointer": 1, "desired": 2}
    pointer = world.core.pointer.get("web")
    assert pointer is not None
    assert (pointer.release, pointer.digest) == (2, world.release(2).digest)
    world.assert_agree()
