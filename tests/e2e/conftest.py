"""The local cloud for end-to-end tests: one per module (starting it, warming five Lambda
workers and booting hosts is the expensive part), with helpers that read its state.

Tests share the cloud, never what another test did to it: a test that needs an app in some
state gets it from its module's fixture, which reads the state back from the cloud, reuses the
app when it is already there and otherwise sets it up (on a fresh app when it cannot be reached
from the current one), so every test passes alone, in any order, and after a failed one."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud.cloud import LocalCloud, Timeline


def docker_ready() -> bool:
    if shutil.which("docker") is None or shutil.which("nginx") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    if not docker_ready():
        pytest.fail("the e2e tests need the Docker engine and nginx (tools/services.sh start)")
    with LocalCloud(timeline=Timeline(echo=False)) as c:
        yield c
        # On failure, pytest shows this with -rA / in the captured output.
        print("\n".join(f"[{t:6.1f}s] {line}" for t, line in c.log.lines))


def release_by_tag(cloud: LocalCloud, app: str, tag: str, source: str = "push") -> dict[str, Any] | None:
    rels = [r for r in cloud.releases(app) if r.get("tag") == tag and r.get("source", "push") == source]
    return rels[-1] if rels else None


def recent(cloud: LocalCloud, n: int = 30) -> str:
    return "\n".join(f"[{t:6.1f}s] {line[:300]}" for t, line in cloud.log.lines[-n:])


def wait_release(
    cloud: LocalCloud, app: str, tag: str, statuses: set[str], timeout: float = 120
) -> dict[str, Any]:
    try:
        cloud.wait_for(
            lambda: (release_by_tag(cloud, app, tag) or {}).get("status") in statuses,
            timeout,
            f"{app} {tag} to reach {sorted(statuses)}",
        )
    except TimeoutError as exc:
        rels = [(r["release"], r.get("tag"), r.get("status")) for r in cloud.releases(app)]
        raise AssertionError(f"{exc}; releases {rels}\n{recent(cloud)}") from exc
    rel = release_by_tag(cloud, app, tag)
    assert rel is not None
    return rel


def host_digests(cloud: LocalCloud, app: str) -> dict[str, str | None]:
    assert cloud.fleet is not None
    return {h.instance_id: (h.sandbox.state(app) or {}).get("digest") for h in cloud.fleet.live(f"{app}-asg")}


def served_bodies(cloud: LocalCloud, app: str) -> dict[str, str]:
    assert cloud.fleet is not None
    return {h.instance_id: h.sandbox.get("/")[1] for h in cloud.fleet.live(f"{app}-asg")}


def summaries(cloud: LocalCloud, command_id: str) -> dict[str, dict[str, Any]]:
    """The agent summary (last JSON stdout line) per host of one command."""
    assert cloud.ssm is not None
    out = {}
    for h in cloud.ssm.runs[command_id].hosts:
        lines = [ln for ln in h.stdout.splitlines() if ln.startswith("{")]
        out[h.instance_id] = json.loads(lines[-1]) if lines else {}
    return out


def boot_fleet(cloud: LocalCloud, app: str, hosts: int, **config: Any) -> dict[str, Any]:
    """Register the app, push v1 to the empty group, then scale it out: hosts boot v1."""
    cloud.create_app(app, **config)
    cloud.push(app, "v1", 1, app=app)
    v1 = wait_release(cloud, app, "v1", {"SUCCEEDED"})
    cloud.scale(app, hosts)
    assert cloud.fleet is not None
    cloud.fleet.wait_settled(240)
    cloud.settle(120)
    return v1


def retire(cloud: LocalCloud, app: str) -> None:
    """Terminate an app's hosts (a fixture starting afresh on a new app no longer needs them)."""
    assert cloud.fleet is not None
    with contextlib.suppress(TimeoutError):
        cloud.settle()
    for host in cloud.fleet.live(f"{app}-asg"):
        cloud.fleet.terminate(host.instance_id)
