"""The hosts' proxy metrics in CloudWatch (namespace `Deployer/Proxy`, dimensions [App, Release];
host/agent.py `meter` sends them): a release's requests, 5xx answers and p99 latency over a
window, one GetMetricData call for the canary and the stable release together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors
from deployer.metrics_names import PROXY_ERRORS, PROXY_LATENCY, PROXY_NAMESPACE, PROXY_REQUESTS

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.client import CloudWatchClient

# GetMetricData's Period for high-resolution metrics: 1, 5, 10, 30, 60 or a multiple of 60.
_SHORT_PERIODS = (1, 5, 10, 30, 60)
P99 = "p99"


@dataclass(frozen=True)
class Figures:
    """What one release's hosts answered over a window."""

    release: int
    requests: int
    errors: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def as_record(self) -> dict[str, Any]:
        rate = self.error_rate
        return {
            "release": self.release,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if rate is None else round(rate, 6),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
        }


@dataclass(frozen=True)
class Series:
    """One release's figures per period (for the terminal chart): 5xx share and p99, None where
    the period had no request (or no latency datum)."""

    release: int
    error_rates: list[float | None]
    p99_ms: list[float | None]


def allowed_period(seconds: int) -> int:
    """The smallest Period GetMetricData accepts that is at least `seconds`."""
    for period in _SHORT_PERIODS:
        if seconds <= period:
            return period
    return -(-seconds // 60) * 60


def one_period(start: int, end: int) -> tuple[int, int]:
    """(StartTime, Period) so that one period, aligned on a multiple of itself as CloudWatch
    aligns them, covers [start, end): the answer is then one datapoint per metric, and p99 is
    the percentile of every request in the window, not a figure per slice."""
    period = allowed_period(max(end - start, 1))
    while (start // period) * period + period < end:
        period = allowed_period(period + 1)
    return (start // period) * period, period


def _dimensions(app: str, release: int) -> list[dict[str, str]]:
    return [{"Name": "App", "Value": app}, {"Name": "Release", "Value": str(release)}]


def _query(qid: str, app: str, release: int, *, metric: str, stat: str, period: int) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": PROXY_NAMESPACE,
                "MetricName": metric,
                "Dimensions": _dimensions(app, release),
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _queries(app: str, releases: dict[str, int], period: int) -> list[dict[str, Any]]:
    """Sum of Requests, Sum of Errors5xx and p99 of Latency per release (ids `<key>_req`...)."""
    queries = []
    for key, release in releases.items():
        queries.append(_query(f"{key}_req", app, release, metric=PROXY_REQUESTS, stat="Sum", period=period))
        queries.append(_query(f"{key}_err", app, release, metric=PROXY_ERRORS, stat="Sum", period=period))
        queries.append(_query(f"{key}_p99", app, release, metric=PROXY_LATENCY, stat=P99, period=period))
    return queries


def _epoch(value: Any) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


class ProxyMetrics:
    def __init__(self, cloudwatch: Callable[[], CloudWatchClient]) -> None:
        self._cloudwatch = cloudwatch

    def _read(
        self, queries: list[dict[str, Any]], start: int, end: int, what: str
    ) -> dict[str, dict[int, float]]:
        """Every query's datapoints (timestamp → value), all pages; AwsCallFailed when the read
        fails (throttled after the retries: the caller's trigger is retried)."""
        found: dict[str, dict[int, float]] = {q["Id"]: {} for q in queries}
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampAscending",
        }
        while True:
            with aws_errors(what):
                response = self._cloudwatch().get_metric_data(**kwargs)
            for result in response.get("MetricDataResults", []):
                points = found.setdefault(result["Id"], {})
                for at, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    points[_epoch(at)] = float(value)
            token = response.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token

    def figures(self, app: str, canary: int, stable: int, start: int, end: int) -> tuple[Figures, Figures]:
        """The canary's and the stable release's figures over [start, end) (epoch seconds)."""
        aligned, period = one_period(start, end)
        found = self._read(
            _queries(app, {"c": canary, "s": stable}, period),
            aligned,
            aligned + period,
            f"reading the proxy metrics of {app} releases {canary} and {stable}",
        )

        def release_figures(key: str, release: int) -> Figures:
            latency = found[f"{key}_p99"].values()
            return Figures(
                release=release,
                requests=int(sum(found[f"{key}_req"].values())),
                errors=int(sum(found[f"{key}_err"].values())),
                # One period answers one value; were it split, the worst slice is the figure.
                p99_ms=max(latency) if latency else None,
            )

        return release_figures("c", canary), release_figures("s", stable)

    def series(self, app: str, releases: list[int], start: int, end: int, points: int = 30) -> list[Series]:
        """Each release's 5xx share and p99 over [start, end) in about `points` periods."""
        period = allowed_period(max((end - start) // max(points, 1), 1))
        aligned = (start // period) * period
        keys = {f"r{i}": release for i, release in enumerate(releases)}
        found = self._read(
            _queries(app, keys, period),
            aligned,
            max(end, aligned + period),
            f"reading the proxy metrics of {app}",
        )
        slots = list(range(aligned, max(end, aligned + period), period))
        out = []
        for key, release in keys.items():
            requests, errors, p99 = found[f"{key}_req"], found[f"{key}_err"], found[f"{key}_p99"]
            rates: list[float | None] = [
                (errors.get(at, 0.0) / requests[at]) if requests.get(at) else None for at in slots
            ]
            out.append(Series(release, rates, [p99.get(at) for at in slots]))
        return out
