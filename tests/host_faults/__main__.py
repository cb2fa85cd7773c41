"""`make host-faults`: every case of the host fault suite; ends with `HOSTFAULTS {json}`.

    python -m tests.host_faults [--case NAME ...] [--slice ci] [--agent PATH] [--keep]

Exits 1 when a case did not recover, a container was left over or a request failed outside a
deliberate outage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.host_faults.suite import ALL_CASES, CI_SLICE, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.host_faults")
    parser.add_argument("--case", action="append", default=[], choices=ALL_CASES,
                        help="run only this case (repeatable)")
    parser.add_argument("--slice", choices=("ci",), help="run the short slice CI runs")
    parser.add_argument("--agent", type=Path, help="another agent script to put through the suite")
    parser.add_argument("--keep", action="store_true", help="keep the case directories")
    args = parser.parse_args(argv)
    names = args.case or (list(CI_SLICE) if args.slice else list(ALL_CASES))
    root = Path(tempfile.mkdtemp(prefix="hostfaults-"))
    try:
        _, summary = run(names, root, args.agent.resolve() if args.agent else None)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("HOSTFAULTS " + json.dumps(summary, separators=(",", ":")), flush=True)
    healthy = (summary["not_recovered"] == 0 and summary["leftover_containers"] == 0
               and summary["failed_requests"]["outside_outages"] == 0)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
