"""The alarm gate's verdict, the stage tick's delay, and the requests their adapters send
(botocore's Stubber validates each against the service model)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from deployer.adapters.alarms import Alarms, AlarmState
from deployer.adapters.stage_ticks import StageTicks
from deployer.controller import alarm_gate
from deployer.controller.watch import tick_delay
from deployer.entry.events import handle_command_status
from deployer.models.events import AlarmStateChangeEvent, StageTick
from pydantic import ValidationError

from tests.conftest import read_event

pytestmark = pytest.mark.unit

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/StageTickQueue"


def found(*alarms: tuple[str, str, str]) -> dict[str, AlarmState]:
    return {name: AlarmState(name, state, reason) for name, state, reason in alarms}


# ------------------------------------------------------------------ verdict
@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([("errors", "OK", "fine"), ("latency", "OK", "fine")], None),
        ([("errors", "INSUFFICIENT_DATA", "no data"), ("latency", "OK", "fine")], None),
        (
            [("errors", "OK", "fine"), ("latency", "ALARM", "Threshold Crossed: 3 datapoints")],
            "alarm latency is ALARM: Threshold Crossed: 3 datapoints",
        ),
        (
            [("errors", "ALARM", "5xx up"), ("latency", "ALARM", "p99 up")],
            "alarm errors is ALARM: 5xx up",
        ),
        ([("errors", "OK", "fine")], "alarm latency does not exist"),
    ],
)
def test_the_gate_fails_on_the_first_named_alarm_in_alarm_or_missing(
    states: list[tuple[str, str, str]], expected: str | None
) -> None:
    assert alarm_gate.verdict(["errors", "latency"], found(*states)) == expected


def test_the_recorded_states_name_every_alarm_and_a_missing_one_as_missing() -> None:
    recorded = alarm_gate.states(["errors", "gone"], found(("errors", "ALARM", "5xx up")), at=1700)
    assert recorded == {
        "errors": {"state": "ALARM", "reason": "5xx up", "at": 1700},
        "gone": {"state": "MISSING", "reason": "no alarm has this name", "at": 1700},
    }


def test_only_a_change_of_state_or_reason_is_a_change() -> None:
    before = alarm_gate.states(["errors"], found(("errors", "OK", "fine")), at=1)
    same = alarm_gate.states(["errors"], found(("errors", "OK", "fine")), at=9)
    assert not alarm_gate.changed(before, same)
    assert alarm_gate.changed(before, alarm_gate.states(["errors"], found(("errors", "ALARM", "up")), at=9))
    assert alarm_gate.changed(None, before)


# ------------------------------------------------------------------ tick delay
@pytest.mark.parametrize(
    ("interval", "bake_until", "now", "delay"),
    [
        (30, 1300, 1000, 30),  # the analysis interval
        (30, 1010, 1000, 10),  # the bake ends sooner
        (3600, 9000, 1000, 900),  # SQS's longest delay
        (30, 1000, 1000, 1),  # at least one second
        (30, 900, 1000, 1),
    ],
)
def test_the_tick_delay_is_the_interval_or_the_bake_end_within_sqs_bounds(
    interval: int, bake_until: int, now: int, delay: int
) -> None:
    assert tick_delay(interval, bake_until, now) == delay


# ------------------------------------------------------------------ adapters
def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name="us-east-1")  # type: ignore[call-overload]
    return client, Stubber(client)


def test_alarm_states_are_read_by_name_in_batches_of_100_metric_and_composite() -> None:
    cw, stub = stubbed("cloudwatch")
    names = [f"alarm-{i:03d}" for i in range(150)]
    stub.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": "alarm-000", "StateValue": "ALARM", "StateReason": "up"}]},
        {"AlarmNames": names[:100], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"], "MaxRecords": 100},
    )
    stub.add_response(
        "describe_alarms",
        {"CompositeAlarms": [{"AlarmName": "alarm-149", "StateValue": "OK", "StateReason": "fine"}]},
        {"AlarmNames": names[100:], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"], "MaxRecords": 100},
    )
    with stub:
        states = Alarms(cw).states(names)
    stub.assert_no_pending_responses()
    assert states == found(("alarm-000", "ALARM", "up"), ("alarm-149", "OK", "fine"))


def test_a_tick_is_sent_with_its_delay_and_body() -> None:
    sqs, stub = stubbed("sqs")
    tick = {"kind": "stage-tick", "app": "web", "release": 2, "stage": 0, "due": 1030}
    stub.add_response(
        "send_message",
        {"MessageId": "m-1", "MD5OfMessageBody": "x"},
        {"QueueUrl": QUEUE, "MessageBody": json.dumps(tick), "DelaySeconds": 30},
    )
    with stub:
        StageTicks(QUEUE, lambda: sqs).send(tick, 30)
    stub.assert_no_pending_responses()
    assert not StageTicks(None, lambda: sqs).enabled


# ------------------------------------------------------------------ event shapes
def test_the_documented_alarm_event_parses_to_its_name_and_state() -> None:
    event = AlarmStateChangeEvent.model_validate(read_event("cloudwatch_alarm_state_change"))
    assert event.detail.alarm_name == "web-errors"
    assert event.detail.state.value == "ALARM"
    assert event.detail.state.reason.startswith("Threshold Crossed: 1 out of the last 1 datapoints [42.0")
    assert event.detail.previous_state is not None
    assert event.detail.previous_state.value == "OK"


def test_an_alarm_event_without_a_name_is_rejected_naming_the_field() -> None:
    event = read_event("cloudwatch_alarm_state_change")
    del event["detail"]["alarmName"]
    answer = handle_command_status(None, event)  # type: ignore[arg-type]
    assert answer["status"] == "rejected"
    assert "detail.alarmName" in answer["error"]


def test_a_tick_of_another_kind_or_with_extra_fields_is_rejected() -> None:
    StageTick.model_validate({"kind": "stage-tick", "app": "web", "release": 2, "stage": 0, "due": 5})
    with pytest.raises(ValidationError, match="kind"):
        StageTick.model_validate({"kind": "recheck", "app": "web", "release": 2, "stage": 0, "due": 5})
    answer = handle_command_status(None, {"Records": [{"body": '{"kind": "stage-tick", "app": "web"}'}]})  # type: ignore[arg-type]
    assert answer["results"][0]["status"] == "rejected"
    assert "release" in answer["results"][0]["error"]
