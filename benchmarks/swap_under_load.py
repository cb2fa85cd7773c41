"""Swaps under keep-alive load: the agent's DNAT switch against plain nginx-reload switching.

Same load for both (fixed rate, keep-alive clients through the host's nginx), same machine, same
run. Prints per-phase swap timings, the rollback time from a retained image with the registry
stopped, and ends with
``BENCH {"swaps", "requests", "failed", "rate_rps", "method", "baseline_reload_failed", ...}``.

Knobs (environment): BENCH_SWAPS (default 20), BENCH_RATE (default 1000), BENCH_CONNECTIONS (20).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from localcloud.images import AppImage, publish_app_image, release_body, remove_images
from localcloud.load import LoadGenerator, LoadResult
from localcloud.registry import Registry
from localcloud.sandbox import HostSandbox

APP = "web"
PHASES = ("lock", "pull", "start", "health", "switch", "drain", "cleanup", "total")

BASELINE_SITE = """upstream baseline_app {
    server 127.0.0.1:@PORT@ max_fails=0;
    keepalive 32;
}
server {
    listen 127.0.0.1:@LISTEN@;
    keepalive_requests 10000;
    location / {
        proxy_pass http://baseline_app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout;
    }
}
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def swap(host: HostSandbox, image: AppImage) -> dict[str, Any]:
    code, summary, stderr = host.run_agent("swap", host.swap_args(APP, image.reference, image.release))
    if code != 0:
        raise RuntimeError(f"swap to release {image.release} failed ({code}): {summary} {stderr[-1500:]}")
    return summary


def phase_table(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    table = {}
    for phase in PHASES:
        values = [s["timings"][phase] for s in summaries]
        table[phase] = {"mean": round(statistics.mean(values), 3),
                        "p50": round(statistics.median(values), 3),
                        "max": round(max(values), 3)}
    return table


def load_figures(result: LoadResult) -> dict[str, Any]:
    return {"requests": result.sent, "failed": result.failed, "errors": dict(result.errors),
            "rate_rps": round(result.rate_rps, 1),
            "latency_ms": {"p50": round(result.latency(0.5) * 1000, 1),
                           "p99": round(result.latency(0.99) * 1000, 1),
                           "max": round(result.latency(1.0) * 1000, 1)}}


def run_agent_method(host: HostSandbox, images: list[AppImage], swaps: int, rate: float,
                     connections: int) -> tuple[LoadResult, list[dict[str, Any]], int]:
    summaries = []
    wrong_after = 0
    with LoadGenerator("127.0.0.1", host.listen_port, rate=rate, connections=connections,
                       max_seconds=swaps * 10 + 30) as load:
        time.sleep(0.5)
        for n in range(swaps):
            target = images[n % 2]
            summaries.append(swap(host, target))
            done = load.mark()
            time.sleep(0.2)
            if load.result.bodies_between(done, load.mark()) != {release_body(APP, target.release)}:
                wrong_after += 1
        time.sleep(0.5)
    return load.result, summaries, wrong_after


def run_reload_baseline(host: HostSandbox, images: list[AppImage], switches: int, interval: float,
                        rate: float, connections: int) -> LoadResult:
    """Both releases running; each switch rewrites the upstream, runs nginx -t, then reloads."""
    ports = [host.config["blue_port"], host.config["green_port"]]
    for image, port in zip(images, ports, strict=True):
        subprocess.run(["docker", "pull", "-q", image.reference], check=True, capture_output=True)
        subprocess.run(["docker", "run", "-d", "--name", f"{host.host_id}-baseline-{port}",
                        "--label", f"deployer.host={host.host_id}", "--network", "host", "--init",
                        "-e", f"PORT={port}", image.reference], check=True, capture_output=True)
    site = Path(host.config["nginx_conf_dir"]) / "baseline.conf"
    nginx = ["nginx", "-p", host.config["nginx_prefix"], "-c", host.config["nginx_conf"],
             "-e", host.config["nginx_error_log"]]

    def point_to(port: int) -> None:
        site.write_text(BASELINE_SITE.replace("@PORT@", str(port))
                        .replace("@LISTEN@", str(host.listen_port)))
        subprocess.run([*nginx, "-t"], check=True, capture_output=True)
        subprocess.run([*nginx, "-s", "reload"], check=True, capture_output=True)

    point_to(ports[0])
    time.sleep(1.0)
    with LoadGenerator("127.0.0.1", host.listen_port, rate=rate, connections=connections,
                       max_seconds=switches * (interval + 2) + 30) as load:
        time.sleep(0.5)
        for n in range(switches):
            point_to(ports[(n + 1) % 2])
            time.sleep(interval)
    return load.result


def rollback_times(host: HostSandbox, registry: Registry, images: list[AppImage],
                   rounds: int = 3) -> list[dict[str, Any]]:
    """Registry stopped; swap back and forth between retained releases."""
    registry.stop()
    live = host.state(APP)
    assert live is not None
    order = sorted(images, key=lambda i: i.release != live["release"])  # live one first
    results = []
    for n in range(rounds):
        summary = swap(host, order[(n + 1) % 2])
        results.append({"release": summary["release"], "pull_attempts": summary["pull_attempts"],
                        "timings": summary["timings"]})
    return results


def main() -> None:
    swaps = int(os.environ.get("BENCH_SWAPS", "20"))
    rate = float(os.environ.get("BENCH_RATE", "1000"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "20"))
    root = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    registry = Registry(root / "registry").start()
    suffix = uuid.uuid4().hex[:6]
    images: list[AppImage] = []
    hosts: list[HostSandbox] = []
    try:
        images = [publish_app_image(registry.push_address, registry.address, f"{APP}-{suffix}", n, app=APP)
                  for n in (1, 2)]
        host = HostSandbox(f"bench-{suffix}", root / "agent-host").start()
        hosts.append(host)
        code, summary, stderr = host.run_agent("boot", host.swap_args(APP, images[0].reference, 1))
        if code != 0:
            raise RuntimeError(f"boot failed: {summary} {stderr[-1500:]}")
        swap(host, images[1])

        log(f"== agent method: {swaps} swaps at {rate:.0f} req/s, {connections} keep-alive connections")
        result, summaries, wrong_after = run_agent_method(host, images, swaps, rate, connections)
        method = load_figures(result)
        phases = phase_table(summaries)
        log(f"requests {method['requests']}  failed {method['failed']} {method['errors']}  "
            f"rate {method['rate_rps']} req/s  "
            f"latency {method['latency_ms']}  wrong release after a switch: {wrong_after}")
        log("per-phase swap timings (s):")
        for phase, row in phases.items():
            log(f"  {phase:8s} mean {row['mean']:.3f}  p50 {row['p50']:.3f}  max {row['max']:.3f}")

        interval = phases["total"]["mean"]
        log(f"== baseline: {swaps} nginx reload switches every {interval:.2f}s under the same load")
        baseline_host = HostSandbox(f"bench-{suffix}-reload", root / "reload-host").start()
        hosts.append(baseline_host)
        baseline = load_figures(run_reload_baseline(baseline_host, images, swaps, interval, rate,
                                                    connections))
        log(f"requests {baseline['requests']}  failed {baseline['failed']}  errors {baseline['errors']}  "
            f"rate {baseline['rate_rps']} req/s")

        log("== rollback to a retained release with the registry stopped")
        rollbacks = rollback_times(host, registry, images)
        for rb in rollbacks:
            log(f"  to release {rb['release']}: total {rb['timings']['total']:.3f}s  "
                f"pull {rb['timings']['pull']:.3f}s  pull attempts {rb['pull_attempts']}")

        figures = {
            "swaps": swaps,
            "requests": method["requests"],
            "failed": method["failed"],
            "rate_rps": method["rate_rps"],
            "method": "nftables DNAT of a stable port (one atomic nft -f with a SYN guard on the old "
                      "colour), tripled upstream with proxy_next_upstream, drain, stop, conntrack flush",
            "baseline_reload_failed": baseline["failed"],
            "baseline_requests": baseline["requests"],
            "baseline_rate_rps": baseline["rate_rps"],
            "wrong_release_after_switch": wrong_after,
            "latency_ms": method["latency_ms"],
            "swap_phase_mean_s": {phase: row["mean"] for phase, row in phases.items()},
            "rollback_retained_total_s": round(statistics.mean(r["timings"]["total"]
                                                               for r in rollbacks), 3),
        }
        print(f"BENCH {json.dumps(figures)}", flush=True)
    finally:
        for sandbox in hosts:
            sandbox.teardown(remove_images=True)
        registry.stop()
        remove_images([image.image_id for image in images])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
