"""Per-release proxy metrics on a real host: nginx's JSON access log, the meter (`agent.py meter`)
sending with the real AWS CLI to CloudWatch (a moto server), read back as the analysis reads it."""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from localcloud.hosts.images import STATUS_PATH, AppImage
from localcloud.hosts.sandbox import HostSandbox
from tests.host.conftest import SECRETS_REGION, SecretStore
from tests.host.helpers import APP, body, swap

pytestmark = pytest.mark.integration

NAMESPACE = "Deployer/Proxy"


def sums(cloudwatch: Any, metric: str, dimensions: list[dict[str, str]], stat: str = "Sum") -> float:
    """The metric's `stat` over the last ten minutes, all seconds added up."""
    now = datetime.datetime.now(datetime.UTC)
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[{"Id": "m", "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
            "Period": 1, "Stat": stat}}],
        StartTime=now - datetime.timedelta(minutes=10), EndTime=now + datetime.timedelta(minutes=1))
    return float(sum(answer["MetricDataResults"][0]["Values"]))


def release_dims(release: int) -> list[dict[str, str]]:
    return [{"Name": "App", "Value": APP}, {"Name": "Release", "Value": str(release)}]


def traffic(host: HostSandbox, ok: int, errors: int, release: int) -> None:
    for _ in range(ok):
        assert host.get("/") == (200, body(release))
    for _ in range(errors):
        assert host.get(f"{STATUS_PATH}?code=503")[0] == 503


def wait_for(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


def test_the_meter_sends_each_releases_requests_and_5xx_and_survives_a_kill_without_double_counting(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given a host whose meter reaches a moto CloudWatch, release 1 live and its meter running
    cloudwatch = boto3.client("cloudwatch", endpoint_url=secret_store.endpoint, region_name=SECRETS_REGION)
    host = make_host(**secret_store.host_settings())
    one, two = publish(1), publish(2)
    assert swap(host, one, mode="boot")[0] == 0
    meter = host.start_meter(APP, env={"AWS_ENDPOINT_URL": secret_store.endpoint})
    time.sleep(0.5)  # it starts at the end of the log: nothing served before it is sent
    # When release 1 answers 20 good requests and 5 errors
    traffic(host, ok=20, errors=5, release=1)
    # Then CloudWatch has them under release 1
    assert wait_for(lambda: sums(cloudwatch, "Requests", release_dims(1)) == 25), host.meter_log(APP)
    # When the meter is killed (no last flush), 6 more requests are served, and it starts again
    os.kill(meter.pid, signal.SIGKILL)
    meter.wait()
    traffic(host, ok=4, errors=2, release=1)
    host.stop_meter(APP)
    host.start_meter(APP, env={"AWS_ENDPOINT_URL": secret_store.endpoint})
    # and release 2 goes live and answers 10 good requests, 3 errors and 2 client errors
    code, summary, err = swap(host, two)
    assert code == 0, (summary, err[-2000:])
    traffic(host, ok=10, errors=3, release=2)
    for _ in range(2):
        assert host.get(f"{STATUS_PATH}?code=404")[0] == 404
    assert host.stop_meter(APP) == 0  # SIGTERM: one last flush
    log = host.meter_log(APP)
    # Then each release's counts are exactly what it served: the requests during the kill are
    # sent once, after the restart, and nothing is counted twice
    assert sums(cloudwatch, "Requests", release_dims(1)) == 31, log
    assert sums(cloudwatch, "Errors5xx", release_dims(1)) == 7, log
    assert sums(cloudwatch, "Requests", release_dims(2)) == 15, log
    assert sums(cloudwatch, "Errors5xx", release_dims(2)) == 3, log
    # and the latency has one sample per request; the app-wide metrics add both releases up
    assert sums(cloudwatch, "Latency", release_dims(2), stat="SampleCount") == 15, log
    app_wide = [{"Name": "App", "Value": APP}]
    assert sums(cloudwatch, "Requests", app_wide) == 46, log
    assert sums(cloudwatch, "Errors5xx", app_wide) == 10, log
    # and the metrics carry exactly the contract's names and dimensions
    listed = cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]
    names = ("Requests", "Errors5xx", "Latency")
    assert {(m["MetricName"], tuple(d["Name"] for d in m["Dimensions"])) for m in listed} == {
        (name, dims) for name in names for dims in (("App",), ("App", "Release"))}


def switch_lines(host: HostSandbox) -> list[dict[str, Any]]:
    path = Path(host.config["state_dir"]) / APP / "switches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_switch_is_recorded_once_and_a_line_a_killed_run_missed_is_written_by_the_next_run(
        host: HostSandbox, publish: Callable[..., AppImage]) -> None:
    # Given release 1 live: its switch is recorded with the colour port it went live on
    one, two = publish(1), publish(2)
    before = time.time()
    assert swap(host, one)[0] == 0
    lines = switch_lines(host)
    assert [(line["release"], line["port"]) for line in lines] == [(1, host.state(APP)["port"])]
    assert before <= lines[0]["at"] <= time.time()
    # When the line is lost (a run killed between the switch and the line) and the agent runs again
    (Path(host.config["state_dir"]) / APP / "switches.jsonl").unlink()
    code, summary, _ = swap(host, one)
    # Then that run, finding release 1 live, writes it; a further run adds nothing
    assert (code, summary["outcome"]) == (0, "already_live")
    assert [line["release"] for line in switch_lines(host)] == [1]
    assert swap(host, one)[0] == 0
    assert [line["release"] for line in switch_lines(host)] == [1]
    # and the swap to release 2 appends its own line, on the other colour's port
    assert swap(host, two)[0] == 0
    assert [(line["release"], line["port"]) for line in switch_lines(host)] == [
        (1, lines[0]["port"]), (2, host.state(APP)["port"])]
    assert lines[0]["port"] != host.state(APP)["port"]
