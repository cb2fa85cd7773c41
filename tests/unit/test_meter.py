"""The meter's pure parts (host/agent.py): reading nginx's JSON access-log lines, attributing a
request to the release live when it started, quantizing latency, building PutMetricData datums
within the API's limits, signing its requests as botocore does; and the meter's file handling
(offset, rotation, retries) against a local endpoint that records each request it is sent."""

from __future__ import annotations

import datetime
import http.server
import importlib.util
import json
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deployer_agent_meter", ROOT / "host" / "agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AGENT = load_agent()
APP_DIMS = [{"Name": "App", "Value": "web"}]


def rel_dims(release: int) -> list[dict[str, str]]:
    return [{"Name": "App", "Value": "web"}, {"Name": "Release", "Value": str(release)}]


@pytest.mark.parametrize(("line", "parsed"), [
    ('{"t":1764950000.123,"s":200,"rt":0.004}', (1764950000.123, 200, 0.004)),
    ('{"t":1764950000.5,"s":503,"rt":1.250}', (1764950000.5, 503, 1.25)),
    ('{"t":1764950000.5,"s":499,"rt":0.000}', (1764950000.5, 499, 0.0)),
    ('{"t":1764950000.5,"s":"-","rt":0.1}', None),  # not a status
    ('{"t":1764950000.5,"s":200}', None),  # no request time
    ('{"t":1764950000.5,"s":200,"rt":-1}', None),
    ("127.0.0.1 - - [05/Dec/2026] GET / 200", None),  # another log format
])
def test_an_access_log_line_is_read_only_when_the_sites_format_wrote_it(
        line: str, parsed: tuple[float, int, float] | None) -> None:
    assert AGENT.parse_access_line(line) == parsed


def test_a_request_belongs_to_the_release_live_when_it_started_not_when_it_ended() -> None:
    # Given release 1 switched in at t=100 and release 2 at t=200 (lines out of order, one broken)
    switches = AGENT.load_switches(
        '{"at":200.0,"release":2,"port":18082}\nnot json\n{"at":100.0,"release":1,"port":18081}\n')
    assert switches == [(100.0, 1), (200.0, 2)]
    # Then a request that started a millisecond before the switch is release 1's, even when it
    # ended after it; one that started at the switch or after is release 2's
    assert AGENT.release_at(switches, 199.999) == 1
    assert AGENT.release_at(switches, 200.0) == 2
    assert AGENT.release_at(switches, 250.0) == 2
    # and one older than every recorded switch belongs to none
    assert AGENT.release_at(switches, 99.0) is None


@pytest.mark.parametrize(("ms", "quantized"), [
    (0, 0.0), (1, 1.0), (99.4, 99.0), (99.6, 100.0), (123, 120.0), (125, 120.0), (126, 130.0),
    (999, 1000.0), (1234, 1200.0), (56789, 57000.0),
])
def test_latency_is_kept_to_two_significant_digits(ms: float, quantized: float) -> None:
    assert AGENT.quantize_ms(ms) == quantized


def test_quantized_latency_is_never_more_than_five_percent_off_and_has_few_distinct_values() -> None:
    values = [AGENT.quantize_ms(ms) for ms in range(0, 60001)]
    assert all(abs(q - ms) <= max(0.5, 0.05 * ms) for ms, q in enumerate(values))
    assert len(set(values)) < 700  # 60,001 latencies (1 ms to 1 min) in under 700 values


def test_a_seconds_datums_carry_the_contracts_names_units_dimensions_and_timestamp() -> None:
    # Given 3 requests of release 7 in one second, one a 503, and one of no known release
    buckets = AGENT.MeterBuckets()
    buckets.add(7, 1764950000.2, 200, 0.004)
    buckets.add(7, 1764950000.9, 503, 0.004)
    buckets.add(7, 1764950000.95, 200, 0.120)
    buckets.add(None, 1764950000.5, 200, 0.010)
    # When its datums are built
    datums = AGENT.metric_datums("web", buckets.take())
    # Then the release has Requests 3, Errors5xx 1 and its latencies with their counts
    by = {(d["MetricName"], json.dumps(d["Dimensions"])): d for d in datums}
    release = json.dumps(rel_dims(7))
    assert by[("Requests", release)]["Value"] == 3
    assert by[("Requests", release)]["Unit"] == "Count"
    assert by[("Errors5xx", release)]["Value"] == 1
    latency = by[("Latency", release)]
    assert (latency["Values"], latency["Counts"]) == ([4.0, 120.0], [2.0, 1.0])
    assert latency["Unit"] == "Milliseconds"
    # and the app-wide datums count every request, attributed or not
    assert by[("Requests", json.dumps(APP_DIMS))]["Value"] == 4
    assert by[("Errors5xx", json.dumps(APP_DIMS))]["Value"] == 1
    # and every datum is the whole second the requests ended in, at high resolution
    assert {d["Timestamp"] for d in datums} == {"2025-12-05T15:53:20Z"}
    assert {d["StorageResolution"] for d in datums} == {1}
    assert len(datums) == 6
    assert buckets.take() == {}


def test_a_second_with_more_than_150_latencies_is_split_over_datums_of_at_most_150_values() -> None:
    # Given 400 requests of one second whose latencies quantize to over 200 distinct values
    buckets = AGENT.MeterBuckets()
    for i in range(400):
        buckets.add(3, 1764950000.0, 200, (i if i < 100 else 100 + 10 * (i - 100)) / 1000.0)
    # When its datums are built
    latency = [d for d in AGENT.metric_datums("web", buckets.take())
               if d["MetricName"] == "Latency" and d["Dimensions"] == rel_dims(3)]
    # Then no datum holds more than 150 values, and together they count every request once
    assert len(latency) > 1
    assert all(len(d["Values"]) == len(d["Counts"]) <= 150 for d in latency)
    assert sum(sum(d["Counts"]) for d in latency) == 400
    values = [v for d in latency for v in d["Values"]]
    assert len(values) == len(set(values))


def test_a_quiet_interval_sends_nothing() -> None:
    assert AGENT.metric_datums("web", AGENT.MeterBuckets().take()) == []


def test_datums_go_out_in_calls_of_at_most_1000_datums_and_under_a_megabyte() -> None:
    small = [{"MetricName": "Requests", "Value": i} for i in range(2500)]
    assert [len(b) for b in AGENT.datum_batches(small)] == [1000, 1000, 500]
    big = [{"MetricName": "Latency", "Values": [float(v) for v in range(150)], "Counts": [1.0] * 150,
            "Dimensions": rel_dims(1)} for _ in range(1000)]
    batches = AGENT.datum_batches(big)
    assert sum(len(b) for b in batches) == 1000
    assert all(len(json.dumps({"Namespace": "Deployer/Proxy", "MetricData": b})) < 1_000_000 for b in batches)
    assert len(batches) > 1


# ------------------------------------------------------------------ the meter's files


class Endpoint(http.server.BaseHTTPRequestHandler):
    """CloudWatch's query endpoint as the meter sees it: records each PutMetricData body, or
    answers 503 while the server's `failing` is set."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        if server.failing:
            self.send_response(503)
            self.end_headers()
            return
        server.bodies.append(urllib.parse.parse_qs(body.decode(), strict_parsing=True))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<PutMetricDataResponse/>")

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def meter_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Host settings and credentials whose CloudWatch endpoint is a local recorder."""
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    server.bodies, server.failing = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_CLOUDWATCH", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    config = dict(AGENT.HOST_DEFAULTS)
    config.update(state_dir=str(tmp_path / "state"), access_log_dir=str(tmp_path / "logs"),
                  nginx_command=["true"], meter_interval=1, region="us-east-1")
    (tmp_path / "logs").mkdir()
    (tmp_path / "state" / "web").mkdir(parents=True)
    (tmp_path / "state" / "web" / "switches.jsonl").write_text('{"at":1000.0,"release":1,"port":1}\n')
    yield {"config": config, "server": server, "log": tmp_path / "logs" / "web.access.json"}
    server.shutdown()
    server.server_close()


def write(path: Path, count: int, status: int = 200, end: float = 1764950000.5) -> None:
    with path.open("a") as handle:
        for _ in range(count):
            handle.write(json.dumps({"t": end, "s": status, "rt": 0.002}) + "\n")


def sent_requests(server: Any) -> int:
    """Release 1's Requests summed over every PutMetricData the endpoint received."""
    total = 0.0
    for fields in server.bodies:
        assert fields["Action"] == ["PutMetricData"]
        assert fields["Namespace"] == ["Deployer/Proxy"]
        members = {key.split(".")[2] for key in fields if key.startswith("MetricData.member.")}
        for n in members:
            datum = f"MetricData.member.{n}."
            dim = datum + "Dimensions.member."
            dims = [(fields[f"{dim}{i}.Name"][0], fields[f"{dim}{i}.Value"][0])
                    for i in (1, 2) if f"{dim}{i}.Name" in fields]
            if fields[datum + "MetricName"] == ["Requests"] and dims == [("App", "web"), ("Release", "1")]:
                total += float(fields[datum + "Value"][0])
    return int(total)


def test_a_failed_send_is_retried_at_the_next_flush_and_sent_once(meter_host: dict[str, Any]) -> None:
    # Given a meter reading the log from its start, and CloudWatch unreachable
    write(meter_host["log"], 0)
    meter = AGENT.Meter(meter_host["config"], "web")
    meter.resume()
    meter_host["server"].failing = True
    # When 5 requests are flushed, then CloudWatch comes back and 2 more are flushed
    write(meter_host["log"], 5)
    meter.flush()
    assert sent_requests(meter_host["server"]) == 0
    meter_host["server"].failing = False
    write(meter_host["log"], 2)
    meter.flush()
    # Then both intervals arrived, once each
    assert sent_requests(meter_host["server"]) == 7
    meter.flush()
    assert sent_requests(meter_host["server"]) == 7


def test_a_restarted_meter_resumes_at_its_last_flush_and_a_new_one_at_the_end(
        meter_host: dict[str, Any]) -> None:
    # Given a log with 3 old requests and a meter that never ran: it starts at the end
    write(meter_host["log"], 3)
    first = AGENT.Meter(meter_host["config"], "web")
    first.resume()
    write(meter_host["log"], 4)
    first.flush()
    assert sent_requests(meter_host["server"]) == 4
    # When it dies and 6 requests (and half a line) are written before another meter starts
    write(meter_host["log"], 6)
    with meter_host["log"].open("a") as handle:
        handle.write('{"t":1764950000.5,"s":20')
    second = AGENT.Meter(meter_host["config"], "web")
    second.resume()
    second.flush()
    # Then those 6 are sent once; the half-written line waits for its end
    assert sent_requests(meter_host["server"]) == 10
    with meter_host["log"].open("a") as handle:
        handle.write('0,"rt":0.001}\n')
    second.flush()
    assert sent_requests(meter_host["server"]) == 11


def test_a_large_log_is_rotated_and_every_line_of_both_files_counted_once(
        meter_host: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a meter whose log rotates past 1 KB
    monkeypatch.setattr(AGENT, "ACCESS_LOG_MAX_BYTES", 1024)
    log = meter_host["log"]
    write(log, 0)
    meter = AGENT.Meter(meter_host["config"], "web")
    meter.resume()
    # When 30 requests (over 1 KB) are flushed, 5 more reach the old file before nginx reopens,
    # and 7 go to the new file
    write(log, 30)
    meter.flush()
    rotated = Path(str(log) + ".1")
    assert rotated.exists()
    write(rotated, 5)
    write(log, 7)
    meter.flush()
    # Then all 42 are sent, once
    assert sent_requests(meter_host["server"]) == 42
    assert os.stat(log).st_size < 1024


def test_a_truncated_log_is_read_again_from_its_start(meter_host: dict[str, Any]) -> None:
    log = meter_host["log"]
    write(log, 10)
    meter = AGENT.Meter(meter_host["config"], "web")
    meter.resume()  # at the end: those 10 are not its own
    log.write_text("")
    write(log, 2)
    meter.flush()
    assert sent_requests(meter_host["server"]) == 2


@pytest.mark.parametrize(("key", "value"), [
    ("access_log_dir", "relative/logs"),
    ("access_log_dir", "/var/log/my logs"),  # written into the nginx site unquoted
    ("access_log_dir", "/var/log/x;include /etc/passwd"),
    ("meter_interval", 0),
    ("meter_interval", 61),
    ("meter_interval", "10"),
    ("meter_interval", True),
])
def test_a_bad_meter_setting_is_refused_naming_its_key(
        key: str, value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({key: value}))
    monkeypatch.setenv("DEPLOYER_HOST_CONFIG", str(path))
    with pytest.raises(AGENT.Failure) as refused:
        AGENT.load_host_config()
    assert refused.value.failure_class == "input"
    assert f"host config {key} must be" in refused.value.message


def test_the_meter_settings_default_to_the_production_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_HOST_CONFIG", str(tmp_path / "absent.json"))
    config = AGENT.load_host_config()
    assert (config["access_log_dir"], config["meter_interval"]) == ("/var/log/deployer", 10)
    assert AGENT.access_log_path(config, "web") == Path("/var/log/deployer/web.access.json")


def test_requests_are_signed_exactly_as_botocore_signs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a PutMetricData body, session credentials and a moment
    import botocore.auth  # noqa: PLC0415 - only this test needs botocore
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    body = AGENT.put_metric_data_body("Deployer/Proxy", [
        {"MetricName": "Latency", "Dimensions": rel_dims(3), "Timestamp": "2026-12-05T16:00:01Z",
         "Values": [1.5, 20.0], "Counts": [3.0, 1.0], "Unit": "Milliseconds", "StorageResolution": 1}])
    at = datetime.datetime(2026, 12, 5, 16, 0, 2, tzinfo=datetime.UTC)
    url = "https://monitoring.eu-west-1.amazonaws.com/"
    # When the agent signs it, and botocore signs the same request
    ours = AGENT.sigv4_headers(url, body, service="monitoring", region="eu-west-1",
                               credentials=("AKIDEXAMPLE", "secret/key+", "token=="), at=at)
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"Content-Type": ours["content-type"], "X-Amz-Date": ours["x-amz-date"]})
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    credentials = Credentials("AKIDEXAMPLE", "secret/key+", "token==")
    auth = botocore.auth.SigV4Auth(credentials, "monitoring", "eu-west-1")
    auth.add_auth(request)
    # Then the signatures are the same
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-security-token"] == "token=="


def test_the_body_is_the_query_protocols_flattening_of_the_datums() -> None:
    body = AGENT.put_metric_data_body("Deployer/Proxy", [
        {"MetricName": "Requests", "Dimensions": rel_dims(3), "Value": 4, "Unit": "Count"}])
    assert urllib.parse.parse_qs(body.decode()) == {
        "Action": ["PutMetricData"], "Version": ["2010-08-01"], "Namespace": ["Deployer/Proxy"],
        "MetricData.member.1.MetricName": ["Requests"],
        "MetricData.member.1.Dimensions.member.1.Name": ["App"],
        "MetricData.member.1.Dimensions.member.1.Value": ["web"],
        "MetricData.member.1.Dimensions.member.2.Name": ["Release"],
        "MetricData.member.1.Dimensions.member.2.Value": ["3"],
        "MetricData.member.1.Value": ["4"], "MetricData.member.1.Unit": ["Count"]}


def test_a_batch_over_the_payload_limit_once_encoded_is_sent_in_halves() -> None:
    big = [{"MetricName": "Latency", "Values": [float(v) for v in range(150)], "Counts": [1.0] * 150,
            "Dimensions": rel_dims(1)} for _ in range(1000)]
    batches = AGENT.query_batches(big)
    assert sum(len(b) for b in batches) == 1000
    sizes = [len(AGENT.put_metric_data_body("Deployer/Proxy", b)) for b in batches]
    assert max(sizes) <= AGENT.METER_MAX_PAYLOAD
