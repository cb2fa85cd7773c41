"""`python -m tests.faults`: run every flow once clean, then once per (fault kind, AWS call k), each in
its own forked process from the flow's set-up world; print the cases that did not converge and, last,
the `FAULTS {json}` line.

    python -m tests.faults                      # everything
    python -m tests.faults --flow push_deploy   # one flow (repeatable)
    python -m tests.faults --flow burst --kind crash --k 7 -v   # one case, with its handler answers
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

# The package (imported first by -m) has installed the suite's clock; the deployer comes after it.
from tests.faults.inject import KINDS, Fault, install

PERMISSION = "every call is allowed by its function's role"


def _pool(
    tasks: list[Callable[[], Any]],
    jobs: int,
    scratch: Path,
    done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run each task in a forked child (a copy of this process's moto world), `jobs` at a time;
    `done(index, result)` as each ends."""
    results: list[Any] = [None] * len(tasks)
    running: dict[int, tuple[int, Path]] = {}
    queue = list(enumerate(tasks))
    gc.freeze()  # children share the parent's pages instead of copying them when the collector runs
    while queue or running:
        while queue and len(running) < jobs:
            index, task = queue.pop(0)
            path = scratch / f"{os.getpid()}-{index}.json"
            pid = os.fork()
            if pid == 0:
                try:
                    result = task()
                except BaseException:
                    result = {"error": traceback.format_exc()}
                path.write_text(json.dumps(result, default=str))
                os._exit(0)
            running[pid] = (index, path)
        pid, status = os.wait()
        if pid not in running:
            continue
        index, path = running.pop(pid)
        results[index] = (
            json.loads(path.read_text()) if path.exists() else {"error": f"case process exited {status}"}
        )
        path.unlink(missing_ok=True)
        if done is not None:
            done(index, results[index])
    return results


def _flow_cases(name: str, only: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """In the flow's own process: set the world up once, then fork every case from it."""
    from moto import mock_aws  # noqa: PLC0415 - after the clock (package import)

    from tests.faults.flows import FLOWS  # noqa: PLC0415
    from tests.faults.invariants import check  # noqa: PLC0415
    from tests.faults.world import FaultWorld  # noqa: PLC0415

    flow = next(f for f in FLOWS if f.name == name)
    injector = install()
    mock = mock_aws()
    mock.start()
    world = FaultWorld(hosts=flow.hosts, auto_rollback=flow.auto_rollback, injector=injector)
    plan = flow.setup(world)
    world.mark()
    before = {int(r["release"]): str(r["status"]) for r in world.releases()}

    def case(fault: Fault | None) -> dict[str, Any]:
        injector.fault, injector.calls, injector.fired = fault, [], False
        world.enforcer.denied.clear()
        for delivery in plan.deliveries:
            world.invoke(delivery, injected=True)
        calls = list(injector.calls)
        world.recover()
        violations = [v.as_dict() for v in check(world, plan.expect, before)]
        # A call a function's role does not allow fails as on AWS; it is a failure of the case
        # even when the platform's recovery hid it.
        violations += [{"invariant": PERMISSION, "detail": d} for d in sorted(set(world.enforcer.denied))]
        return {"calls": calls, "fired": injector.fired, "violations": violations, "log": world.log[-40:]}

    (baseline,) = _pool([lambda: case(None)], 1, scratch)
    if "error" in baseline:
        return {"flow": name, "baseline": baseline, "cases": [], "selfcheck": None}
    calls = baseline["calls"]
    faults = [
        Fault(kind, k)
        for kind in KINDS
        for k in range(1, len(calls) + 1)
        if (not only.kind or kind in only.kind) and (not only.k or k in only.k)
    ]
    results = _pool([lambda f=f: case(f) for f in faults], only.jobs, scratch)
    cases = [
        {"kind": f.kind, "k": f.k, "operation": calls[f.k - 1], **r}
        for f, r in zip(faults, results, strict=True)
    ]
    selfcheck = (
        _pool([lambda: _checker_fails(world, plan, before, case)], 1, scratch)[0]
        if name == "push_deploy"
        else None
    )
    return {"flow": name, "baseline": baseline, "cases": cases, "selfcheck": selfcheck}


def _checker_fails(
    world: Any, plan: Any, before: dict[int, str], case: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """The clean happy path, then the world broken three ways: each must be reported."""
    from dataclasses import replace  # noqa: PLC0415

    from tests.faults import invariants  # noqa: PLC0415
    from tests.lifecycle.conftest import client, digest_of  # noqa: PLC0415

    clean = case(None)
    reported: dict[str, list[str]] = {}
    wrong = replace(plan.expect, desired=digest_of(99))
    reported["desired release changed"] = [v.invariant for v in invariants.check(world, wrong, before)]
    host = world.hosts[world.base.instances[0]]
    kept = host.release, host.image
    host.release, host.image = 1, host.image.rpartition("@")[0] + "@" + digest_of(1)
    reported["a host moved back"] = [v.invariant for v in invariants.check(world, plan.expect, before)]
    host.release, host.image = kept
    client("dynamodb").update_item(
        TableName="AppStateTable",
        Key={"app": {"S": "web"}},
        UpdateExpression="SET lock_owner = :o",
        ExpressionAttributeValues={":o": {"S": "web#1"}},
    )
    reported["the lock taken and kept"] = [v.invariant for v in invariants.check(world, plan.expect, before)]
    expected = {
        "desired release changed": invariants.POINTER_IS_DESIRED,
        "a host moved back": invariants.HOSTS_FOLLOW_POINTER,
        "the lock taken and kept": invariants.LOCK_FREE,
    }
    return {
        "clean_violations": clean["violations"],
        "reported": reported,
        "ok": not clean["violations"] and all(expected[k] in reported[k] for k in expected),
    }


def _run_flow(name: str, only: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One flow in its own process (its moto world and clock), timed."""
    started = time.monotonic()
    result = _flow_cases(name, only, scratch)
    return {**result, "seconds": time.monotonic() - started}


def _causes(case: dict[str, Any]) -> str:
    return "; ".join(sorted({v["invariant"] for v in case.get("violations", [])})) or "error"


def _not_converged(case: dict[str, Any]) -> bool:
    return bool(case.get("violations")) or "error" in case


def _write_flows(out: TextIO, flows: list[dict[str, Any]]) -> None:
    out.write(f"\n{'flow':<31} {'calls':>5}  {'clean run':<14}" + "".join(f"{k:>10}" for k in KINDS))
    out.write("   (not converged/injected)\n")
    for f in flows:
        base = f["baseline"]
        state = "error" if "error" in base else ("NOT converged" if base["violations"] else "converged")
        bad = Counter(c["kind"] for c in f["cases"] if _not_converged(c))
        total = Counter(c["kind"] for c in f["cases"])
        cells = "".join(f"{f'{bad[k]}/{total[k]}':>10}" for k in KINDS)
        out.write(f"{f['flow']:<31} {len(base.get('calls', [])):>5}  {state:<14}{cells}\n")
        for v in base.get("violations", []):
            out.write(f"    clean run: {v['invariant']}: {v['detail']}\n")
        if "error" in base:
            out.write(base["error"])


def _write_cases(out: TextIO, bad: list[tuple[str, dict[str, Any]]], verbose: bool) -> None:
    out.write("\nNot converged (flow, kind, k, AWS operation at k, invariants that failed, first detail):\n")
    for flow, c in bad:
        first = c["violations"][0]["detail"] if c.get("violations") else c.get("error", "")[-200:]
        out.write(f"{flow:<31} {c['kind']:<9} {c['k']:>3}  {c['operation']:<40} {_causes(c)}  ({first})\n")
        if verbose:
            for v in c.get("violations", []):
                out.write(f"        - {v['invariant']}: {v['detail']}\n")
            for line in c.get("log", []):
                out.write(f"        | {line}\n")
    out.write("\nNot converged, by flow and failed invariant (cases):\n")
    grouped = Counter(
        (flow, inv)
        for flow, c in bad
        for inv in {v["invariant"] for v in c.get("violations", [])} or {"error"}
    )
    for (flow, inv), n in sorted(grouped.items()):
        out.write(f"  {flow:<31} {n:>4}  {inv}\n")


def _report(out: TextIO, flows: list[dict[str, Any]], verbose: bool, seconds: float) -> int:
    injections = sum(len(f["cases"]) for f in flows)
    bad = [(f["flow"], c) for f in flows for c in f["cases"] if _not_converged(c)]
    _write_flows(out, flows)
    unfired = [(f["flow"], c["kind"], c["k"]) for f in flows for c in f["cases"] if not c.get("fired", True)]
    if unfired:
        # Every run is identical up to call k, so a fault that never fired is the harness's bug.
        out.write(f"\nfaults that never fired (harness error): {unfired}\n")
    if bad:
        _write_cases(out, bad, verbose)
    checks = [f["selfcheck"] for f in flows if f.get("selfcheck")]
    for sc in checks:
        out.write(f"\nchecker self-test: clean happy path violations: {sc['clean_violations'] or 'none'}\n")
        for what, invs in sc["reported"].items():
            out.write(f"  {what}: reported {invs}\n")
    out.write(f"\n{injections} injections in {seconds:.0f}s\n")
    summary = {
        "flows": [f["flow"] for f in flows],
        "injections": injections,
        "not_converged": len(bad),
        "kinds": list(KINDS),
    }
    out.write(f"FAULTS {json.dumps(summary)}\n")
    out.flush()
    return 1 if unfired or any(not sc["ok"] for sc in checks) else 0


def main(argv: list[str] | None = None) -> int:
    from tests.faults.flows import FLOWS  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--flow", action="append", choices=[f.name for f in FLOWS])
    parser.add_argument("--kind", action="append", choices=KINDS)
    parser.add_argument("--k", action="append", type=int)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="cases at once, per flow")
    parser.add_argument("--flow-jobs", type=int, default=2, help="flows at once")
    parser.add_argument("--max-not-converged", type=int, help="exit 1 when more cases than this fail")
    parser.add_argument("-v", "--verbose", action="store_true", help="handler answers of each failed case")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "w")
    if not args.verbose:
        # Handlers print logs and EMF metrics on stdout: keep them out of the report.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    started = time.monotonic()
    names = args.flow or [f.name for f in FLOWS]

    def done(index: int, result: dict[str, Any]) -> None:
        cases = result.get("cases", [])
        bad = sum(1 for c in cases if _not_converged(c))
        took = result.get("seconds", 0.0)
        out.write(f"{names[index]}: {len(cases)} injections, {bad} not converged ({took:.0f}s)\n")
        out.flush()

    with tempfile.TemporaryDirectory(prefix="faults-") as scratch:
        # Flows side by side: one flow's serial set-up and clean run leave a core to another's cases.
        flows = [lambda n=n: _run_flow(n, args, Path(scratch)) for n in names]
        results = _pool(flows, max(1, args.flow_jobs), Path(scratch), done)
        for name, result in zip(names, results, strict=True):
            if "error" in result and "flow" not in result:
                result.update(flow=name, baseline={"error": result["error"]}, cases=[], selfcheck=None)
    status = _report(out, results, args.verbose, time.monotonic() - started)
    bad = sum(1 for r in results for c in r["cases"] if _not_converged(c))
    if args.max_not_converged is not None and bad > args.max_not_converged:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
