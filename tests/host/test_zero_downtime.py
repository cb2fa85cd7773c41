"""Zero downtime: keep-alive clients at a fixed rate through nginx during 20 consecutive swaps."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from localcloud.images import AppImage
from localcloud.load import LoadGenerator
from localcloud.sandbox import HostSandbox
from tests.host.helpers import body, swap

pytestmark = pytest.mark.integration

SWAPS = 20
RATE = 1000.0
CONNECTIONS = 20
SETTLE = 0.3  # seconds of traffic observed after each swap returns


def test_twenty_swaps_under_keep_alive_load_fail_no_request(
        host: HostSandbox, publish: Callable[..., AppImage]) -> None:
    # Given release 1 live and a release 2 to alternate with
    one, two = publish(1), publish(2)
    assert swap(host, one, mode="boot")[0] == 0
    assert swap(host, two)[0] == 0
    releases = [one, two]
    problems: list[str] = []
    # When 20 swaps run back to back under a fixed 1000 req/s keep-alive load (bounded in time)
    with LoadGenerator("127.0.0.1", host.listen_port, rate=RATE, connections=CONNECTIONS,
                       max_seconds=150) as load:
        time.sleep(0.5)
        started = load.mark()
        for n in range(SWAPS):
            target = releases[n % 2]
            code, summary, stderr = swap(host, target)
            done = load.mark()
            assert code == 0, (summary, stderr[-2000:])
            time.sleep(SETTLE)
            seen_after = load.result.bodies_between(done, load.mark())
            if seen_after != {body(target.release)}:
                problems.append(f"swap {n + 1}: after the switch to {target.release} saw {seen_after}")
        finished = load.mark()
    result = load.result
    # Then no request failed, every answer came from release 1 or 2, only the new one after each
    # switch, and the offered load really was about 1000 req/s
    assert result.failed == 0, dict(result.errors)
    assert set(result.bodies) == {body(1), body(2)}
    assert problems == []
    window = [t for t, _ in result.samples if started <= t < finished]
    achieved = len(window) / (finished - started)
    assert achieved >= 0.9 * RATE, f"only {achieved:.0f} req/s were offered"
    assert result.sent >= SWAPS * 1000
