"""Swaps under real traffic, for two app servers, beside plain nginx-reload switching.

For each app server (``SERVERS``: the busybox test app, which closes every upstream connection,
and gunicorn, which keeps them alive and drains gracefully), one host sandbox swaps between two
releases BENCH_SWAPS times, evenly over BENCH_SECONDS, under one fixed-rate load through the
host's nginx: 20 keep-alive clients at BENCH_RATE req/s, a BENCH_POST_RATIO share of them POSTs
with a unique body the app must echo back, plus BENCH_SLOW_RATE slow GETs/s (1 s answers) on
their own clients, so slow requests are in flight at every switch. The switch instant of each
swap is observed, not computed: the send time of the first GET answered by the new release.

Reported per server: requests, POSTs, failed GETs / POSTs / slow GETs, p50 / p99 / p99.9 / max
latency (GETs and POSTs; slow GETs apart, as their excess over the sleep), every request over
1 s (slow ones: over 1 s beyond their sleep) and every failure with its send time relative to
the nearest switch, wrong release after a switch, and per-phase swap timings. Then, in the
same run, the reload baseline (both releases running, each switch rewrites the upstream and
reloads nginx) under the same load, and rollback to a retained release with the registry down.
Ends with ``BENCH {json}``.

Knobs (environment): BENCH_SERVERS (busybox,gunicorn), BENCH_SWAPS (24), BENCH_SECONDS (105),
BENCH_RATE (1000), BENCH_CONNECTIONS (20), BENCH_POST_RATIO (0.25), BENCH_SLOW_RATE (4),
BENCH_BASELINE (1: run the reload baseline), BENCH_COMPARE (comma-separated variants run side by
side under the same load: ``pooled``, nginx keeping pooled upstream connections, host setting
``upstream_keepalive=32``; ``flush``, deleting the old colour's conntrack flows after its stop).
"""

from __future__ import annotations

import bisect
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

from localcloud.hosts.images import (
    ECHO_PATH,
    SLOW_PATH,
    AppImage,
    publish_app_image,
    release_body,
    remove_images,
)
from localcloud.hosts.load import LoadGenerator, LoadResult
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox

APP = "web"
PHASES = ("lock", "pull", "start", "health", "switch", "drain", "cleanup", "total")
SLOW_SECONDS = 1.0
OVER = 1.0  # report every request slower than this (slow ones: beyond their sleep)

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


def env_number(name: str, default: str) -> float:
    return float(os.environ.get(name, default))


class Settings:
    def __init__(self) -> None:
        self.servers = [s for s in os.environ.get("BENCH_SERVERS", "busybox,gunicorn").split(",") if s]
        self.swaps = int(env_number("BENCH_SWAPS", "24"))
        self.seconds = env_number("BENCH_SECONDS", "105")
        self.rate = env_number("BENCH_RATE", "1000")
        self.connections = int(env_number("BENCH_CONNECTIONS", "20"))
        self.post_ratio = env_number("BENCH_POST_RATIO", "0.25")
        self.slow_rate = env_number("BENCH_SLOW_RATE", "4")
        self.baseline = os.environ.get("BENCH_BASELINE", "1") != "0"
        self.compare = [c for c in os.environ.get("BENCH_COMPARE", "").split(",") if c]

    def load(self, port: int, seconds: float) -> LoadGenerator:
        return LoadGenerator("127.0.0.1", port, rate=self.rate, connections=self.connections,
                             max_seconds=seconds, post_ratio=self.post_ratio, post_path=ECHO_PATH,
                             slow_path=f"{SLOW_PATH}?sleep={SLOW_SECONDS:g}", slow_rate=self.slow_rate)


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


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full (all sockets)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=False)).get("ListenOverflows", 0))
    return 0


def relative(t: float, switches: list[float]) -> str:
    """``t`` as an offset from the nearest switch, e.g. ``switch 7 +0.412 s``."""
    if not switches:
        return "no switch"
    i = bisect.bisect_left(switches, t)
    nearest = min((j for j in (i - 1, i) if 0 <= j < len(switches)), key=lambda j: abs(t - switches[j]))
    return f"switch {nearest + 1} {t - switches[nearest]:+.3f} s"


def load_figures(result: LoadResult, switches: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in result.latencies]
    slow_excess = [(v - SLOW_SECONDS) * 1000 for v in result.slow_latencies]
    long_ones = []
    for rec in result.records:
        took = rec.ended_at - rec.sent_at
        budget = OVER + (SLOW_SECONDS if rec.kind == "slow" else 0.0)
        if rec.error is None and took > budget:
            long_ones.append({"kind": rec.kind, "ms": round(took * 1000),
                              "sent": relative(rec.sent_at, switches),
                              "ended": relative(rec.ended_at, switches)})
    failures = [{"kind": rec.kind, "error": rec.error, "ms": round((rec.ended_at - rec.sent_at) * 1000),
                 "sent": relative(rec.sent_at, switches)} for rec in result.records if rec.error]
    return {
        "requests": result.sent, "post_requests": result.sent_by_kind["post"],
        "slow_requests": result.sent_by_kind["slow"],
        "failed": result.failed, "failed_get": result.failed_by_kind["get"],
        "failed_post": result.failed_by_kind["post"], "failed_slow": result.failed_by_kind["slow"],
        "errors": dict(result.errors), "rate_rps": round(result.rate_rps, 1),
        "latency_ms": {"p50": round(quantile(ms, 0.5), 1), "p99": round(quantile(ms, 0.99), 1),
                       "p99.9": round(quantile(ms, 0.999), 1), "max": round(max(ms, default=0.0), 1)},
        "slow_excess_ms": {"p50": round(quantile(slow_excess, 0.5), 1),
                           "max": round(max(slow_excess, default=0.0), 1)},
        "over_1s": long_ones[:50], "over_1s_count": len(long_ones), "failures": failures[:50],
    }


def observed_switch(result: LoadResult, after: float, new_body: str) -> float | None:
    """Send time of the first GET after ``after`` that the new release answered."""
    best = None
    for sent_at, text in reversed(result.samples):  # completion order: newest first
        if sent_at < after - 5.0:  # slow answers complete up to their sleep later
            break
        if sent_at >= after and text == new_body and (best is None or sent_at < best):
            best = sent_at
    return best


def run_agent_method(host: HostSandbox, images: list[AppImage],
                     s: Settings) -> tuple[LoadResult, list[dict[str, Any]], list[float], int]:
    summaries: list[dict[str, Any]] = []
    switches: list[float] = []
    wrong_after = 0
    cadence = s.seconds / s.swaps
    with s.load(host.listen_port, s.seconds + 60) as load:
        time.sleep(1.0)
        begun = load.mark()
        for n in range(s.swaps):
            target = images[n % 2]
            started = load.mark()
            summaries.append(swap(host, target))
            done = load.mark()
            time.sleep(0.2)
            seen = load.result.bodies_between(done, load.mark())
            if seen != {release_body(APP, target.release)}:
                wrong_after += 1
            switch_at = observed_switch(load.result, started, release_body(APP, target.release))
            if switch_at is not None:
                switches.append(switch_at)
            time.sleep(max(0.0, begun + (n + 1) * cadence - load.mark()))
        time.sleep(1.0)
    return load.result, summaries, switches, wrong_after


def run_reload_baseline(host: HostSandbox, images: list[AppImage], s: Settings,
                        interval: float) -> tuple[LoadResult, list[float]]:
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
    switches = []
    with s.load(host.listen_port, s.swaps * (interval + 2) + 30) as load:
        time.sleep(1.0)
        for n in range(s.swaps):
            switches.append(load.mark())
            point_to(ports[(n + 1) % 2])
            time.sleep(interval)
    return load.result, switches


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


def print_figures(label: str, figures: dict[str, Any]) -> None:
    log(f"{label}: requests {figures['requests']} (POST {figures['post_requests']}, slow "
        f"{figures['slow_requests']})  failed GET {figures['failed_get']} POST {figures['failed_post']} "
        f"slow {figures['failed_slow']} {figures['errors']}  rate {figures['rate_rps']} req/s  "
        f"latency ms {figures['latency_ms']}  slow excess ms {figures['slow_excess_ms']}")
    for item in figures["over_1s"]:
        log(f"  over 1 s: {item}")
    for item in figures["failures"][:20]:
        log(f"  failed: {item}")


# Side-by-side variants (BENCH_COMPARE): the agent with nginx pooling upstream connections, and
# the agent also deleting the old colour's conntrack flows after it stops (the design before).
VARIANTS: dict[str, dict[str, Any]] = {"agent": {}, "pooled": {"upstream_keepalive": 32},
                                       "flush": {"conntrack_command": ["conntrack"]}}


def bench_agent(server: str, variant: str, s: Settings, images: list[AppImage], root: Path,
                hosts: list[HostSandbox]) -> tuple[HostSandbox, dict[str, Any]]:
    suffix = uuid.uuid4().hex[:6]
    host = HostSandbox(f"bench-{server[:4]}-{suffix}", root / f"{server}-{variant}",
                       **VARIANTS[variant]).start()
    hosts.append(host)
    code, summary, stderr = host.run_agent("boot", host.swap_args(APP, images[0].reference, 1))
    if code != 0:
        raise RuntimeError(f"boot failed: {summary} {stderr[-1500:]}")
    swap(host, images[1])
    log(f"== {server} ({variant}): {s.swaps} swaps over {s.seconds:.0f} s at {s.rate:.0f} req/s "
        f"({s.post_ratio:.0%} POST) + {s.slow_rate:g} slow/s, {s.connections} keep-alive clients")
    overflows = listen_overflows()
    result, summaries, switches, wrong_after = run_agent_method(host, images, s)
    overflows = listen_overflows() - overflows
    method = load_figures(result, switches)
    phases = phase_table(summaries)
    print_figures(f"{server} {variant}", method)
    log(f"  switches observed {len(switches)} of {s.swaps}; wrong release after a switch: {wrong_after}; "
        f"accept-queue overflows (whole machine) {overflows}")
    for phase, row in phases.items():
        log(f"  {phase:8s} mean {row['mean']:.3f}  p50 {row['p50']:.3f}  max {row['max']:.3f}")
    errors = [line for line in Path(host.config["nginx_error_log"]).read_text().splitlines()
              if "upstream" in line]
    log(f"  nginx logged {len(errors)} upstream errors" + "".join(f"\n    {e[:260]}" for e in errors[-12:]))
    return host, {
        "swaps": s.swaps, **{k: v for k, v in method.items() if k not in ("over_1s", "failures")},
        "over_1s": method["over_1s"][:10], "wrong_release_after_switch": wrong_after,
        "nginx_upstream_errors": len(errors), "listen_overflows": overflows,
        "swap_phase_mean_s": {phase: row["mean"] for phase, row in phases.items()},
    }


def bench_server(server: str, s: Settings, images: list[AppImage], root: Path,
                 hosts: list[HostSandbox]) -> tuple[HostSandbox, dict[str, Any]]:
    suffix = uuid.uuid4().hex[:6]
    host, out = bench_agent(server, "agent", s, images, root, hosts)
    for variant in s.compare:
        other, figures = bench_agent(server, variant, s, images, root, hosts)
        other.teardown()
        out[variant] = {k: figures[k] for k in ("requests", "post_requests", "failed", "failed_get",
                                                "failed_post", "failed_slow", "latency_ms",
                                                "over_1s_count", "nginx_upstream_errors",
                                                "listen_overflows",
                                                "swap_phase_mean_s")}
    if s.baseline:
        interval = out["swap_phase_mean_s"]["total"]
        log(f"== {server}: baseline, {s.swaps} nginx reload switches every {interval:.2f}s, same load")
        base_host = HostSandbox(f"bench-{server[:4]}-{suffix}-rl", root / f"{server}-reload").start()
        hosts.append(base_host)
        base_result, base_switches = run_reload_baseline(base_host, images, s, interval)
        baseline = load_figures(base_result, base_switches)
        print_figures(f"{server} reload baseline", baseline)
        out["baseline_reload"] = {k: baseline[k] for k in ("requests", "post_requests", "failed",
                                                           "failed_get", "failed_post", "failed_slow",
                                                           "latency_ms")}
        base_host.teardown()
    return host, out


def main() -> None:
    s = Settings()
    root = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    registry = Registry(root / "registry").start()
    images: list[AppImage] = []
    hosts: list[HostSandbox] = []
    figures: dict[str, Any] = {
        "method": "nftables DNAT of a stable port (one atomic nft -f that also resets SYNs reaching "
                  "any other port through it), one upstream connection per request, 250 ms connect "
                  "timeout x 5 tries, drain until the old colour has no connection, stop; no "
                  "conntrack deletion",
        "rate_rps": s.rate, "post_ratio": s.post_ratio, "slow_rate_rps": s.slow_rate}
    try:
        published: dict[str, list[AppImage]] = {}
        for server in s.servers:  # all first: the rollback below stops the registry
            suffix = uuid.uuid4().hex[:6]
            published[server] = [publish_app_image(registry.push_address, registry.address,
                                                   f"{APP}-{server}-{suffix}", n, app=APP, server=server)
                                 for n in (1, 2)]
            images.extend(published[server])
        first: HostSandbox | None = None
        for server in s.servers:
            host, figures[server] = bench_server(server, s, published[server], root, hosts)
            first = first or host
        figures["failed"] = sum(figures[srv]["failed"] for srv in s.servers)
        figures["max_latency_ms"] = max(figures[srv]["latency_ms"]["max"] for srv in s.servers)
        if first is not None:
            log(f"== rollback to a retained release with the registry stopped ({s.servers[0]})")
            rollbacks = rollback_times(first, registry, published[s.servers[0]])
            for rb in rollbacks:
                log(f"  to release {rb['release']}: total {rb['timings']['total']:.3f}s  "
                    f"pull {rb['timings']['pull']:.3f}s  pull attempts {rb['pull_attempts']}")
            figures["rollback_retained_total_s"] = round(
                statistics.mean(r["timings"]["total"] for r in rollbacks), 3)
        print(f"BENCH {json.dumps(figures)}", flush=True)
    finally:
        for sandbox in hosts:
            sandbox.teardown(remove_images=True)
        registry.stop()
        remove_images([image.image_id for image in images])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
