"""The agent's read-only `diagnose` mode on a real host sandbox (Docker, nginx, nftables, a
registry): it names the layer that fails, and it changes nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localcloud.hosts.images import AppImage
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import APP, swap

pytestmark = pytest.mark.integration


def diagnose(host: HostSandbox) -> dict[str, Any]:
    code, report, err = host.run_agent("diagnose", [f"--app={APP}", "--health-path=/health"])
    assert code == 0, err
    return report


def failed(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["ok"]}


def live(host: HostSandbox, publish: Callable[..., AppImage]) -> AppImage:
    image = publish(1)
    code, summary, err = swap(host, image)
    assert code == 0, (summary, err)
    return image


def test_a_healthy_host_has_no_failing_layer_and_diagnose_changes_nothing(
    host: HostSandbox, publish: Callable[..., AppImage]
) -> None:
    # Given release 1 live on the host
    live(host, publish)
    state_before = host.state(APP)
    containers_before = sorted(host.containers(all_states=True))

    # When it is diagnosed
    report = diagnose(host)

    # Then nothing fails, and the state and containers are as they were
    assert report["layer"] == "none", report
    assert failed(report) == set()
    names = {c["name"] for c in report["checks"]}
    assert {
        "docker engine",
        "live container",
        "app health",
        "proxy target",
        "proxy answers",
        "registry",
    } <= names
    assert report["release"] == 1
    assert host.state(APP) == state_before
    assert sorted(host.containers(all_states=True)) == containers_before


def test_a_stopped_app_container_is_the_app_layer(
    host: HostSandbox, publish: Callable[..., AppImage]
) -> None:
    # Given release 1 live, then its container stopped behind the agent's back
    live(host, publish)
    container = host.state(APP)["container"]  # type: ignore[index]
    subprocess.run(["docker", "stop", "-t", "1", container], check=True, capture_output=True)

    # When the host is diagnosed
    report = diagnose(host)

    # Then the app layer is named, with the container's state in the detail
    assert report["layer"] == "app", report
    assert "live container" in failed(report)
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "live container")
    assert "exited" in detail


def test_nginx_down_is_the_proxy_layer(host: HostSandbox, publish: Callable[..., AppImage]) -> None:
    # Given release 1 live, then nginx gone
    live(host, publish)
    pid = host.nginx_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while host.nginx_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)

    # When the host is diagnosed
    report = diagnose(host)

    # Then the app is fine and the proxy is named
    assert report["layer"] == "proxy", report
    assert failed(report) == {"proxy answers", "proxy master"}


def test_a_killed_nginx_master_is_the_proxy_layer_while_its_worker_still_serves(
        host: HostSandbox, publish: Callable[..., AppImage]) -> None:
    # Given release 1 live, then the nginx master killed alone (its worker keeps serving)
    live(host, publish)
    pid = host.nginx_pid()
    assert pid is not None
    workers = [int(w) for w in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    os.kill(pid, signal.SIGKILL)
    try:
        time.sleep(0.2)
        assert host.get("/")[0] == 200

        # When the host is diagnosed
        report = diagnose(host)
    finally:
        for worker in workers:  # the orphaned workers of this test's nginx
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)

    # Then the proxy layer is named for its missing master
    assert report["layer"] == "proxy", report
    assert failed(report) == {"proxy master"}


def test_an_unreachable_registry_is_the_registry_layer(
    host: HostSandbox, publish: Callable[..., AppImage], registry: Registry
) -> None:
    # Given release 1 live, then the registry answering 503 to everything
    live(host, publish)
    registry.fail_always(503)
    try:
        # When the host is diagnosed
        report = diagnose(host)
    finally:
        registry.heal()

    # Then the app still serves and the registry is named
    assert report["layer"] == "registry", report
    assert failed(report) == {"registry"}


def test_a_host_that_never_ran_the_app_is_the_app_layer(host: HostSandbox) -> None:
    report = diagnose(host)
    assert report["layer"] == "app"
    assert "release state" in failed(report)


def test_a_killed_nginx_comes_back_by_itself_under_the_proxy_drop_in(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage]) -> None:
    # Given a host whose nginx runs under (a stand-in for) systemd, booted with release 1
    host = make_host(supervise_proxy=True)
    code, summary, err = swap(host, publish(1), mode="boot")
    assert code == 0, (summary, err)
    for kill_workers in (False, True):
        pid = host.nginx_pid()
        assert pid is not None
        workers = [int(w) for w in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        # When its master is killed (then, the second time, every nginx process)
        os.kill(pid, signal.SIGKILL)
        if kill_workers:
            for worker in workers:
                os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and host.nginx_pid() in (None, pid):
            time.sleep(0.05)
        # Then a new master serves release 1 again, with no agent run, and diagnose is clean
        assert host.nginx_pid() not in (None, pid)
        assert host.get("/")[0] == 200
        assert diagnose(host)["layer"] == "none"


def test_without_the_agents_drop_in_a_killed_nginx_stays_down(
        make_host: Callable[..., HostSandbox]) -> None:
    # Given a host whose nginx runs under the systemd stand-in, before any agent run installed
    # the proxy's drop-in
    host = make_host(supervise_proxy=True)
    pid = host.nginx_pid()
    assert pid is not None
    unit_dir = Path(host.config["systemd_unit_dir"])
    assert not (unit_dir / "nginx.service.d").exists()
    # When every nginx process is killed
    workers = [int(w) for w in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for victim in (pid, *workers):
        os.kill(victim, signal.SIGKILL)
    time.sleep(2.0)
    # Then nothing brings it back (the restart comes from the drop-in, not from the stand-in)
    assert host.nginx_pid() is None
    assert "not restarted" in (unit_dir / "unitd.log").read_text()
