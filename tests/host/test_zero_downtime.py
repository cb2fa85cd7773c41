"""Zero downtime: real traffic (GETs, echoed POSTs, slow requests) through nginx during 20 swaps,
for the busybox test app (one connection per request) and gunicorn (keeps connections alive,
drains gracefully on SIGTERM)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from localcloud.hosts.images import ECHO_PATH, SLOW_PATH, AppImage
from localcloud.hosts.load import LoadGenerator
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import body, swap

pytestmark = pytest.mark.integration

SWAPS = 20
RATE = 1000.0
CONNECTIONS = 20
POST_RATIO = 0.25
SLOW_RATE = 4.0  # 1 s requests per second: several are in flight at every switch
SETTLE = 0.3  # seconds of traffic observed after each swap returns


@pytest.mark.parametrize("server", ["busybox", "gunicorn"])
def test_twenty_swaps_under_real_traffic_fail_no_request(
        host: HostSandbox, publish: Callable[..., AppImage], server: str) -> None:
    # Given release 1 live and a release 2 to alternate with
    one, two = publish(1, server=server), publish(2, server=server)
    assert swap(host, one, mode="boot")[0] == 0
    assert swap(host, two)[0] == 0
    releases = [one, two]
    problems: list[str] = []
    windows: list[tuple[float, float]] = []
    # When 20 swaps run back to back under 1000 req/s of keep-alive clients, a quarter of them
    # POSTs whose body must be echoed, plus slow (1 s) GETs on their own clients
    with LoadGenerator("127.0.0.1", host.listen_port, rate=RATE, connections=CONNECTIONS,
                       max_seconds=240, post_ratio=POST_RATIO, post_path=ECHO_PATH,
                       slow_path=f"{SLOW_PATH}?sleep=1", slow_rate=SLOW_RATE) as load:
        time.sleep(1.0)
        started = load.mark()
        for n in range(SWAPS):
            target = releases[n % 2]
            begun = load.mark()
            code, summary, stderr = swap(host, target)
            done = load.mark()
            assert code == 0, (summary, stderr[-2000:])
            windows.append((begun, done))
            time.sleep(SETTLE)
            seen_after = load.result.bodies_between(done, load.mark())
            if seen_after != {body(target.release)}:
                problems.append(f"swap {n + 1}: after the switch to {target.release} saw {seen_after}")
        finished = load.mark()
        time.sleep(1.2)  # let the last slow requests answer
    result = load.result
    # Then no request failed (GETs, POSTs with their echo checked, slow GETs), every GET was
    # answered by release 1 or 2 and only by the new one after each switch, a slow request was
    # in flight during every swap, and the offered load really was about 1000 req/s
    assert result.failed == 0, (dict(result.errors), dict(result.failed_by_kind))
    assert result.sent_by_kind["post"] >= 0.2 * result.sent_by_kind["get"]
    assert set(result.bodies) == {body(1), body(2)}
    assert problems == []
    slow = [r for r in result.records if r.kind == "slow"]
    uncovered = [n + 1 for n, (begun, done) in enumerate(windows)
                 if not any(r.sent_at < done and r.ended_at > begun for r in slow)]
    assert uncovered == []
    window = [r for r in result.records if r.kind != "slow" and started <= r.sent_at < finished]
    achieved = len(window) / (finished - started)
    assert achieved >= 0.9 * RATE, f"only {achieved:.0f} req/s were offered"


@pytest.mark.parametrize("server", ["busybox", "gunicorn"])
def test_a_slow_request_in_flight_at_the_switch_is_answered_by_the_old_release(
        host: HostSandbox, publish: Callable[..., AppImage], server: str) -> None:
    # Given release 1 live and a 2 s request to it in flight
    one, two = publish(1, server=server), publish(2, server=server)
    assert swap(host, one, mode="boot")[0] == 0
    answers: list[tuple[int, str]] = []
    answered: list[float] = []

    def slow_get() -> None:
        answers.append(host.get(f"{SLOW_PATH}?sleep=2", timeout=10))
        answered.append(time.monotonic())

    slow = threading.Thread(target=slow_get)
    slow.start()
    time.sleep(0.3)
    # When the host swaps to release 2 meanwhile
    code, summary, stderr = swap(host, two)
    returned = time.monotonic()
    slow.join(10)
    # Then the slow request was answered in full by release 1 before the agent finished (it
    # waited for it before stopping release 1), new requests reach release 2, and only release
    # 2's container still runs
    assert code == 0, (summary, stderr[-2000:])
    assert answers == [(200, body(1))]
    assert answered[0] < returned
    assert host.get("/") == (200, body(2))
    state = host.state("web")
    assert state is not None
    assert host.containers() == [state["container"]]
