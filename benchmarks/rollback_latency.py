"""rollback_latency: one-call rollback of the local fleet beside the old rollback.

Both flows use the same kind of image: the busybox test app plus a random layer of
BENCH_IMAGE_MB megabytes (default 100; 0 for the bare 1 MB app).
The local cloud runs the real stack on a fleet of HOSTS hosts (MaxConcurrency 100%) that ran
v1 and then v2. The clock runs from invoking the rollback function until every host serves v1
again: a pointer move plus a swap to the image the hosts retained (no pull). The baseline, in
the same run, is the old rollback on as many plain hosts: pull the old image, re-tag it
`latest`, push it, redeploy host after host (pull, restart, nginx reload) (`localcloud.stories.oldflow`).
"Serving" is observed, not inferred: each host's nginx is asked for `/` every 10 ms until it
answers with v1's body. Prints where the time went, on stderr: invoke → the rollback function
answered → swap command picked up → each host's script and agent phases → that host serving
v1 → every host serving.
Then, for the warm-standby question (keep the previous release's container after a deploy,
paused, so a rollback needs no `docker run`): for the busybox app and gunicorn, 5 rounds each of
`docker run` → first healthy answer against `docker unpause` of a paused container → first
healthy answer, and each container's memory running and paused (`docker stats`).
Then the instant abort (issue 18): the app gains stages (a canary stage of 5 hosts baking 600 s,
then 100 %) on a fleet of ABORT_HOSTS hosts, v3 is pushed, and once the canary bakes `deployer
cancel` (the rollback function's cancel) rolls it back: each canary host kept v1's container as
its standby, so the abort is one rule switch per host. `abort_seconds` runs from invoking the
cancel until every canary host serves v1 again (polled as above); `abort_after_answer_seconds`
from the cancel's answer (the rollback command is sent by then).
Prints `BENCH {"hosts": n, "seconds": x, "baseline_seconds": y, "breakdown_s": {...},
"abort_seconds": a, "abort_after_answer_seconds": b, "abort_breakdown_s": {...}, "warm_standby": {...}}`.
Goals: at most 1 s for 5 hosts (issue 13), and far faster than the baseline; an abort of 5 canary
hosts within 0.5 s (issue 18).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud, Timeline
from localcloud.hosts.images import SERVERS, build_app_image, release_body
from localcloud.hosts.sandbox import HostSandbox, free_port
from localcloud.stories import breakdown
from localcloud.stories.oldflow import OldHost, old_rollback, publish, sequential_deploy

HOSTS = 5
ABORT_HOSTS = 6
CANARY_HOSTS = 5
APP = "bench"
# App images are rarely 1 MB: both flows use images with a random layer of this size.
IMAGE_MB = int(os.environ.get("BENCH_IMAGE_MB", "100"))


def _log(text: str) -> None:
    print(f"rollback_latency: {text}", file=sys.stderr, flush=True)


def _wait_succeeded(cloud: LocalCloud, tag: str) -> dict[str, Any]:
    def done() -> bool:
        rel = [r for r in cloud.releases(APP) if r.get("tag") == tag]
        return bool(rel) and rel[-1].get("status") == "SUCCEEDED"

    cloud.wait_for(done, 300, f"{tag} to succeed")
    return [r for r in cloud.releases(APP) if r.get("tag") == tag][-1]


def _serving_times(sandboxes: list[HostSandbox], body: str, started: float,
                   timeout: float = 300) -> dict[str, float]:
    """Seconds from ``started`` until each host's nginx first answered ``/`` with ``body``."""
    serving: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(serving) < len(sandboxes):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sorted(serving)} serve v1 after {timeout} s")
        for sandbox in sandboxes:
            if sandbox.host_id not in serving and sandbox.get("/", timeout=1.0) == (200, body):
                serving[sandbox.host_id] = time.monotonic() - started
        time.sleep(0.01)
    return serving


def _print_breakdown(report: dict[str, Any], serving: dict[str, float], invoked: float) -> dict[str, Any]:
    """One line per step, seconds since the rollback was invoked; returns the summary figures."""
    _log("where the time went (seconds since invoking the rollback function):")
    _log(f"  {invoked:6.3f}  rollback function answered (release recorded, pointer, launch "
         "template, group and SendCommand done)")
    picked = [c["picked_s"] for c in report["commands"]]
    if picked:
        _log(f"  {picked[0]:6.3f}  swap command picked up by the SSM agents")
    agent_means: dict[str, float] = {}
    for command in report["commands"][:1]:
        for host in command["hosts"]:
            agent = host["agent"]
            start = host["ended_s"] - host["script_s"]
            before_agent = max(0.0, host["script_s"] - float(agent.get("total") or 0.0))
            phases = "  ".join(f"{k} {float(v or 0):.3f}" for k, v in agent.items() if k != "total")
            _log(f"  {start:6.3f}  host script started; agent after {before_agent:.3f} s (shell, "
                 f"python start); agent: {phases}; script ended {host['ended_s']:.3f}")
            for k, v in agent.items():
                agent_means[k] = agent_means.get(k, 0.0) + float(v or 0) / len(command["hosts"])
    for host_id, at in sorted(serving.items(), key=lambda item: item[1]):
        _log(f"  {at:6.3f}  {host_id} serves v1")
    every = max(serving.values())
    _log(f"  {every:6.3f}  every host serves v1")
    return {"invoke": round(invoked, 3), "picked_up": round(picked[0], 3) if picked else None,
            "agent_mean": {k: round(v, 3) for k, v in agent_means.items()},
            "first_host_serving": round(min(serving.values()), 3), "every_host_serving": round(every, 3)}


def _first_2xx(port: int, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"nothing healthy on port {port} after {timeout} s")


def _timed(*cmd: str) -> float:
    started = time.monotonic()
    subprocess.run(list(cmd), capture_output=True, check=True)
    return time.monotonic() - started


def _memory_mib(name: str) -> float:
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name],
                         capture_output=True, text=True, check=True).stdout.split("/")[0].strip()
    number, unit = float(out.rstrip("KMGiB")), out.lstrip("0123456789.")
    return round(number * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}.get(unit, 1 / 1048576), 2)


def warm_standby(rounds: int = 5) -> dict[str, Any]:
    """Cold start of a retained image against unpausing a kept container, and memory kept."""
    figures: dict[str, Any] = {}
    for server in SERVERS:
        tag = f"bench-warm/{server}:{uuid.uuid4().hex[:8]}"
        image_id = build_app_image(tag, 1, app=APP, server=server)
        cold, warm, running, paused = [], [], [], []
        try:
            for n in range(rounds):
                port, name = free_port(), f"bench-warm-{server}-{n}"
                try:
                    started = time.monotonic()
                    _timed("docker", "run", "-d", "--name", name, "--network", "host", "--init",
                           "-e", f"PORT={port}", tag)
                    _first_2xx(port)
                    cold.append(time.monotonic() - started)
                    time.sleep(1.0)
                    running.append(_memory_mib(name))
                    _timed("docker", "pause", name)
                    time.sleep(0.5)
                    paused.append(_memory_mib(name))
                    started = time.monotonic()
                    _timed("docker", "unpause", name)
                    _first_2xx(port)
                    warm.append(time.monotonic() - started)
                finally:
                    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        finally:
            subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)
        figures[server] = {
            "run_to_healthy_s": round(statistics.median(cold), 3),
            "unpause_to_healthy_s": round(statistics.median(warm), 3),
            "memory_running_mib": round(statistics.median(running), 2),
            "memory_paused_mib": round(statistics.median(paused), 2),
        }
        _log(f"warm standby, {server}: docker run → healthy {figures[server]['run_to_healthy_s']} s, "
             f"docker unpause → healthy {figures[server]['unpause_to_healthy_s']} s (medians of {rounds}); "
             f"memory kept {figures[server]['memory_running_mib']} MiB running, "
             f"{figures[server]['memory_paused_mib']} MiB paused")
    return figures


def abort(cloud: LocalCloud, config: dict[str, Any]) -> dict[str, Any]:
    """A canary of CANARY_HOSTS hosts on v3, cancelled while it bakes: seconds until every canary
    host serves v1 again (the fleet runs v1 when this starts)."""
    assert cloud.fleet is not None
    group = f"{APP}-asg"
    cloud.scale(APP, ABORT_HOSTS)
    cloud.fleet.wait_settled(600)
    cloud.settle(300)
    stages = [{"hosts": CANARY_HOSTS, "bake_seconds": 600}, {"hosts": "100%"}]
    cloud.put_app({**config, "rollout": {**config["rollout"], "stages": stages}})
    cloud.push(APP, "v3", 3, app=APP, pad_mb=IMAGE_MB)

    def baking() -> bool:
        rel = [r for r in cloud.releases(APP) if r.get("tag") == "v3"]
        return bool(rel) and rel[-1].get("stage_state") == "BAKING"

    cloud.wait_for(baking, 300, "v3's canary to bake")
    cloud.settle(120)
    three = [r for r in cloud.releases(APP) if r.get("tag") == "v3"][-1]
    canaries = set(three.get("stage_hosts") or [])
    hosts = [h for h in cloud.fleet.live(group) if h.instance_id in canaries]
    assert len(hosts) == CANARY_HOSTS, (canaries, [h.instance_id for h in cloud.fleet.live(group)])
    body3 = release_body(APP, 3)
    assert all(h.sandbox.get("/") == (200, body3) for h in hosts)
    kept = {h.instance_id: (h.sandbox.containers(), (h.sandbox.state(APP) or {}).get("standby"))
            for h in hosts}
    assert all(len(names) == 2 for names, _ in kept.values()), f"each canary host keeps its standby: {kept}"
    _log(f"v3 bakes on {CANARY_HOSTS} of {ABORT_HOSTS} hosts, each with v1 as its standby; cancelling")
    started = time.monotonic()
    answer = cloud.invoke("RollbackFunction", {"app": APP, "action": "cancel", "reason": "benchmark"})
    answered = time.monotonic()
    serving = _serving_times([h.sandbox for h in hosts], release_body(APP, 1), started)
    seconds = round(max(serving.values()), 3)
    cloud.settle(120)
    report = breakdown.rollout(list(cloud.commands().values()), started, started + seconds)
    figures = _print_breakdown(report, serving, answered - started)
    left = {h.instance_id: h.sandbox.containers() for h in hosts}
    assert all(len(names) == 1 for names in left.values()), left
    _log(f"cancel answered {json.dumps(answer)[:160]}; every canary host on v1 after {seconds} s "
         f"({seconds - (answered - started):.3f} s after the answer); one container left on each")
    return {"abort_seconds": seconds,
            "abort_after_answer_seconds": round(seconds - (answered - started), 3),
            "abort_breakdown_s": figures}


def measure(hosts: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp,
        LocalCloud(timeline=Timeline(echo=False)) as cloud,
    ):
        assert cloud.registry is not None
        assert cloud.fleet is not None
        config = cloud.create_app(APP, max_concurrency="100%", max_errors="0", retain=3)
        cloud.push(APP, "v1", 1, app=APP, pad_mb=IMAGE_MB)
        v1 = _wait_succeeded(cloud, "v1")
        cloud.scale(APP, hosts)
        cloud.fleet.wait_settled(600)
        cloud.settle(300)
        cloud.push(APP, "v2", 2, app=APP, pad_mb=IMAGE_MB)
        _wait_succeeded(cloud, "v2")
        cloud.settle(300)
        _log(f"{hosts} hosts on v2 ({IMAGE_MB} MB images); rolling back to v1")
        sandboxes = [h.sandbox for h in cloud.fleet.live(f"{APP}-asg")]
        body = release_body(APP, 1)
        started = time.monotonic()
        answer = cloud.invoke("RollbackFunction", {"app": APP, "reason": "benchmark"})
        invoked = time.monotonic()
        serving = _serving_times(sandboxes, body, started)
        converged = started + max(serving.values())
        seconds = round(converged - started, 2)
        cloud.wait_for(lambda: set(cloud.host_digests(APP).values()) == {v1["digest"]}, 300, "hosts on v1")
        cloud.settle(120)
        report = breakdown.rollout(list(cloud.commands().values()), started, converged)
        report["invoke_s"] = round(invoked - started, 3)
        _log("breakdown " + json.dumps(report))
        figures = _print_breakdown(report, serving, invoked - started)
        _log(f"rollback answered {json.dumps(answer)[:160]}; every host on v1 after {seconds} s")
        aborted = abort(cloud, config)

        old_hosts = [OldHost.create(f"old{n}", Path(tmp)) for n in range(hosts)]
        try:
            reg = cloud.registry
            one = publish(reg.push_address, reg.address, "oldflow", 1, app=APP, pad_mb=IMAGE_MB)
            two = publish(reg.push_address, reg.address, "oldflow", 2, app=APP, pad_mb=IMAGE_MB)
            sequential_deploy(old_hosts, one)
            sequential_deploy(old_hosts, two)
            # The CI runner doing the rollback does not have the old image.
            subprocess.run(["docker", "rmi", "-f", one], capture_output=True, check=False)
            baseline = round(old_rollback(old_hosts, reg.address, "oldflow", one), 2)
            _log(f"old rollback (pull, re-tag, push, redeploy {hosts} hosts): {baseline} s")
        finally:
            for host in old_hosts:
                host.teardown()
            subprocess.run(
                ["docker", "rmi", "-f", f"{cloud.registry.address}/oldflow:latest"],
                capture_output=True,
                check=False,
            )
    _log(f"rollback of {hosts} hosts: {seconds} s; abort of {CANARY_HOSTS} canary hosts: "
         f"{aborted['abort_seconds']} s; old rollback: {baseline} s")
    return {"hosts": hosts, "seconds": seconds, "baseline_seconds": baseline, "breakdown_s": figures,
            **aborted}


def main() -> None:
    result = measure(HOSTS)
    result["warm_standby"] = warm_standby()
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
