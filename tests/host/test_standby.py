"""Warm standby and instant abort (docs/agent.md, "Standby"): a canary swap with --keep-standby
keeps the stable release's container running, drained; a swap back to it is one rule switch (no
pull, no start); a swap without the flag removes the standby. Real Docker, nginx and nftables."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from localcloud.hosts.images import AppImage
from localcloud.hosts.load import LoadGenerator
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import APP, body, container_id, swap

pytestmark = pytest.mark.integration

Publish = Callable[..., AppImage]


def name(host: HostSandbox, colour: str) -> str:
    return f"{host.host_id}-{APP}-{colour}"


def canary(host: HostSandbox, publish: Publish) -> tuple[AppImage, AppImage]:
    """Release 1 live, then release 2 swapped in with --keep-standby (a canary stage)."""
    one, two = publish(1), publish(2)
    assert swap(host, one, mode="boot")[0] == 0
    code, summary, err = swap(host, two, keep_standby="true")
    assert code == 0, (summary, err[-2000:])
    return one, two


def diagnose(host: HostSandbox) -> dict[str, Any]:
    code, report, err = host.run_agent("diagnose", [f"--app={APP}", "--health-path=/health"])
    assert code == 0, err
    return report


def test_a_canary_keeps_the_stable_container_and_an_abort_switches_back_to_it_without_a_start(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live, then release 2 deployed with --keep-standby
    one, _ = canary(host, publish)
    # Then both containers run, traffic is on 2, and the state and diagnose name the standby
    assert host.containers() == [name(host, "blue"), name(host, "green")]
    assert host.get("/") == (200, body(2))
    state = host.state(APP) or {}
    assert state["release"] == 2
    assert state["standby"] == {"release": 1, "digest": one.digest, "config_id": "", "colour": "blue",
                                "container": name(host, "blue"), "image": one.reference}
    report = diagnose(host)
    assert report["layer"] == "none", report
    assert [(c["name"], c["role"], c["release"]) for c in report["containers"]] == [
        (name(host, "blue"), "standby", 1), (name(host, "green"), "live", 2)]
    assert report["container_bound"] == 2
    standby_id = container_id(name(host, "blue"))
    # When release 1 is swapped to again, without the flag (the abort)
    code, summary, err = swap(host, one)
    # Then the standby container itself serves (no docker run: the same container), traffic is
    # on 1 when the call returns, the canary's container is gone, and the summary says how
    assert code == 0, (summary, err[-2000:])
    assert summary["outcome"] == "live"
    assert container_id(name(host, "blue")) == standby_id
    assert host.get("/") == (200, body(1))
    assert host.containers(all_states=True) == [name(host, "blue")]
    assert summary["timings"]["pull"] == 0
    assert summary["timings"]["start"] == 0
    assert summary["timings"]["standby"] > 0
    assert "standby container" in summary["message"]
    state = host.state(APP) or {}
    assert (state["release"], state["colour"], state.get("standby")) == (1, "blue", None)


def test_the_last_stage_without_the_flag_removes_the_standby(host: HostSandbox, publish: Publish) -> None:
    # Given release 2 live on a canary host with release 1 as its standby
    _, two = canary(host, publish)
    # When release 2 is sent again without --keep-standby (the last stage reaching this host)
    code, summary, err = swap(host, two)
    # Then it is already live, and only its container is left
    assert code == 0, (summary, err[-2000:])
    assert summary["outcome"] == "already_live"
    assert host.containers(all_states=True) == [name(host, "green")]
    assert host.get("/") == (200, body(2))
    assert (host.state(APP) or {}).get("standby") is None
    assert [c["role"] for c in diagnose(host)["containers"]] == ["live"]


def test_a_container_that_never_went_live_here_is_not_kept_as_a_standby(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 2 live, and on the other colour a container of release 3 that never served
    # here (as a run killed after its `docker run` leaves it), labelled as the agent labels
    one, two, three = publish(1), publish(2), publish(3)
    assert swap(host, one, mode="boot")[0] == 0
    assert swap(host, two)[0] == 0
    labels = {"deployer.host": host.host_id, "deployer.app": APP, "deployer.release": "3",
              "deployer.digest": three.digest, "deployer.colour": "blue"}
    subprocess.run(["docker", "run", "-d", "--init", "--name", name(host, "blue"),
                    *[f"--label={k}={v}" for k, v in labels.items()], three.reference],
                   capture_output=True, check=True)
    report = diagnose(host)
    assert [(c["name"], c["role"]) for c in report["containers"]] == [
        (name(host, "blue"), "leftover"), (name(host, "green"), "live")]
    assert report["layer"] == "app"
    # When release 2 is sent again with --keep-standby
    code, summary, err = swap(host, two, keep_standby="true")
    # Then that container is removed, not kept as a standby
    assert code == 0, (summary, err[-2000:])
    assert host.containers(all_states=True) == [name(host, "green")]
    assert (host.state(APP) or {}).get("standby") is None


def test_an_abort_under_load_fails_no_request(host: HostSandbox, publish: Publish) -> None:
    # Given a canary host (2 live, 1 standby) under 300 req/s
    one, _ = canary(host, publish)
    with LoadGenerator("127.0.0.1", host.listen_port, rate=300.0, connections=10, max_seconds=60) as load:
        time.sleep(0.5)
        # When the abort swaps release 1 back
        code, summary, err = swap(host, one)
        done = load.mark()
        time.sleep(0.5)
        after = load.result.bodies_between(done, load.mark())
    # Then no request failed and everything after the call came from release 1
    assert code == 0, (summary, err[-2000:])
    assert load.result.failed == 0, dict(load.result.errors)
    assert after == {body(1)}
    assert set(load.result.bodies) == {body(1), body(2)}
