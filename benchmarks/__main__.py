"""Run one benchmark (`python -m benchmarks NAME`) or all of them (no argument)."""

from __future__ import annotations

import importlib
import sys

ALL = [
    "cold_start",
    "api_calls",
    "swap_under_load",
    "deploy_latency",
    "rollback_latency",
    "config_release",
    "canary",
]


def main(argv: list[str]) -> int:
    names = argv or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ALL)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== bench {name}", file=sys.stderr, flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
