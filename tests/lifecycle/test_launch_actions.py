"""Launch lifecycle actions as Auto Scaling runs them: instances wait in Pending:Wait, tokens
expire, and a long launch swap is kept alive by heartbeats (docs/lifecycle.md, "New instances")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deployer import launch, reconcile
from deployer.entry.events import handle_instance_launch
from deployer.models.records import Release
from deployer.observability import metrics

from tests.lifecycle.conftest import GROUP, World, client, load_event, summary_line

pytestmark = pytest.mark.unit


class Scheduled:
    """Every message on-instance-launch puts on its delay queue (SendMessage requests)."""

    def __init__(self, world: World) -> None:
        self.messages: list[tuple[dict[str, Any], int]] = []
        sqs = world.core.clients.client("sqs")
        sqs.meta.events.register("provide-client-params.sqs.SendMessage", self._sent)

    def _sent(self, params: dict[str, Any], **_: Any) -> None:
        self.messages.append((json.loads(params["MessageBody"]), params.get("DelaySeconds", 0)))

    def heartbeats(self) -> list[tuple[dict[str, Any], int]]:
        return [(body, delay) for body, delay in self.messages if body["kind"] == "launch-heartbeat"]


def _launch(world: World) -> str:
    autoscaling = client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=len(world.instances) + 1)
    return _new_instances(world)[0]


def _new_instances(world: World) -> list[str]:
    group = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    return sorted(
        {i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]} - set(world.instances)
    )


def _state(instance_id: str) -> str | None:
    group = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    states = {i["InstanceId"]: i["LifecycleState"] for i in group["AutoScalingGroups"][0]["Instances"]}
    return states.get(instance_id)


def _launch_event(world: World, instance_id: str) -> dict[str, Any]:
    event = load_event("asg_instance_launch.json")
    event["detail"]["EC2InstanceId"] = instance_id
    event["detail"]["AutoScalingGroupName"] = GROUP
    event["detail"]["LifecycleActionToken"] = world.shim.lifecycle.token_for(instance_id)
    return event


def _swap_ends(world: World, instance_id: str, release: Release) -> dict[str, Any]:
    command = [c for c in world.shim.commands() if c.instance_ids == [instance_id]][-1]
    world.shim.invocation(command.command_id, instance_id, "Success", summary_line(instance_id, release))
    return world.deliver(world.invocation_event(command.command_id, instance_id, "Success"))


def _deliver(world: World, body: dict[str, Any]) -> dict[str, Any]:
    answer = handle_instance_launch(world.ld, {"Records": [{"body": json.dumps(body)}]})
    result: dict[str, Any] = answer["results"][0]
    return result


def test_a_launching_instance_waits_in_pending_wait_and_the_reconciler_leaves_it_to_the_hook(
    world: World,
) -> None:
    # Given release 1 live on the group, and Auto Scaling launching one more instance
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)

    # Then it waits in Pending:Wait, outside the InService hosts the code works on
    assert _state(instance) == "Pending:Wait"
    assert instance not in world.ld.hooks.in_service(GROUP)

    # When the reconciler runs while it launches
    commands = len(world.shim.commands())
    report = reconcile.reconcile_app(world.ld, world.config)

    # Then it sends the launching instance nothing (the hook's swap is what brings it up)
    assert instance not in report["drift"].get("hosts", [])
    assert len(world.shim.commands()) == commands

    # When its launch swap succeeds
    handle_instance_launch(world.ld, _launch_event(world, instance))
    assert _swap_ends(world, instance, first)["action"] == "continue"

    # Then Auto Scaling lets it in, and it is one of the InService hosts from now on
    assert _state(instance) == "InService"
    assert instance in world.ld.hooks.in_service(GROUP)


def test_completing_an_action_that_timed_out_is_logged_and_counted_not_dropped(
    world: World, caplog: Any
) -> None:
    # Given a launch swap sent, and no heartbeat for longer than the hook's 900 s
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    handle_instance_launch(world.ld, _launch_event(world, instance))
    world.shim.lifecycle.advance(901)
    metrics.clear_metrics()

    # When the swap then succeeds
    answer = _swap_ends(world, instance, first)

    # Then Auto Scaling refused the completion (its default result, ABANDON, applied), and the
    # handler says so: an "expired" answer, an error line and a metric, no exception
    assert answer["action"] == "expired"
    assert world.shim.completed == []
    assert _state(instance) is None
    assert "lifecycle action no longer active: timed out or completed elsewhere" in [
        r.getMessage() for r in caplog.records
    ]
    assert metrics.metric_set["LaunchActionExpired"]["Value"] == [1.0]


def test_a_recheck_of_an_action_that_timed_out_stops_waiting(world: World) -> None:
    # Given an instance not yet online whose action timed out before the re-check
    world.complete(world.push(1, "v1"))
    instance = _launch(world)
    scheduled = Scheduled(world)
    assert handle_instance_launch(world.ld, _launch_event(world, instance))["action"] == "wait"
    world.shim.lifecycle.advance(901)
    recheck, _ = scheduled.messages[0]
    metrics.clear_metrics()

    # When the re-check arrives
    answer = _deliver(world, recheck)

    # Then it stops (no further re-check), logged and counted
    assert answer["action"] == "expired"
    assert len(scheduled.messages) == 1
    assert metrics.metric_set["LaunchActionExpired"]["Value"] == [1.0]


def test_a_launch_swap_longer_than_the_heartbeat_timeout_keeps_its_instance(world: World) -> None:
    # Given a launch swap sent to a new instance (the hook times out after 900 s without heartbeat)
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    scheduled = Scheduled(world)
    handle_instance_launch(world.ld, _launch_event(world, instance))
    assert [delay for _, delay in scheduled.heartbeats()] == [launch.HEARTBEAT_INTERVAL_SECONDS]

    # When the pull and health gate take 40 minutes, each scheduled heartbeat arriving on time
    for _ in range(8):
        world.shim.lifecycle.advance(launch.HEARTBEAT_INTERVAL_SECONDS)
        body, _ = scheduled.heartbeats()[-1]
        assert _deliver(world, body)["action"] == "heartbeat"

    # Then the action is still active: the swap's success lets the instance in
    assert len(world.shim.heartbeats) == 8
    assert _swap_ends(world, instance, first)["action"] == "continue"
    assert [c["LifecycleActionResult"] for c in world.shim.completed] == ["CONTINUE"]
    assert _state(instance) == "InService"

    # And the next heartbeat message ends the chain without calling Auto Scaling
    body, _ = scheduled.heartbeats()[-1]
    assert _deliver(world, body)["action"] == "stop"
    assert len(world.shim.heartbeats) == 8
    assert len(scheduled.heartbeats()) == 9


def test_heartbeats_follow_the_swap_that_took_over_when_the_pointer_moved(world: World) -> None:
    # Given a launch swap onto release 1, and release 2 starting while it runs
    first = world.push(1, "v1")
    world.complete(first)
    instance = _launch(world)
    world.shim.online.add(instance)
    scheduled = Scheduled(world)
    handle_instance_launch(world.ld, _launch_event(world, instance))
    world.push(2, "v2")
    assert _swap_ends(world, instance, first)["action"] == "swap"
    follow_up = [c for c in world.shim.commands() if c.instance_ids == [instance]][-1].command_id

    # When the heartbeat scheduled for the first swap arrives
    world.shim.lifecycle.advance(launch.HEARTBEAT_INTERVAL_SECONDS)
    body, _ = scheduled.heartbeats()[-1]
    answer = _deliver(world, body)

    # Then it heartbeats the action on behalf of the follow-up swap, and reschedules for it
    assert answer["action"] == "heartbeat"
    assert answer["command_id"] == follow_up
    assert scheduled.heartbeats()[-1][0]["command_id"] == follow_up


def test_heartbeats_stop_once_the_swaps_timeouts_have_passed(world: World) -> None:
    # Given a launch swap whose heartbeat message arrives after its deadline
    world.complete(world.push(1, "v1"))
    instance = _launch(world)
    world.shim.online.add(instance)
    scheduled = Scheduled(world)
    handle_instance_launch(world.ld, _launch_event(world, instance))
    body, _ = scheduled.heartbeats()[-1]
    body["deadline"] = "2020-01-01T00:00:00Z"

    # When it arrives
    answer = _deliver(world, body)

    # Then no heartbeat is recorded and nothing more is scheduled: the hook's default applies
    assert answer["action"] == "stop"
    assert world.shim.heartbeats == []
    assert len(scheduled.heartbeats()) == 1
