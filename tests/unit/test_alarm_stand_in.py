"""The local cloud's CloudWatch alarm stand-in (`localcloud.aws.alarms`) against moto: a metric
alarm that crosses its threshold goes into ALARM in CloudWatch and emits exactly one documented
"CloudWatch Alarm State Change" event, which the template's rule matches and the function's
model accepts."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from deployer.models.events import AlarmStateChangeEvent
from moto import mock_aws

from localcloud import moto_gaps
from localcloud.aws.alarms import AlarmStandIn, evaluate
from localcloud.aws.eventbridge import matches
from tests.conftest import ACCOUNT, REGION, fake_aws_environment, read_template

pytestmark = pytest.mark.unit

NOW = 1_800_000_000  # a whole minute


class Bus:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put_event(self, event: dict[str, Any]) -> list[Any]:
        self.events.append(event)
        return []


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake_aws_environment(monkeypatch)
    with mock_aws():
        moto_gaps.install(monkeypatch)
        cw = boto3.client("cloudwatch", region_name=REGION)
        cw.put_metric_alarm(
            AlarmName="web-errors",
            AlarmDescription="5xx of the web app",
            Namespace="Deployer/Proxy",
            MetricName="Errors5xx",
            Dimensions=[{"Name": "App", "Value": "web"}],
            Statistic="Sum",
            Period=10,
            EvaluationPeriods=1,
            Threshold=5,
            ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching",
        )
        cw.set_alarm_state(AlarmName="web-errors", StateValue="OK", StateReason="quiet")
        yield cw


def errors(cw: Any, value: float, at: int, *, release: str | None = None) -> None:
    dimensions = [{"Name": "App", "Value": "web"}]
    if release:
        dimensions.append({"Name": "Release", "Value": release})
    cw.put_metric_data(
        Namespace="Deployer/Proxy",
        MetricData=[
            {
                "MetricName": "Errors5xx",
                "Dimensions": dimensions,
                "Value": value,
                "Unit": "Count",
                "Timestamp": dt.datetime.fromtimestamp(at, dt.UTC),
                "StorageResolution": 1,
            }
        ],
    )


def test_a_metric_alarm_crossing_its_threshold_emits_one_documented_event(cloudwatch: Any) -> None:
    bus = Bus()
    clock = [float(NOW)]
    stand_in = AlarmStandIn(cloudwatch, bus, region=REGION, account=ACCOUNT, clock=lambda: clock[0])
    # Given 3 + 4 errors in the last period (7 > 5) on the app-wide metric, and 50 per release
    # (its own metric: not counted by an alarm on [App])
    errors(cloudwatch, 3, NOW - 8)
    errors(cloudwatch, 4, NOW - 2)
    errors(cloudwatch, 50, NOW - 5, release="2")
    assert stand_in.evaluate_once() != []
    # When it evaluates again, nothing more is emitted
    clock[0] += 0.5
    stand_in.evaluate_once()
    (event,) = bus.events
    # Then CloudWatch says ALARM, and the event is AWS's documented shape
    alarm = cloudwatch.describe_alarms(AlarmNames=["web-errors"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM"
    assert (event["source"], event["detail-type"]) == ("aws.cloudwatch", "CloudWatch Alarm State Change")
    assert event["resources"] == [alarm["AlarmArn"]]
    detail = event["detail"]
    assert detail["alarmName"] == "web-errors"
    assert (detail["previousState"]["value"], detail["state"]["value"]) == ("OK", "ALARM")
    assert detail["state"]["reason"] == alarm["StateReason"]
    assert "[7.0]" in detail["state"]["reason"]
    assert detail["configuration"]["metrics"][0]["metricStat"] == {
        "metric": {"dimensions": {"App": "web"}, "name": "Errors5xx", "namespace": "Deployer/Proxy"},
        "period": 10,
        "stat": "Sum",
    }
    # and the template's rule routes it to on-command-status, whose model accepts it
    events = read_template()["Resources"]["OnCommandStatusFunction"]["Properties"]["Events"]
    rule = events["AlarmStateChange"]
    assert matches(json.dumps(rule["Properties"]["Pattern"]), event)
    parsed = AlarmStateChangeEvent.model_validate(event)
    assert parsed.detail.state.reason.startswith("Threshold Crossed: 1 out of the last 1 datapoints")


@pytest.mark.parametrize(
    ("values", "treat", "expected"),
    [
        ([None, None], "missing", "INSUFFICIENT_DATA"),
        ([None, None], "ignore", None),
        ([None, None], "breaching", "ALARM"),
        ([None, None], "notBreaching", "OK"),
        ([9.0, None], "missing", "OK"),  # 1 of 2 breaching: below DatapointsToAlarm
        ([9.0, 8.0], "missing", "ALARM"),
        ([9.0, 1.0], "missing", "OK"),
    ],
)
def test_each_way_of_treating_missing_data(
    values: list[float | None], treat: str, expected: str | None
) -> None:
    alarm = {
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Threshold": 5,
        "EvaluationPeriods": 2,
        "TreatMissingData": treat,
    }
    decided = evaluate(alarm, values)
    assert (decided[0] if decided else None) == expected
