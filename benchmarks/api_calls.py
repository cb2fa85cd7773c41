"""AWS API calls of one deploy and one rollback under moto, per fleet size.

Each figure is one Lambda invocation's calls, counted separately:

- `deploy_calls`: on-image-push handling one push, until the swap command is sent (idempotency,
  app lookup, release number, lock, release record, pointer, launch-template version, group,
  SendCommand, command id on the release, superseding older pending releases);
- `completion_calls`: on-command-status handling that deploy's terminal command event (release
  lookup, SSM's counts, the release's fate, the next pending release or unlock, notification);
- `rollback_calls`: the rollback function's invocation (checks, then the same rollout as a
  deploy, plus the started notification and marking the release it moves away from);
- `rollback_completion_calls`: on-command-status handling the rollback's terminal event;
- `per_host_event_calls`: on-command-status handling one host's terminal invocation event
  (each host sends one; it is the only cost that scales with the fleet, one invocation each).

Calls are counted with a botocore `before-call` hook on every client. The fleet is an Auto
Scaling group of N moto instances. Prints one line per fleet size, then `BENCH {json}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import botocore.handlers
import pytest
from deployer.entry.events import handle_operation
from deployer.entry.push import handle_push_event
from deployer.observability import logger
from moto import mock_aws

from tests.lifecycle import conftest

FLEET_SIZES = [int(s) for s in os.environ.get("BENCH_FLEET_SIZES", "1,10,100,1000").split(",")]


class Calls:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.counts[f"{model.service_model.service_name}:{model.name}"] += 1

    def take(self) -> tuple[int, dict[str, int]]:
        total, detail = sum(self.counts.values()), dict(sorted(self.counts.items()))
        self.counts.clear()
        return total, detail


@contextlib.contextmanager
def counted_world(size: int) -> Iterator[tuple[conftest.World, Calls, pytest.MonkeyPatch]]:
    """The lifecycle world (moto, an Auto Scaling group of `size` instances) whose every AWS
    client reports each call to the `Calls` it yields."""
    calls = Calls()
    patcher = pytest.MonkeyPatch()
    # Every client created from here on reports each API call to `calls`.
    patcher.setattr(
        botocore.handlers, "BUILTIN_HANDLERS", [*botocore.handlers.BUILTIN_HANDLERS, ("before-call", calls)]
    )
    conftest._SESSION.clear()
    for name, value in {
        "AWS_DEFAULT_REGION": conftest.REGION,
        "AWS_REGION": conftest.REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
        "POWERTOOLS_METRICS_NAMESPACE": "Deployer",
    }.items():
        patcher.setenv(name, value)
    try:
        with mock_aws():
            yield conftest.build_world(patcher, hosts=size), calls, patcher
    finally:
        patcher.undo()
        conftest._SESSION.clear()


def measure(size: int) -> dict[str, Any]:
    started = time.perf_counter()
    with counted_world(size) as (world, calls, _patcher):
        setup_s = time.perf_counter() - started  # the world's set-up (its fleet), not counted

        def finish(release_number: int) -> tuple[int, dict[str, int]]:
            release = world.release(release_number)
            command_id = release.command_id or ""
            targets = world.shim.targets(command_id)
            world.shim.command(command_id, "Success", completed=len(targets))
            event = world.command_event(command_id, "Success")
            calls.take()
            world.deliver(event)
            return calls.take()

        # release 1 live, so the measured deploy is an ordinary next release
        first = handle_push_event(world.core, world.push_event(world.image(1, "v1"), "v1"))
        finish(first["results"][0]["release"])
        event = world.push_event(world.image(2, "v2"), "v2")
        calls.take()
        pushed = handle_push_event(world.core, event)
        push_calls, push_detail = calls.take()
        release = world.release(pushed["results"][0]["release"])
        command_id = release.command_id or ""
        targets = world.shim.targets(command_id)
        world.shim.invocation(
            command_id, targets[0], "Success", conftest.summary_line(targets[0], release)
        )
        status_event = world.invocation_event(command_id, targets[0], "Success")
        calls.take()
        world.deliver(status_event)
        per_host, per_host_detail = calls.take()
        terminal, terminal_detail = finish(release.release)
        _check({"deploy": world.release(release.release).status.value}, {"deploy": "SUCCEEDED"})

        calls.take()
        answer = handle_operation(world.ld, {"app": "web", "reason": "bench"})
        rollback_calls, rollback_detail = calls.take()
        rollback_terminal, _ = finish(answer["release"])
        pointer = world.core.pointer.get("web")
        _check(
            {
                "rolled back from": world.release(release.release).status.value,
                "rollback": world.release(answer["release"]).status.value,
                "pointer": pointer.release if pointer else None,
            },
            {"rolled back from": "ROLLED_BACK", "rollback": "SUCCEEDED", "pointer": answer["release"]},
        )
        return {
            "size": size,
            "targets": len(targets),
            "deploy": push_calls,
            "completion": terminal,
            "rollback": rollback_calls,
            "rollback_completion": rollback_terminal,
            "per_host_event": per_host,
            "push": push_detail,
            "terminal": terminal_detail,
            "rollback_detail": rollback_detail,
            "per_host_detail": per_host_detail,
            "setup_s": round(setup_s, 1),
        }


def _check(found: dict[str, Any], expected: dict[str, Any]) -> None:
    """The counted calls did the work; figures of a deploy that went wrong would mean nothing."""
    if found != expected:
        raise SystemExit(f"api_calls: the measured flow did not end as expected: {found} != {expected}")


def main() -> None:
    # Idempotency warns that no Lambda context gives it the remaining time; irrelevant here.
    warnings.filterwarnings("ignore", category=UserWarning, module="aws_lambda_powertools")
    logger.setLevel("ERROR")  # the figures, not the deploys' log lines
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    keys = ["deploy", "completion", "rollback", "rollback_completion", "per_host_event"]
    figures: dict[str, list[int]] = {key: [] for key in keys}
    for size in FLEET_SIZES:
        result = measure(size)
        for key in keys:
            figures[key].append(result[key])
        print(
            f"fleet {size:>5} ({result['targets']} targeted, setup {result['setup_s']}s): deploy "
            f"{result['deploy']} calls + completion {result['completion']}, rollback "
            f"{result['rollback']} + completion {result['rollback_completion']}, each host's status "
            f"event {result['per_host_event']}",
            file=sys.stderr,
            flush=True,
        )
        if size == FLEET_SIZES[0]:
            print(f"  push path: {json.dumps(result['push'])}", file=sys.stderr)
            print(f"  command's terminal event: {json.dumps(result['terminal'])}", file=sys.stderr)
            print(f"  rollback function: {json.dumps(result['rollback_detail'])}", file=sys.stderr)
            print(f"  one host's status event: {json.dumps(result['per_host_detail'])}", file=sys.stderr)
    print(
        "BENCH " + json.dumps({"fleet_sizes": FLEET_SIZES, **{f"{k}_calls": v for k, v in figures.items()}})
    )


if __name__ == "__main__":
    main()
