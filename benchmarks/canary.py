"""canary: what a canary stage with the built-in analysis costs and catches.

Three parts, in this order:

1. `stage_api_calls`, under moto in this process (the lifecycle world of `benchmarks.api_calls`,
   for fleets of BENCH_FLEET_SIZES, default 1,10,100,1000 hosts): the AWS calls the control
   plane makes for one stage, counted with a botocore `before-call` hook on every client. The
   app has stages `[{"hosts": 1, "bake_seconds": 3}, {"hosts": "100%"}]`, the analysis on
   (`interval_seconds` 1) and one alarm named (`rollout.alarms`). One stage = the invocation that
   handles its command's terminal event (ending: the stage baking, its first bake check and the
   stage tick it schedules), the bake checks while it bakes (one converge per tick, each second:
   GetMetricData, DescribeAlarms, the next tick's SendMessage), and the converge that ends the
   bake and sends the next stage. Each host's own invocation event is left out, as in
   api_calls (one per host that took the stage, whatever the stage). A tick is delivered as
   on-command-status receives it from the stage tick queue (else the converge a tick runs).
2. BENCH_CANARY_RUNS (default 3) runs of the demo's canary act (`localcloud.stories.canary`) on
   one local cloud with 4 hosts under load (BENCH_RATE req/s per host, default 100): a release
   that passes its health check and answers 503 to 20 % of requests goes through a canary stage
   of 1 host (bake BENCH_CANARY_BAKE s, default 10). Per run: `bad_release_share` (over the
   minute of traffic from the push), `act_share` (over the act, push to every host on stable)
   and `detect_to_stable_seconds` (definitions in `localcloud.stories.canary`).
3. BENCH_GOOD_CANARIES (default 20) good releases through the same cloud with a 2 s canary bake:
   `false_positives` counts those that did not succeed (the analysis failed a good release).

Prints `BENCH {"runs": 3, "bad_release_share": [..], "detect_to_stable_seconds": [..],
"good_canaries": n, "false_positives": n, "stage_api_calls": {"1": n, ...}, ...}`.
Goals (issue 18): bad_release_share ≤ 5 %, detect_to_stable_seconds ≤ 10 s, 0 false positives,
stage_api_calls the same for every fleet size.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

from benchmarks.api_calls import Calls, counted_world

FLEET_SIZES = [int(s) for s in os.environ.get("BENCH_FLEET_SIZES", "1,10,100,1000").split(",")]
RUNS = int(os.environ.get("BENCH_CANARY_RUNS", "3"))
GOOD = int(os.environ.get("BENCH_GOOD_CANARIES", "20"))
RATE = float(os.environ.get("BENCH_RATE", "100"))
CANARY_BAKE = int(os.environ.get("BENCH_CANARY_BAKE", "10"))
GOOD_BAKE = 2
HOSTS = 4
APP = "web"
BENCH_ALARM = "bench-errors"
STAGE_BAKE = 3


# -- 1. API calls of one stage, per fleet size ----------------------------------------------------


class Clock:
    """The controller's clock (epoch seconds), moved on by the benchmark."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _tick(world: Any, calls: Calls) -> tuple[int, dict[str, int], str]:
    """One stage tick as the platform delivers it: the message the controller put on the stage
    tick queue, received as the Lambda event source mapping receives it (not counted: the
    mapping's calls are the Lambda service's) and handed to on-command-status. Without a tick
    queue (or no tick in it), the converge a tick runs. Returns (calls, detail, how)."""
    from deployer.controller import loop  # noqa: PLC0415

    from tests.lifecycle import conftest  # noqa: PLC0415

    sqs = conftest.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix="StageTickQueue").get("QueueUrls", [])
    messages = []
    if urls:
        messages = sqs.receive_message(QueueUrl=urls[0], MaxNumberOfMessages=10, WaitTimeSeconds=3).get(
            "Messages", []
        )
    calls.take()
    if messages:
        world.deliver({"Records": [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]})
        how = "tick"
    else:
        loop.converge(world.ld, APP)
        how = "converge"
    n, detail = calls.take()
    for m in messages:
        sqs.delete_message(QueueUrl=urls[0], ReceiptHandle=m["ReceiptHandle"])
    calls.take()
    return n, detail, how


def stage_calls(size: int) -> dict[str, Any]:
    from deployer.models.config import AppConfig  # noqa: PLC0415

    from tests.lifecycle import conftest  # noqa: PLC0415

    with counted_world(size) as (world, calls, patcher):
        clock = Clock()
        patcher.setattr(world.core.state, "_clock", clock)
        cw = conftest.client("cloudwatch")
        cw.put_metric_alarm(
            AlarmName=BENCH_ALARM,
            Namespace="Bench",
            MetricName="Errors",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
        )
        cw.set_alarm_state(AlarmName=BENCH_ALARM, StateValue="OK", StateReason="bench: quiet")

        def finish(
            release_number: int, command_id: str, targets: list[str]
        ) -> tuple[int, dict[str, int]]:
            release = world.release(release_number)
            for target in targets:
                world.shim.invocation(
                    command_id, target, "Success", conftest.summary_line(target, release)
                )
                world.deliver(world.invocation_event(command_id, target, "Success"))
            world.shim.command(command_id, "Success", completed=len(targets))
            calls.take()
            world.deliver(world.command_event(command_id, "Success"))
            return calls.take()

        first = world.push(1, "v1")
        finish(first.release, first.command_id or "", world.shim.targets(first.command_id or ""))
        document = world.config.to_document()
        world.config = AppConfig.parse(
            {
                **document,
                "rollout": {
                    **document["rollout"],
                    "stages": [{"hosts": 1, "bake_seconds": STAGE_BAKE}, {"hosts": "100%"}],
                    "analysis": {"interval_seconds": 1, "min_requests": 20},
                    "alarms": [BENCH_ALARM],
                },
            }
        )
        world.core.apps.put(world.config)
        two = world.push(2, "v2")
        command_id = two.stage_command_id or ""
        ending, ending_detail = finish(two.release, command_id, world.shim.targets(command_id))
        baking = world.release(2)
        if baking.stage_state != "BAKING":
            raise SystemExit(f"canary: stage 1 did not bake: {baking.stage_state} {baking.status_reason}")
        checks, check_detail, how = 0, {}, ""
        for _ in range(STAGE_BAKE - 1):
            clock.now += 1
            n, check_detail, how = _tick(world, calls)
            checks += n
        clock.now += 1
        sending, sending_detail, _ = _tick(world, calls)
        after = world.release(2)
        if after.stage == 0 and after.stage_state == "BAKING":
            raise SystemExit("canary: the bake did not end on time")
        return {
            "size": size,
            "stage": ending + checks + sending,
            "ending": ending,
            "checks": checks,
            "sending": sending,
            "ending_detail": ending_detail,
            "check_detail": check_detail,
            "sending_detail": sending_detail,
            "ticks": how,
        }


# -- 2 and 3. canaries on a local cloud ----------------------------------------------------------


def canaries() -> dict[str, Any]:
    from localcloud.cloud import LocalCloud, Timeline  # noqa: PLC0415
    from localcloud.stories import canary  # noqa: PLC0415

    def log(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    figures: dict[str, Any] = {
        "bad_release_share": [],
        "act_share": [],
        "detect_to_stable_seconds": [],
        "caught": [],
        "good_canaries": 0,
        "false_positives": 0,
        "good_failures": [],
    }
    bad_runs: list[canary.CanaryOutcome] = []
    with LocalCloud(timeline=Timeline(echo=False)) as cloud:
        loads = canary.Loads(APP, RATE)
        try:
            config = cloud.create_app(APP, max_concurrency="2", max_errors="0", retain=3)
            cloud.push(APP, "v1", 1)
            cloud.wait_for(
                lambda: (canary.release_by_tag(cloud, APP, "v1") or {}).get("status") == "SUCCEEDED",
                180,
                "v1",
            )
            cloud.scale(APP, HOSTS)
            assert cloud.fleet is not None
            cloud.fleet.wait_settled(240)
            cloud.settle(120)
            loads.ensure(cloud)
            stable = canary.release_by_tag(cloud, APP, "v1") or {}
            stable_number, stable_digest = 1, str(stable["digest"])
            number = 1
            analysis = {"interval_seconds": 1, "min_requests": 20}
            canary.config_put(
                cloud,
                canary.with_rollout(
                    config,
                    stages=[{"hosts": 1, "bake_seconds": CANARY_BAKE}, {"hosts": "100%"}],
                    analysis=analysis,
                ),
                echo=False,
            )
            for run in range(RUNS):
                number += 1
                out = canary.canary_act(
                    cloud,
                    loads,
                    app=APP,
                    tag=f"bad{run}",
                    number=number,
                    stable_number=stable_number,
                    stable_digest=stable_digest,
                    kind="flaky",
                    log=log,
                )
                bad_runs.append(out)
                figures["act_share"].append(out.act_share)
                figures["detect_to_stable_seconds"].append(out.detect_to_stable_seconds)
                figures["caught"].append(out.caught)
                print(
                    f"canary run {run + 1}: caught {out.caught}, share of the act {out.act_share}, "
                    f"detect→stable {out.detect_to_stable_seconds} s",
                    file=sys.stderr,
                    flush=True,
                )
            canary.config_put(
                cloud,
                canary.with_rollout(
                    config,
                    stages=[{"hosts": 1, "bake_seconds": GOOD_BAKE}, {"hosts": "100%"}],
                    analysis=analysis,
                ),
                echo=False,
            )
            for run in range(GOOD):
                number += 1
                digest = str((cloud.pointer(APP) or {}).get("digest") or stable_digest)
                out = canary.canary_act(
                    cloud,
                    loads,
                    app=APP,
                    tag=f"good{run}",
                    number=number,
                    stable_number=stable_number,
                    stable_digest=digest,
                    kind="good",
                    log=lambda _text: None,
                )
                figures["good_canaries"] += 1
                if out.passed:
                    stable_number = number
                else:
                    figures["false_positives"] += 1
                    figures["good_failures"].append(
                        {"release": out.release, "status": out.status, "reason": out.reason[:200]}
                    )
                print(f"good canary {run + 1}: {out.status} {out.reason[:120]}", file=sys.stderr, flush=True)
        except TimeoutError as exc:
            # A release that never ends holds the app's lock: every later push would wait too.
            figures["error"] = str(exc)
            print(f"canary: stopped: {exc}", file=sys.stderr, flush=True)
        finally:
            if bad_runs and "error" not in figures:
                # Each bad run's share is over the minute of traffic from its push.
                time.sleep(max(0.0, bad_runs[-1].pushed_at + canary.SHARE_WINDOW - time.monotonic()))
                results = loads.all()
                figures["bad_release_share"] = [
                    canary.minute_share(results, out.pushed_at, out.pushed_line) for out in bad_runs
                ]
            loads.stop()
    return figures


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="aws_lambda_powertools")
    from deployer.observability import logger  # noqa: PLC0415

    logger.setLevel("ERROR")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    per_size: dict[str, int] = {}
    for size in FLEET_SIZES:
        result = stage_calls(size)
        per_size[str(size)] = result["stage"]
        print(
            f"fleet {size:>5}: one stage {result['stage']} calls (ending {result['ending']}, "
            f"{STAGE_BAKE - 1} bake checks {result['checks']}, bake end + next send {result['sending']}; "
            f"ticks delivered as: {result['ticks']})",
            file=sys.stderr,
            flush=True,
        )
        if size == FLEET_SIZES[0]:
            print(f"  ending: {json.dumps(result['ending_detail'])}", file=sys.stderr)
            print(f"  one bake check: {json.dumps(result['check_detail'])}", file=sys.stderr)
            print(f"  bake end + next send: {json.dumps(result['sending_detail'])}", file=sys.stderr)
    figures = canaries() if RUNS or GOOD else {}
    print(
        "BENCH "
        + json.dumps(
            {
                "runs": RUNS,
                "bad_release_share": figures.get("bad_release_share", []),
                "act_share": figures.get("act_share", []),
                "detect_to_stable_seconds": figures.get("detect_to_stable_seconds", []),
                "caught": figures.get("caught", []),
                "good_canaries": figures.get("good_canaries", 0),
                "false_positives": figures.get("false_positives", 0),
                "stage_api_calls": per_size,
                **({"error": figures["error"]} if "error" in figures else {}),
            }
        )
    )


if __name__ == "__main__":
    main()
