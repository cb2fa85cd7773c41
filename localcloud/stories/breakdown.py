"""Where a rollout's time went: Lambda, SSM pickup, each host's script and agent phases.

Used by the latency benchmarks to print a breakdown beside their figures (stderr).
"""

from __future__ import annotations

import json
from typing import Any

from localcloud.aws.ssm_agent import CommandRun

PHASES = ("lock", "pull", "start", "health", "switch", "drain", "cleanup", "total")


def agent_summary(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def rollout(runs: list[CommandRun], started: float, converged: float) -> dict[str, Any]:
    """Figures (seconds since ``started``) of the commands picked up after ``started``."""
    mine = sorted((r for r in runs if r.picked_at >= started), key=lambda r: r.picked_at)
    out: dict[str, Any] = {"converged": round(converged - started, 3), "commands": []}
    for run in mine:
        hosts = []
        for h in sorted(run.hosts, key=lambda h: h.ended_at):
            summary = agent_summary(h.stdout)
            timings = summary.get("timings") or {}
            hosts.append({
                "outcome": summary.get("outcome"),
                "script_s": round(h.seconds, 3),
                "ended_s": round(h.ended_at - started, 3),
                "agent": {k: timings.get(k) for k in PHASES if k in timings},
            })
        out["commands"].append({"picked_s": round(run.picked_at - started, 3), "status": run.status,
                                "hosts": hosts})
    return out


def mean_phases(report: dict[str, Any]) -> dict[str, float]:
    """Mean agent phase timings over every host of every command in ``report``."""
    sums: dict[str, float] = {}
    count = 0
    for command in report["commands"]:
        for host in command["hosts"]:
            count += 1
            for k, v in host["agent"].items():
                sums[k] = sums.get(k, 0.0) + float(v or 0.0)
    return {k: round(v / count, 3) for k, v in sums.items()} if count else {}
