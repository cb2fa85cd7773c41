"""CloudWatch alarms an app names as gates (`rollout.alarms`): their states, read with
DescribeAlarms (metric and composite alarms alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deployer.adapters import aws_errors

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.client import CloudWatchClient

# DescribeAlarms accepts at most 100 names per call.
NAMES_PER_CALL = 100


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str


class Alarms:
    def __init__(self, cloudwatch: CloudWatchClient) -> None:
        self._cw = cloudwatch

    def states(self, names: Sequence[str]) -> dict[str, AlarmState]:
        """The named alarms that exist, by name (a name with no alarm is absent)."""
        found: dict[str, AlarmState] = {}
        unique = sorted(set(names))
        for start in range(0, len(unique), NAMES_PER_CALL):
            batch = unique[start : start + NAMES_PER_CALL]
            token: str | None = None
            while True:
                kwargs: dict[str, object] = {
                    "AlarmNames": batch,
                    "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                    "MaxRecords": NAMES_PER_CALL,
                }
                if token:
                    kwargs["NextToken"] = token
                with aws_errors("reading the app's alarms"):
                    response = self._cw.describe_alarms(**kwargs)  # type: ignore[arg-type]
                for alarm in [*response.get("MetricAlarms", []), *response.get("CompositeAlarms", [])]:
                    name = str(alarm["AlarmName"])
                    found[name] = AlarmState(
                        name, str(alarm.get("StateValue", "")), str(alarm.get("StateReason", ""))
                    )
                token = response.get("NextToken")
                if not token:
                    break
        return found
