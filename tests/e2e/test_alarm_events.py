"""The local cloud's alarm stand-in and stage ticks reach on-command-status the way AWS would
deliver them: a metric alarm crossing its threshold (metric data in moto's CloudWatch) emits
its documented event, which the stack's rule delivers to the function, which answers under its
own role; a stage tick sent with a delay reaches it through the stack's SQS mapping."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from localcloud.aws.eventbridge import Delivery
from localcloud.cloud import LocalCloud

pytestmark = pytest.mark.e2e

ALARM = "alarms-errors"


def test_an_alarm_crossing_its_threshold_and_a_stage_tick_reach_on_command_status(
    cloud: LocalCloud,
) -> None:
    assert cloud.bus is not None
    assert cloud.alarms is not None
    assert cloud.stack is not None
    cw = cloud.moto.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="Deployer/Proxy",
        MetricName="Errors5xx",
        Dimensions=[{"Name": "App", "Value": "alarms"}],
        Statistic="Sum",
        Period=1,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )

    def delivered() -> list[Delivery]:
        assert cloud.bus is not None
        return [
            d
            for d in cloud.bus.deliveries
            if d.event.get("detail", {}).get("alarmName") == ALARM and d.attempts
        ]

    # When the app's proxies report 50 5xx a second
    deadline = time.monotonic() + 15
    while not delivered() and time.monotonic() < deadline:
        cw.put_metric_data(
            Namespace="Deployer/Proxy",
            MetricData=[
                {
                    "MetricName": "Errors5xx",
                    "Dimensions": [{"Name": "App", "Value": "alarms"}],
                    "Value": 50,
                    "Unit": "Count",
                    "Timestamp": dt.datetime.fromtimestamp(int(time.time()), dt.UTC),
                    "StorageResolution": 1,
                }
            ],
        )
        time.sleep(0.3)
    cloud.bus.wait_idle(30)
    # Then the alarm is in ALARM, and its one event went to on-command-status through the
    # stack's rule and was answered (no app names it)
    state = cw.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"][0]["StateValue"]
    assert state == "ALARM"
    (delivery,) = delivered()
    assert delivery.function == "OnCommandStatusFunction"
    answer = delivery.attempts[-1].result
    assert (answer["status"], answer["action"], answer["alarm"]) == ("ok", "ignored", ALARM)
    # When a stage tick is sent on the stack's tick queue with a delay
    (mapping,) = [m for m in cloud.stack.sqs_mappings if m.function == "OnCommandStatusFunction"]
    source = next(s for s in cloud.sqs_sources if s.queue_url == mapping.queue_url)
    before = source.invocations
    tick = {"kind": "stage-tick", "app": "alarms", "release": 1, "stage": 0, "due": 1}
    sqs = cloud.moto.client("sqs")
    sqs.send_message(QueueUrl=mapping.queue_url, MessageBody=json.dumps(tick), DelaySeconds=1)
    deadline = time.monotonic() + 15
    while source.invocations == before and time.monotonic() < deadline:
        time.sleep(0.2)
    # Then the function ran it, and no call of either was refused by its role
    assert (source.invocations, source.failures) == (before + 1, 0)
    assert cloud.denied() == []
