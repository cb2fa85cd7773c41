"""The reconciler: missed pushes, drifted group and hosts, and hands off a deploy in progress."""

from __future__ import annotations

import time

import pytest
from deployer.lifecycle_handlers import handle_reconcile
from deployer.models.records import ReleaseSource, ReleaseStatus
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
    assert report["action"] == "deployed"
    assert report["drift"] == {"missed_push": digest}
    release = world.release(report["release"])
    assert release.digest == digest
    assert release.tag == "v2"
    assert release.source is ReleaseSource.PUSH
    assert release.status is ReleaseStatus.DEPLOYING
    world.complete(release)
    world.assert_agree()


def test_the_reconciler_stays_out_of_a_deploy_in_progress(world: World) -> None:
    # Given a deploy in progress and a newer image in ECR without an event
    world.push(1, "v1")
    world.image(2, "v2")
    before = snapshot(world)
    # When the reconciler runs
    report = reconcile_app(world.ld, world.config)
    # Then it does nothing at all
    assert report["action"] == "skipped"
    assert "deploy in progress (web#1)" in report["reason"]
    assert snapshot(world) == before


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
