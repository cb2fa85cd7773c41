"""Alarm gates and the stage tick chain through the controller and moto, each function under
its role: the decision that makes a release BAKING sends one tick with the delay the bake asks
for; a tick keeps the chain going and a duplicate starts no second one; an alarm in ALARM
(reported by its event, confirmed by DescribeAlarms) fails the release and rolls back its
hosts; an alarm in ALARM before a stage is sent stops that stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from deployer.entry.events import handle_command_status, handle_operation
from deployer.models.config import AppConfig
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, ReleaseStatus
from deployer.reconcile import reconcile_app
from moto import mock_aws
from moto.sqs.models import sqs_backends

from tests.conftest import ACCOUNT, REGION
from tests.lifecycle.conftest import World, build_world, client, load_event
from tests.lifecycle.test_cli import run
from tests.lifecycle.test_stages import Clock, commands, run_stage

pytestmark = pytest.mark.unit

ALARM = "web-errors"


@pytest.fixture
def gated(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, Clock]]:
    with mock_aws():
        world = build_world(monkeypatch, hosts=4)
        clock = Clock()
        monkeypatch.setattr(world.core.state, "_clock", clock)
        client("cloudwatch").put_metric_alarm(
            AlarmName=ALARM,
            Namespace="Deployer/Proxy",
            MetricName="Errors5xx",
            Dimensions=[{"Name": "App", "Value": "web"}],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=10,
            ComparisonOperator="GreaterThanThreshold",
        )
        yield world, clock


def staged_push(world: World, stages: list[dict[str, Any]]) -> None:
    """Release 1 live on the 4 hosts, then the app gains stages and its alarm; 2 is pushed."""
    world.complete(world.push(1, "v1"))
    rollout = {**world.config.rollout.model_dump(), "stages": stages, "alarms": [ALARM]}
    world.config = AppConfig.parse({**world.config.to_document(), "rollout": rollout})
    world.core.apps.put(world.config)
    world.push(2, "v2")


def sent_ticks() -> list[tuple[dict[str, Any], int]]:
    """Every message on the stage tick queue as moto's SQS holds it, delayed or not: its body and
    its DelaySeconds (when it becomes visible, from when it was sent)."""
    queue = sqs_backends[ACCOUNT][REGION].queues["StageTickQueue"]
    return [(json.loads(m.body), round((m.delayed_until - m.sent_timestamp) / 1000)) for m in queue._messages]


def tick_record(body: dict[str, Any]) -> dict[str, Any]:
    return {"Records": [{"messageId": "m", "body": json.dumps(body), "eventSource": "aws:sqs"}]}


def set_alarm(state: str, reason: str) -> None:
    client("cloudwatch").set_alarm_state(AlarmName=ALARM, StateValue=state, StateReason=reason)


def alarm_event(state: str = "ALARM") -> dict[str, Any]:
    event = load_event("cloudwatch_alarm_state_change")
    event["detail"]["state"]["value"] = state
    event["account"], event["region"] = ACCOUNT, REGION
    return event


def test_baking_sends_one_tick_a_tick_keeps_the_chain_and_a_duplicate_starts_none(
    gated: tuple[World, Clock],
) -> None:
    world, clock = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 100}, {"hosts": "100%"}])
    start = int(clock.now)
    # When the canary's command succeeds, the release bakes and one tick is sent, due after
    # the analysis interval (30 s, sooner than the bake's end)
    run_stage(world, world.release(2))
    assert world.release(2).stage_state == STAGE_BAKING
    first = {"kind": "stage-tick", "app": "web", "release": 2, "stage": 0, "due": start + 30}
    assert sent_ticks() == [(first, 30)]
    # and another converge meanwhile (the reconciler) sends no second one
    reconcile_app(world.ld, world.config)
    assert len(sent_ticks()) == 1
    # When the tick arrives, it converges the app and sends the next
    clock.now += 30
    handle_command_status(world.ld, tick_record(first))
    second = {**first, "due": start + 60}
    assert sent_ticks()[1:] == [(second, 30)]
    # and the same tick delivered again starts no second chain
    handle_command_status(world.ld, tick_record(first))
    assert len(sent_ticks()) == 2
    # Near the end the delay is what is left of the bake
    clock.now += 60
    handle_command_status(world.ld, tick_record(second))
    assert sent_ticks()[2:] == [({**first, "due": start + 100}, 10)]
    # and the tick at the bake's end sends the last stage, on time
    clock.now += 10
    handle_command_status(world.ld, tick_record({**first, "due": start + 100}))
    assert len(commands("deployer web release 2")) == 1
    assert len(sent_ticks()) == 3


def test_a_lost_tick_is_sent_again_by_the_reconciler_once_it_is_overdue(gated: tuple[World, Clock]) -> None:
    world, clock = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 100}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    assert len(sent_ticks()) == 1
    # Given the tick never arrives, when the reconciler's tick comes after its due time
    clock.now += 45
    reconcile_app(world.ld, world.config)
    # Then a new tick is sent, due one interval later
    (_, (tick, delay)) = sent_ticks()
    assert (tick["due"], delay) == (int(clock.now) + 30, 30)


def test_an_alarm_event_during_a_bake_fails_the_release_and_rolls_back(gated: tuple[World, Clock]) -> None:
    world, _ = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 300}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    assert world.release(2).stage_state == STAGE_BAKING
    # Given an ALARM event whose alarm is OK again by now, nothing changes (the event is a hint)
    answer = handle_command_status(world.ld, alarm_event())
    assert answer["status"] == "ok"
    baking = world.release(2)
    assert (baking.status, baking.stage_state) == (ReleaseStatus.DEPLOYING, STAGE_BAKING)
    # When the alarm goes into ALARM and its event arrives
    set_alarm("ALARM", "Threshold Crossed: 42 5xx in 60 s")
    handle_command_status(world.ld, alarm_event())
    # Then the release FAILED naming the alarm and its reason, and a rollback release puts
    # back release 1 on the canary
    failed = world.release(2)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason == "alarm web-errors is ALARM: Threshold Crossed: 42 5xx in 60 s"
    assert failed.alarm_states is not None
    assert failed.alarm_states[ALARM]["state"] == "ALARM"
    three = world.release(3)
    assert (three.status, three.rollback_of, three.replaces) == (ReleaseStatus.DEPLOYING, 2, 1)
    assert commands("deployer web release 3")
    # and the image is not refused (an alarm does not blame the image)
    assert world.core.state.get("web").refused_digests == set()
    world.complete(world.release(3))
    world.assert_agree()


def test_an_alarm_in_alarm_before_a_stage_is_sent_stops_that_stage(gated: tuple[World, Clock]) -> None:
    world, _ = gated
    staged_push(world, [{"hosts": 1, "approve": True}, {"hosts": "50%"}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    assert world.release(2).stage_state == STAGE_AWAITING
    # Given the alarm went into ALARM while the release awaited approval (no event delivered)
    set_alarm("ALARM", "p99 above 800 ms")
    # When the operator approves
    handle_operation(world.ld, {"app": "web", "action": "continue"})
    # Then stage 2 was never sent, and the release failed naming the alarm
    assert commands("deployer stage 1 web release 2") == []
    failed = world.release(2)
    assert (failed.status, failed.status_reason) == (
        ReleaseStatus.FAILED,
        "alarm web-errors is ALARM: p99 above 800 ms",
    )
    assert world.release(3).rollback_of == 2


def test_an_alarm_event_for_an_alarm_no_app_names_changes_nothing(gated: tuple[World, Clock]) -> None:
    world, _ = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 300}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    event = alarm_event()
    event["detail"]["alarmName"] = "someone-elses"
    answer = handle_command_status(world.ld, event)
    assert answer["action"] == "ignored"
    assert world.release(2).stage_state == STAGE_BAKING


def test_status_shows_each_alarm_gate_as_the_last_check_read_it(gated: tuple[World, Clock]) -> None:
    world, clock = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 300}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    # Given the alarm went into INSUFFICIENT_DATA and the next tick's converge read it
    set_alarm("INSUFFICIENT_DATA", "no 5xx datapoints")
    clock.now += 30
    handle_command_status(
        world.ld,
        tick_record({"kind": "stage-tick", "app": "web", "release": 2, "stage": 0, "due": int(clock.now)}),
    )
    # When an operator asks for the status, the alarm's state and reason are shown
    code, view, _ = run(world, "status", "web")
    assert code == 0
    assert view["deploying"]["alarms"] == [
        {"alarm": ALARM, "state": "INSUFFICIENT_DATA", "reason": "no 5xx datapoints", "at": int(clock.now)}
    ]
    # and the release still bakes (INSUFFICIENT_DATA does not fail it)
    assert world.release(2).stage_state == STAGE_BAKING


def test_a_tick_here_before_its_time_goes_back_for_the_seconds_left(gated: tuple[World, Clock]) -> None:
    world, clock = gated
    staged_push(world, [{"hosts": 1, "bake_seconds": 100}, {"hosts": "100%"}])
    run_stage(world, world.release(2))
    (first, _) = sent_ticks()[0]
    # When the tick arrives 2 s before it is due by the controller's clock
    clock.now += 28
    answer = handle_command_status(world.ld, tick_record(first))
    # Then it is sent again, as it was, for the 2 s left, and nothing else moved
    assert answer["results"][0]["action"] == "early"
    assert sent_ticks()[1:] == [(first, 2)]
    assert world.release(2).next_tick_at == first["due"]


def test_an_alarm_in_alarm_before_the_canary_stops_the_release_before_any_host(
    gated: tuple[World, Clock],
) -> None:
    world, _ = gated
    # Given the alarm is already in ALARM when release 2 is pushed
    set_alarm("ALARM", "5xx up since yesterday")
    staged_push(world, [{"hosts": 1, "bake_seconds": 300}, {"hosts": "100%"}])
    # Then no host was sent release 2, it FAILED naming the alarm, and release 1 stays
    assert commands("deployer stage 0 web release 2") == []
    failed = world.release(2)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason == "could not start: alarm web-errors is ALARM: 5xx up since yesterday"
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    world.assert_agree()
