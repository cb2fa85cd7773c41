"""CloudWatch alarm stand-in: moto stores metric alarms and metric data but never evaluates an
alarm. This thread does what CloudWatch does for the stack's users' alarms:

every `interval` seconds (0.5 by default) it reads moto's metric alarms (DescribeAlarms) and, for
each alarm on one metric (MetricName/Namespace/Dimensions, Statistic):
- reads the alarm's last `EvaluationPeriods` periods of `Period` seconds, each on its own
  (GetMetricStatistics over exactly that period, ending at the last whole period);
- counts the breaching periods (`ComparisonOperator` against `Threshold`), treating a period
  without data as `TreatMissingData` says (missing | ignore | breaching | notBreaching);
- ALARM when at least `DatapointsToAlarm` (default `EvaluationPeriods`) breach, OK when there
  is enough data and fewer breach, INSUFFICIENT_DATA when no period has data ("missing"), the
  state unchanged when no period has data ("ignore");
- when the state changes: SetAlarmState, then the documented "CloudWatch Alarm State Change"
  event (CloudWatch user guide, "Alarm events and EventBridge") put on the local EventBridge bus,
  which delivers it through the rules the stack created.

Not evaluated: metric-math alarms (`Metrics`), percentile statistics (`ExtendedStatistic`, which
moto's GetMetricStatistics does not compute), anomaly-detection bands, composite alarms; their
state is whatever SetAlarmState last made it. Development tooling only.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from localcloud.aws.eventbridge import envelope

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}
_WORDS = {
    "GreaterThanThreshold": "greater than",
    "GreaterThanOrEqualToThreshold": "greater than or equal to",
    "LessThanThreshold": "less than",
    "LessThanOrEqualToThreshold": "less than or equal to",
}


def _stamp(when: dt.datetime) -> str:
    """CloudWatch's event timestamp form, e.g. 2019-10-02T17:04:40.989+0000."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def evaluate(alarm: dict[str, Any], values: list[float | None]) -> tuple[str, str, list[float]] | None:
    """The state an alarm should be in given its periods' values (oldest first; None: no data),
    its reason, and the datapoints that decided; None: leave the state as it is."""
    compare = _COMPARE[alarm["ComparisonOperator"]]
    threshold = float(alarm["Threshold"])
    periods = int(alarm["EvaluationPeriods"])
    needed = int(alarm.get("DatapointsToAlarm") or periods)
    treat = alarm.get("TreatMissingData") or "missing"
    present = [v for v in values if v is not None]
    if not present and treat in {"missing", "ignore"}:
        if treat == "ignore":
            return None
        return "INSUFFICIENT_DATA", f"Insufficient Data: {periods} datapoints were unknown.", []
    breaching = 0
    for value in values:
        if value is None:
            breaching += treat == "breaching"
        else:
            breaching += compare(value, threshold)
    state = "ALARM" if breaching >= needed else "OK"
    word = _WORDS[alarm["ComparisonOperator"]]
    verb = "was" if state == "ALARM" else "was not"
    reason = (
        f"Threshold Crossed: {breaching} out of the last {periods} datapoints {present} {verb} "
        f"{word} the threshold ({threshold}) (minimum {needed} datapoint{'s' if needed != 1 else ''} "
        f"for {'OK -> ALARM' if state == 'ALARM' else 'ALARM -> OK'} transition)."
    )
    return state, reason, present


class AlarmStandIn:
    """Evaluates moto's metric alarms and emits their state-change events on `bus`."""

    def __init__(
        self,
        cloudwatch: Any,
        bus: Any,
        *,
        region: str,
        account: str,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cw = cloudwatch
        self.bus = bus
        self.region = region
        self.account = account
        self.interval = interval
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AlarmStandIn:
        self._thread = threading.Thread(target=self._run, name="cloudwatch-alarms", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.evaluate_once()
            except Exception as exc:  # a stand-in thread must outlive a bad round
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}")

    # -- one round -----------------------------------------------------------------------
    def evaluate_once(self) -> list[dict[str, Any]]:
        """Evaluate every metric alarm once; the events this round emitted."""
        emitted = []
        for alarm in self._alarms():
            if not self._evaluable(alarm):
                continue
            try:
                values = self._values(alarm)
            except Exception as exc:  # one alarm moto cannot answer must not stop the others
                self.errors.append(f"{alarm['AlarmName']}: {type(exc).__name__}: {exc}")
                continue
            decided = evaluate(alarm, values)
            if decided is None or decided[0] == alarm.get("StateValue"):
                continue
            state, reason, datapoints = decided
            reason_data = json.dumps(
                {
                    "version": "1.0",
                    "queryDate": _stamp(dt.datetime.now(dt.UTC)),
                    "statistic": alarm["Statistic"],
                    "period": alarm["Period"],
                    "recentDatapoints": datapoints,
                    "threshold": float(alarm["Threshold"]),
                }
            )
            self.cw.set_alarm_state(
                AlarmName=alarm["AlarmName"],
                StateValue=state,
                StateReason=reason,
                StateReasonData=reason_data,
            )
            event = self.state_change_event(alarm, state, reason, reason_data)
            self.events.append(event)
            emitted.append(event)
            self.bus.put_event(event)
        return emitted

    @staticmethod
    def _evaluable(alarm: dict[str, Any]) -> bool:
        """One metric, a plain statistic, a static threshold (moto's GetMetricStatistics answers no
        percentile)."""
        return (
            "MetricName" in alarm
            and bool(alarm.get("Statistic"))
            and alarm.get("ComparisonOperator") in _COMPARE
        )

    def _alarms(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"AlarmTypes": ["MetricAlarm"]}
        while True:
            page = self.cw.describe_alarms(**kwargs)
            alarms.extend(page.get("MetricAlarms", []))
            if not page.get("NextToken"):
                return alarms
            kwargs["NextToken"] = page["NextToken"]

    def _values(self, alarm: dict[str, Any]) -> list[float | None]:
        """The alarm's statistic over each of its last EvaluationPeriods whole periods, oldest first."""
        period = int(alarm["Period"])
        end = int(self.clock()) // period * period
        stat = alarm["Statistic"]
        values: list[float | None] = []
        for i in range(int(alarm["EvaluationPeriods"]), 0, -1):
            start = end - i * period
            kwargs: dict[str, Any] = {
                "Namespace": alarm["Namespace"],
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm.get("Dimensions", []),
                "StartTime": dt.datetime.fromtimestamp(start, dt.UTC),
                "EndTime": dt.datetime.fromtimestamp(start + period, dt.UTC),
                "Period": period,
                "Statistics": [stat],
            }
            points = self.cw.get_metric_statistics(**kwargs).get("Datapoints", [])
            value = points[0].get(stat) if points else None
            values.append(None if value is None else float(value))
        return values

    def state_change_event(
        self, alarm: dict[str, Any], state: str, reason: str, reason_data: str
    ) -> dict[str, Any]:
        """The documented "CloudWatch Alarm State Change" event of a single-metric alarm."""
        updated = alarm.get("StateUpdatedTimestamp")
        if not isinstance(updated, dt.datetime):
            updated = dt.datetime.now(dt.UTC)
        previous = {
            "reason": alarm.get("StateReason", ""),
            "timestamp": _stamp(updated),
            "value": alarm.get("StateValue", "INSUFFICIENT_DATA"),
        }
        if alarm.get("StateReasonData"):
            previous["reasonData"] = alarm["StateReasonData"]
        detail = {
            "alarmName": alarm["AlarmName"],
            "configuration": {
                "description": alarm.get("AlarmDescription", ""),
                "metrics": [
                    {
                        "id": f"m-{alarm['AlarmName']}",
                        "metricStat": {
                            "metric": {
                                "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])},
                                "name": alarm["MetricName"],
                                "namespace": alarm["Namespace"],
                            },
                            "period": alarm["Period"],
                            "stat": alarm["Statistic"],
                        },
                        "returnData": True,
                    }
                ],
            },
            "previousState": previous,
            "state": {
                "reason": reason,
                "reasonData": reason_data,
                "timestamp": _stamp(dt.datetime.now(dt.UTC)),
                "value": state,
            },
        }
        arn = alarm.get("AlarmArn") or (
            f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{alarm['AlarmName']}"
        )
        return envelope(
            "CloudWatch Alarm State Change",
            "aws.cloudwatch",
            detail,
            [arn],
            region=self.region,
            account=self.account,
        )
