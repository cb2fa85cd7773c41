"""Cold start: each handler's import time, as a ratio to `import boto3` in the same run.

Every measurement runs in a fresh interpreter with the variables the Lambda runtime sets
(AWS_LAMBDA_FUNCTION_NAME, so Powertools behaves as in Lambda; LAMBDA_TASK_ROOT, so the X-Ray
SDK uses Lambda's sampling instead of building a sampling client for a local daemon), the
function folder as working directory and the layer on the path. Handlers are discovered from
functions/*/app.py. Each figure is the median of REPEATS interleaved runs.
Last line: BENCH {"handlers": {name: ratio}, "max_ratio": x, ...}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 9
PROBE = (
    "import time, sys\n"
    "t = time.perf_counter()\n"
    "import {module}\n"
    "sys.stdout.write(repr(time.perf_counter() - t))\n"
)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POWERTOOLS_"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "cold-start-bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_SERVICE_NAME": "deployer",
            "POWERTOOLS_METRICS_NAMESPACE": "Deployer",
            "PYTHONPATH": str(ROOT / "layers" / "deployer"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def _import_seconds(module: str, cwd: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=cwd,
        env={**env, "LAMBDA_TASK_ROOT": str(cwd)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


def handlers() -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted((ROOT / "functions").glob("*/app.py"))}


def main() -> None:
    env = _environment()
    found = handlers()
    # One warm-up each so bytecode caches exist, as they do in a deployed layer.
    _import_seconds("boto3", ROOT, {**env, "PYTHONDONTWRITEBYTECODE": ""})
    for folder in found.values():
        _import_seconds("app", folder, {**env, "PYTHONDONTWRITEBYTECODE": ""})
    baseline_runs: list[float] = []
    runs: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(REPEATS):  # interleaved, so machine load affects all alike
        baseline_runs.append(_import_seconds("boto3", ROOT, env))
        for name, folder in found.items():
            runs[name].append(_import_seconds("app", folder, env))
    baseline = statistics.median(baseline_runs)
    ratios = {name: round(statistics.median(r) / baseline, 2) for name, r in runs.items()}
    for name, r in runs.items():
        median_ms = statistics.median(r) * 1000
        print(f"{name}: {median_ms:.0f} ms (boto3 {baseline * 1000:.0f} ms)", file=sys.stderr)
    print(
        "BENCH "
        + json.dumps(
            {
                "handlers": ratios,
                "max_ratio": max(ratios.values(), default=0.0),
                "boto3_import_ms": round(baseline * 1000, 1),
                "repeats": REPEATS,
            }
        )
    )


if __name__ == "__main__":
    main()
