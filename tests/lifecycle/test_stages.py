"""Stages through the controller and moto, each function under its role: every stage is one
command to chosen instances, never re-sent to a host that took an earlier one; pointer, launch
template and group move only when the last stage starts; a bake ends on the first trigger after
its time (the reconciler's tick at the latest); `continue` approves; a cancel or a failed stage
rolls back through the one rollback path."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from deployer import cli
from deployer.entry.events import handle_operation
from deployer.errors import DeployerError
from deployer.models.config import AppConfig
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, Release, ReleaseSource, ReleaseStatus
from deployer.reconcile import reconcile_app
from moto import mock_aws

from tests.lifecycle.conftest import DOCUMENT, GROUP, World, build_world, client, notifications
from tests.lifecycle.test_cli import Clock as CliClock
from tests.lifecycle.test_cli import run, run_timed

pytestmark = pytest.mark.unit

STAGES = [
    {"hosts": 1, "bake_seconds": 300},
    {"hosts": "50%", "approve": True},
    {"hosts": "100%"},
]


class Clock:
    """The controller's clock (epoch seconds), moved on by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def staged(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, Clock]]:
    with mock_aws():
        world = build_world(monkeypatch, hosts=4)
        clock = Clock()
        monkeypatch.setattr(world.core.state, "_clock", clock)
        yield world, clock


def with_stages(world: World) -> None:
    world.config = AppConfig.parse(
        {**world.config.to_document(), "rollout": {**world.config.rollout.model_dump(), "stages": STAGES}}
    )
    world.core.apps.put(world.config)


def commands(comment: str) -> list[dict[str, Any]]:
    found = [c for c in client("ssm").list_commands()["Commands"] if c["Comment"] == comment]
    assert all(c["DocumentName"] == DOCUMENT for c in found)
    return found


def run_stage(world: World, release: Release, failures: dict[str, str] | None = None) -> dict[str, Any]:
    """The stage's hosts run its command; its events are delivered (invocations, then command)."""
    assert release.stage_command_id
    invocations, ended = world.run_command(
        release.model_copy(update={"command_id": release.stage_command_id}), failures
    )
    for event in invocations:
        world.deliver(event)
    return world.deliver(ended[0])


def live_one_then_staged_push(world: World) -> tuple[int, Release]:
    """Release 1 live on the 4 hosts (no stages yet), then the app gains stages and 2 is pushed."""
    world.complete(world.push(1, "v1"))
    version = world.core.launch_templates.current(world.config).version
    with_stages(world)
    return version, world.push(2, "v2")


def test_a_staged_push_sends_one_host_and_moves_neither_pointer_nor_group(
    staged: tuple[World, Clock],
) -> None:
    world, _ = staged
    version, two = live_one_then_staged_push(world)
    (stage,) = commands("deployer stage 0 web release 2")
    assert stage["InstanceIds"] == [sorted(world.instances)[0]]
    assert stage["Parameters"]["release"] == ["2"]
    assert (two.stage, two.stage_command_id, two.stage_hosts) == (0, stage["CommandId"], stage["InstanceIds"])
    assert commands("deployer web release 2") == []
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == version


def test_stages_bake_wait_for_approval_and_never_resend_a_host(staged: tuple[World, Clock]) -> None:
    world, clock = staged
    version, two = live_one_then_staged_push(world)
    ordered = sorted(world.instances)
    # When the canary's command succeeds, the release bakes for 300 s
    run_stage(world, two)
    baking = world.release(2)
    assert (baking.stage, baking.stage_state, baking.bake_until) == (0, STAGE_BAKING, int(clock.now) + 300)
    # and a reconciler tick before its end sends nothing more
    clock.now += 299
    reconcile_app(world.ld, world.config)
    assert commands("deployer stage 1 web release 2") == []
    # When the tick after its end comes, stage 2 goes to one more host (50% of 4), not the canary
    clock.now += 1
    reconcile_app(world.ld, world.config)
    (second,) = commands("deployer stage 1 web release 2")
    assert second["InstanceIds"] == [ordered[1]]
    run_stage(world, world.release(2))
    # Then it waits for approval (bake 0), pointer and group still on release 1
    waiting = world.release(2)
    assert (waiting.stage, waiting.stage_state, waiting.stage_hosts) == (1, STAGE_AWAITING, ordered[:2])
    clock.now += 3600
    reconcile_app(world.ld, world.config)
    assert world.release(2).stage_state == STAGE_AWAITING
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == version
    status = handle_operation(world.ld, {"app": "web", "action": "status"})
    assert status["releases"][0]["stage"] == {
        "stage": 2,
        "stages": 3,
        "state": STAGE_AWAITING,
        "hosts": ordered[:2],
        "bake_seconds_left": None,
    }
    # and each stage transition was announced once, naming the stage
    stage_notices = [
        (m["event"], m["stage"]) for m in notifications(world) if m["event"].startswith("deploy_stage")
    ]
    assert stage_notices == [
        ("deploy_stage_passed", 1),
        ("deploy_stage_passed", 2),
        ("deploy_stage_awaiting", 2),
    ]
    # and each stage before the last asked its hosts to keep the stable container warm
    for index in (0, 1):
        (sent,) = commands(f"deployer stage {index} web release 2")
        assert sent["Parameters"]["keepStandby"] == ["true"]
    # When an operator approves, the last stage moves pointer and group and goes to every host,
    # the canary hosts too, without keepStandby (their standby goes)
    result = handle_operation(world.ld, {"app": "web", "action": "continue"})
    assert (result["release"], result["stage"], result["stages"]) == (2, 2, 3)
    (last,) = commands("deployer web release 2")
    assert sorted(last["InstanceIds"]) == ordered
    assert "keepStandby" not in last["Parameters"]
    assert world.core.pointer.get("web").release == 2  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version != version
    world.complete(world.release(2))
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    world.assert_agree()
    # and a second `continue` is refused
    with pytest.raises(DeployerError, match=r"nothing to continue"):
        handle_operation(world.ld, {"app": "web", "action": "continue"})


def test_a_cancel_mid_bake_rolls_back_through_the_rollback_release(staged: tuple[World, Clock]) -> None:
    world, _ = staged
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    assert world.release(2).stage_state == STAGE_BAKING
    result = handle_operation(world.ld, {"app": "web", "action": "cancel"})
    assert (result["release"], result["rollback_release"], result["target"]) == (2, 3, 1)
    three = world.release(3)
    assert (three.source, three.rollback_of, three.stage) == (ReleaseSource.ROLLBACK, 2, None)
    (rollback,) = commands("deployer web release 3")
    # The rollback is today's: the group's tag, every host (those on release 1 answer "already live"),
    # without keepStandby (the canary switches back to its standby and removes the canary container)
    assert rollback["Targets"] == [{"Key": "tag:aws:autoscaling:groupName", "Values": [GROUP]}]
    assert "keepStandby" not in rollback["Parameters"]
    assert world.release(2).status is ReleaseStatus.CANCELLED
    world.complete(three)
    assert world.release(3).status is ReleaseStatus.SUCCEEDED
    world.assert_agree()


def test_a_failed_canary_fails_the_release_and_rolls_back(staged: tuple[World, Clock]) -> None:
    world, clock = staged
    _, two = live_one_then_staged_push(world)
    canary = sorted(world.instances)[0]
    run_stage(world, two, failures={canary: "health"})
    failed = world.release(2)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason.startswith("stage 1 failed")
    three = world.release(3)
    assert (three.status, three.rollback_of, three.replaces) == (ReleaseStatus.DEPLOYING, 2, 1)
    # No later stage is ever sent, however much time passes
    clock.now += 10_000
    reconcile_app(world.ld, world.config)
    assert commands("deployer stage 1 web release 2") == []
    world.complete(three)
    world.assert_agree()


def test_the_cli_shows_the_stage_and_continue_approves_it(staged: tuple[World, Clock]) -> None:
    world, clock = staged
    _, two = live_one_then_staged_push(world)
    ordered = sorted(world.instances)
    run_stage(world, two)
    clock.now += 300
    reconcile_app(world.ld, world.config)
    run_stage(world, world.release(2))
    # When an operator looks, the stage, its hosts and the wait are shown; the hosts that took
    # it (their outcomes recorded from the stage commands' events) are not drift
    code, view, _ = run(world, "status", "web")
    assert code == 0
    assert view["deploying"]["stage"] == {
        "stage": 2,
        "stages": 3,
        "state": STAGE_AWAITING,
        "hosts": ordered[:2],
        "bake_seconds_left": None,
    }
    running = {h["instance_id"]: h["release"] for h in view["hosts"]}
    assert running == {ordered[0]: 2, ordered[1]: 2, ordered[2]: 1, ordered[3]: 1}
    assert view["drift"] == []
    # When they run `deployer continue web`, the last stage starts
    code, result, _ = run(world, "continue", "web")
    assert (code, result["release"], result["stage"]) == (0, 2, 2)
    assert world.release(2).stage == 2
    # and a second one is refused with a message naming why
    code, _, err = run(world, "continue", "web")
    assert code != 0
    assert "not awaiting approval" in err


def test_wait_follows_a_staged_release_through_its_approval_to_its_end(staged: tuple[World, Clock]) -> None:
    world, clock = staged
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    clock.now += 300
    reconcile_app(world.ld, world.config)
    run_stage(world, world.release(2))
    assert world.release(2).stage_state == STAGE_AWAITING

    def meanwhile(sleeps: int) -> None:
        # The operator approves while `wait` polls; then the fleet runs the last stage.
        if sleeps == 1:
            handle_operation(world.ld, {"app": "web", "action": "continue"})
        if sleeps == 2:
            world.complete(world.release(2))

    code, result, _ = run_timed(world, CliClock(meanwhile), "wait", "web", "--release", "2")
    assert (code, result["status"]) == (0, "SUCCEEDED")
    assert result["stage"]["stage"] == 3
    assert result["stage"]["stages"] == 3


def test_a_cancel_while_a_stage_runs_cancels_its_command(staged: tuple[World, Clock]) -> None:
    world, _ = staged
    _, two = live_one_then_staged_push(world)
    # When the operator cancels before the canary's command ended
    result = handle_operation(world.ld, {"app": "web", "action": "cancel"})
    # Then SSM was asked to cancel that command, and the rollback release takes over
    (stage,) = commands("deployer stage 0 web release 2")
    assert stage["CommandId"] == two.stage_command_id
    assert world.shim.cancelled == [two.stage_command_id]
    assert (result["release"], result["rollback_release"]) == (2, 3)


def test_a_rollback_asked_staged_sends_its_first_stage_to_the_canary(staged: tuple[World, Clock]) -> None:
    world, _ = staged
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    result = handle_operation(world.ld, {"app": "web", "action": "cancel"})
    world.complete(world.release(result["rollback_release"]))
    # Now the operator rolls back to release 2 (the cancelled one's image) asking for stages.
    code, result, err = run(world, "rollback", "web", "--to", "2", "--staged")
    assert (code, err) == (0, "")
    rollback = world.release(result["release"])
    assert (rollback.source, rollback.staged_rollback, rollback.stage) == (ReleaseSource.ROLLBACK, True, 0)
    (stage,) = commands(f"deployer stage 0 web release {rollback.release}")
    assert stage["InstanceIds"] == [sorted(world.instances)[0]]
    assert commands(f"deployer web release {rollback.release}") == []


def test_a_rollback_by_default_skips_the_stages(staged: tuple[World, Clock]) -> None:
    world, _ = staged
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    result = handle_operation(world.ld, {"app": "web", "action": "cancel"})
    world.complete(world.release(result["rollback_release"]))
    result = handle_operation(world.ld, {"app": "web", "action": "rollback", "to": 2})
    rollback = world.release(result["release"])
    assert (rollback.staged_rollback, rollback.stage) == (False, None)
    assert commands(f"deployer stage 0 web release {rollback.release}") == []
    (command,) = commands(f"deployer web release {rollback.release}")
    assert command["Targets"] == [{"Key": "tag:aws:autoscaling:groupName", "Values": [GROUP]}]


# ------------------------------------------------------------------ canary analysis
def put_proxy_metrics(release: int, at: int, requests: int, errors: int, latency: dict[float, int]) -> None:
    """What a host's meter sends for one flush (contract: namespace Deployer/Proxy, [App, Release])."""
    dims = [{"Name": "App", "Value": "web"}, {"Name": "Release", "Value": str(release)}]
    stamp = datetime.fromtimestamp(at, UTC)
    client("cloudwatch").put_metric_data(
        Namespace="Deployer/Proxy",
        MetricData=[
            {
                "MetricName": "Requests",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": requests,
                "Unit": "Count",
                "StorageResolution": 1,
            },
            {
                "MetricName": "Errors5xx",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": errors,
                "Unit": "Count",
                "StorageResolution": 1,
            },
            {
                "MetricName": "Latency",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Values": list(latency),
                "Counts": [float(c) for c in latency.values()],
                "Unit": "Milliseconds",
                "StorageResolution": 1,
            },
        ],
    )


def test_a_canary_answering_5xx_fails_during_its_bake_and_its_host_rolls_back(
    staged: tuple[World, Clock],
) -> None:
    world, clock = staged
    clock.now = float(int(time.time()) // 60 * 60 - 600)  # metrics carry real, past timestamps
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    baking = world.release(2)
    assert baking.bake_started_at == int(clock.now)
    # Given the canary (2) answering 20 % 5xx and the stable release (1) none, over 20 s of bake
    start = int(clock.now)
    for second in range(start + 1, start + 21):
        put_proxy_metrics(2, second, 10, 2, {30.0: 9, 45.0: 1})
        put_proxy_metrics(1, second, 30, 0, {28.0: 29, 40.0: 1})
    clock.now += 30
    # When the next trigger converges the app, well before the bake's end
    reconcile_app(world.ld, world.config)
    # Then release 2 failed, naming both rates, and a rollback release to 1 started
    failed = world.release(2)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason == (
        "canary analysis failed: 5xx rate 20.0% (40 of 200) vs stable 0.0% (0 of 600); allowed 1.0%"
    )
    rollback = world.release(3)
    assert (rollback.status, rollback.rollback_of, rollback.source) == (
        ReleaseStatus.DEPLOYING,
        2,
        ReleaseSource.ROLLBACK,
    )
    # and the check recorded what CloudWatch answered, p99 included
    (check,) = failed.analysis or []
    assert check["verdict"] == "fail"
    assert check["window"] == [start, start + 30]
    assert check["canary"] == {"release": 2, "requests": 200, "errors": 40, "error_rate": 0.2, "p99_ms": 45.0}
    assert check["stable"] == {"release": 1, "requests": 600, "errors": 0, "error_rate": 0.0, "p99_ms": 40.0}
    # and `deployer history` shows the stage's latest check with its numbers
    code, rows, _ = run(world, "history", "web")
    assert code == 0
    (row,) = [r for r in rows if r["release"] == 2]
    assert row["analysis"] == [check]


def test_status_shows_a_baking_canarys_check_and_its_chart_against_the_stable_release(
    staged: tuple[World, Clock],
) -> None:
    world, clock = staged
    clock.now = float(int(time.time()) // 60 * 60 - 600)
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    start = int(clock.now)
    # Given a canary whose 5xx share climbs while the stable release answers none
    for second in range(start + 1, start + 31):
        put_proxy_metrics(2, second, 10, 1 if second > start + 27 else 0, {30.0: 10})
        put_proxy_metrics(1, second, 30, 0, {28.0: 30})
    clock.now += 30
    # When a trigger checks it (2 of 290 in the window: under 1 %, it bakes on) and status is asked
    reconcile_app(world.ld, world.config)
    code, view, _ = run(world, "status", "web")
    assert code == 0
    deploying = view["deploying"]
    # Then the stage's latest check is shown with its figures
    (latest,) = deploying["analysis"]
    assert (latest["verdict"], latest["canary"]["requests"], latest["canary"]["errors"]) == ("pass", 290, 2)
    # and the chart holds the canary's climbing 5xx share against the stable release's none
    drawn = deploying["chart"]
    assert drawn["canary"]["release"] == 2
    assert drawn["stable"]["release"] == 1
    rates = [r for r in drawn["canary"]["error_rates"] if r is not None]
    assert rates[0] == 0.0
    assert max(rates) == 0.1
    assert {r for r in drawn["stable"]["error_rates"] if r is not None} == {0.0}
    assert [line.split()[0:2] for line in drawn["lines"]] == [
        ["5xx", "rate"],
        ["stable", "1"],
        ["p99", "canary"],
        ["stable", "1"],
    ]
    assert "█" in drawn["lines"][0]
    # and the same, for people
    out = io.StringIO()
    assert cli.main(["status", "web"], deps=world.core, out=out, err=io.StringIO()) == 0
    text = out.getvalue()
    assert "stage 1 analysis PASS: canary release 2 5xx 0.7% (2 of 290), p99 30 ms" in text
    assert drawn["lines"][0] in text


def test_a_healthy_canary_is_recorded_passing_and_its_bake_ends_on_time(staged: tuple[World, Clock]) -> None:
    world, clock = staged
    clock.now = float(int(time.time()) // 60 * 60 - 600)
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    start = int(clock.now)
    for second in range(start + 1, start + 21):
        put_proxy_metrics(2, second, 10, 0, {30.0: 10})
        put_proxy_metrics(1, second, 30, 0, {28.0: 30})
    clock.now += 300
    reconcile_app(world.ld, world.config)
    passed = world.release(2)
    assert passed.status is ReleaseStatus.DEPLOYING
    assert passed.stage == 1  # the bake ended: the next stage started
    (check,) = passed.analysis or []
    assert (check["verdict"], check["canary"]["requests"], check["stable"]["requests"]) == ("pass", 200, 600)
    assert check["window"] == [start, start + 300]


def test_wait_prints_each_new_check_with_the_chart_until_the_canary_fails(
    staged: tuple[World, Clock],
) -> None:
    world, clock = staged
    clock.now = float(int(time.time()) // 60 * 60 - 600)
    _, two = live_one_then_staged_push(world)
    run_stage(world, two)
    start = int(clock.now)

    def meanwhile(sleeps: int) -> None:
        # While `wait` polls, the canary answers 20 % 5xx and a tick checks it.
        if sleeps == 1:
            for second in range(start + 1, start + 21):
                put_proxy_metrics(2, second, 10, 2, {30.0: 10})
                put_proxy_metrics(1, second, 30, 0, {28.0: 30})
            clock.now += 30
            reconcile_app(world.ld, world.config)

    out, err = io.StringIO(), io.StringIO()
    cli_clock = CliClock(meanwhile)
    code = cli.main(
        ["wait", "web", "--release", "2", "--timeout", "30"],
        deps=world.core,
        out=out,
        err=err,
        sleep=cli_clock.sleep,
        clock=lambda: cli_clock.now,
    )
    text = out.getvalue()
    assert code != 0, text
    assert (
        "stage 1 analysis FAIL: canary release 2 5xx 20.0% (40 of 200), p99 30 ms; "
        "stable release 1 5xx 0.0% (0 of 600), p99 28 ms"
    ) in text
    chart_lines = [line for line in text.splitlines() if line.startswith("5xx rate canary 2")]
    assert chart_lines, text
