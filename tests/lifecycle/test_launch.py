"""New instances: the launch lifecycle hook brings an instance onto the current pointer."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from deployer import launch
from deployer.entry.events import handle_instance_launch
from deployer.launch import Recheck
from deployer.models.lifecycle_events import InstanceLaunchEvent
from deployer.models.records import Release, utcnow

from tests.lifecycle.conftest import GROUP, World, client, load_event, summary_line

pytestmark = pytest.mark.unit


def _launch(world: World) -> str:
    """Auto Scaling adds one instance to the group; its id."""
    autoscaling = client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=len(world.instances) + 1)
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    new = sorted({i["InstanceId"] for i in group["Instances"]} - set(world.instances))
    assert len(new) == 1
    return new[0]


def _event(world: World, instance_id: str, group: str = GROUP) -> dict[str, Any]:
    """AWS's launch event for an instance, with the token Auto Scaling issued for its action."""
    token = world.shim.lifecycle.token_for(instance_id)
    assert token is not None, f"{instance_id} has no lifecycle action"
    event = load_event("asg_instance_launch.json")
    event["detail"]["EC2InstanceId"] = instance_id
    event["detail"]["AutoScalingGroupName"] = group
    event["detail"]["LifecycleActionToken"] = token
    return event


class Rechecks:
    """Stands in for the delay queue: collects what the handler schedules."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[Recheck, int]] = []

    def __call__(self, recheck: Recheck, delay: int) -> None:
        self.scheduled.append((recheck, delay))


def _finish_launch_swap(
    world: World, instance_id: str, release: Release, failure: str = "none"
) -> dict[str, Any]:
    command = world.shim.commands()[-1]
    assert command.instance_ids == [instance_id]
    ok = failure == "none"
    world.shim.invocation(
        command.command_id,
        instance_id,
        "Success" if ok else "Failed",
        summary_line(instance_id, release, failure),
    )
    return world.deliver(
        world.invocation_event(command.command_id, instance_id, "Success" if ok else "Failed")
    )


def test_an_instance_launched_during_a_deploy_comes_up_on_the_current_pointer(world: World) -> None:
    # Given release 1 live and release 2 deploying (pointer already on 2)
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    # When Auto Scaling launches an instance (booted from whatever template version) and it is online
    instance = _launch(world)
    world.shim.online.add(instance)
    answer = handle_instance_launch(world.ld, _event(world, instance))
    # Then the swap for the current pointer (release 2) goes to that one instance
    assert answer["action"] == "swap"
    assert answer["release"] == 2
    command = world.shim.commands()[-1]
    assert command.instance_ids == [instance]
    assert command.parameters["release"] == ["2"]
    # When that swap succeeds
    result = _finish_launch_swap(world, instance, second)
    # Then the lifecycle action is completed with CONTINUE and the host outcome is recorded
    assert result["action"] == "continue"
    assert world.shim.completed == [
        {
            "AutoScalingGroupName": GROUP,
            "LifecycleHookName": "deployer-launch",
            "LifecycleActionToken": world.shim.lifecycle.token_for(instance),
            "LifecycleActionResult": "CONTINUE",
            "InstanceId": instance,
        }
    ]
    assert instance in {o.instance_id for o in world.core.host_outcomes.for_release(second.key)}
    # And the deploy itself is untouched: still DEPLOYING under its lock
    assert world.core.state.get("web").lock_owner == "web#2"


def test_an_instance_not_yet_online_is_rechecked_later_without_waiting(world: World) -> None:
    # Given a live release and a launching instance whose SSM agent has not registered yet
    world.complete(world.push(1, "v1"))
    instance = _launch(world)
    rechecks = Rechecks()
    event = InstanceLaunchEvent.model_validate(_event(world, instance))
    # When the launch event arrives
    answer = launch.on_launch(world.ld, event, rechecks)
    # Then a heartbeat is recorded and a delayed re-check scheduled; nothing is sent yet
    assert answer["action"] == "wait"
    assert len(world.shim.heartbeats) == 1
    assert [delay for _, delay in rechecks.scheduled] == [launch.RECHECK_DELAY_SECONDS]
    commands_before = len(world.shim.commands())
    # When the re-check arrives (through the queue) after the instance came online
    world.shim.online.add(instance)
    recheck, _ = rechecks.scheduled[0]
    body = json.dumps(recheck.model_dump(mode="json"))
    result = handle_instance_launch(world.ld, {"Records": [{"body": body}]})
    # Then the swap is sent
    assert result["results"][0]["action"] == "swap"
    assert len(world.shim.commands()) == commands_before + 1


def test_an_instance_that_never_comes_online_is_abandoned_after_the_deadline(world: World) -> None:
    world.complete(world.push(1, "v1"))
    instance = _launch(world)
    event = InstanceLaunchEvent.model_validate(_event(world, instance))
    answer = launch.on_launch(world.ld, event, Rechecks(), first_seen=utcnow() - timedelta(minutes=16))
    assert answer["action"] == "abandon"
    assert world.shim.completed[0]["LifecycleActionResult"] == "ABANDON"


def test_a_failed_launch_swap_abandons_the_instance(world: World) -> None:
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    handle_instance_launch(world.ld, _event(world, instance))
    result = _finish_launch_swap(world, instance, first, failure="pull")
    assert result["action"] == "abandon"
    assert world.shim.completed[0]["LifecycleActionResult"] == "ABANDON"


def test_a_duplicate_launch_invocation_event_completes_the_action_once(world: World) -> None:
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    handle_instance_launch(world.ld, _event(world, instance))
    _finish_launch_swap(world, instance, first)
    again = _finish_launch_swap(world, instance, first)
    assert again["action"] == "duplicate"
    assert len(world.shim.completed) == 1


def test_when_the_pointer_moves_during_the_launch_the_instance_follows_it(world: World) -> None:
    # Given an instance swapping onto release 1
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    handle_instance_launch(world.ld, _event(world, instance))
    launch_command = world.shim.commands()[-1]
    # When release 2 starts meanwhile and the launch swap then ends
    world.push(2, "v2")
    world.shim.invocation(launch_command.command_id, instance, "Success", summary_line(instance, first))
    result = world.deliver(world.invocation_event(launch_command.command_id, instance, "Success"))
    # Then the instance gets a swap for release 2 before it is let in
    assert result["action"] == "swap"
    assert result["next_release"] == 2
    assert world.shim.completed == []
    assert world.shim.commands()[-1].parameters["release"] == ["2"]


def test_a_launch_in_a_group_no_app_uses_is_let_in(world: World) -> None:
    autoscaling = client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="someone-elses-asg",
        LaunchTemplate={"LaunchTemplateName": "web-lt", "Version": "1"},
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="deployer-launch",
        AutoScalingGroupName="someone-elses-asg",
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
    )
    autoscaling.set_desired_capacity(AutoScalingGroupName="someone-elses-asg", DesiredCapacity=1)
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["someone-elses-asg"])
    instance = group["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    event = _event(world, instance, group="someone-elses-asg")
    event["detail"]["NotificationMetadata"] = ""
    answer = handle_instance_launch(world.ld, event)
    assert answer["action"] == "continue"
    assert world.shim.completed[0]["LifecycleActionResult"] == "CONTINUE"


def test_a_malformed_launch_event_is_rejected_without_any_call(world: World) -> None:
    event = _event(world, _launch(world))
    event["detail"]["LifecycleTransition"] = "autoscaling:EC2_INSTANCE_TERMINATING"
    answer = handle_instance_launch(world.ld, event)
    assert answer["status"] == "rejected"
    assert "LifecycleTransition" in answer["error"]
    assert world.shim.completed == []
