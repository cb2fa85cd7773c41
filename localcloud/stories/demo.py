"""`make demo`: the whole story on this machine, with a readable timeline.

1. a 3-instance fleet boots on v1 from user data;
2. push v2 → rolling deploy while a load generator hits every host's proxy;
3. push v3, which fails its health check → release fails, automatic rollback to v2, and why;
4. scale out to 4 during a deploy (v4) → the new host ends on the newest release;
5. invoke rollback → back to v1 in seconds, from the images the hosts retained;
6. canary: `deployer config put` gives the app stages (1 host baking 10 s, then 100 %) and the
   built-in analysis; v5 passes its health check but answers 503 to a fifth of its requests:
   the canary host takes it, the analysis catches it during the bake, the canary goes back to
   v1, no other host ever answers with it, and the load generator counts the bad responses
   (`localcloud.stories.canary`);
7. alarm: the app names the CloudWatch alarm `checkout-failures` (on `Demo/Checkout Failures`,
   which the demo feeds) and has three stages; during stage 2's bake the demo reports checkout
   failures, the local alarm stand-in flips the alarm to ALARM and emits its state-change
   event; the good release v6 fails at stage 2 naming the alarm, its two hosts go back to v1
   and stage 3 is never sent;
8. a closing table per host;
9. the real `deployer` CLI against the local cloud: `deployer status web`, `deployer history web`
   (the environment a shell gets from `.localcloud/env` in the playground).
The last line is `DEMO {json}`: `failed_requests` counts requests the swaps failed (the bad
release's own 503s are `bad_responses`); `bad_release_share` is over the minute of traffic from
the bad release's push, `canary_act_share` over the canary act (push to every host back on v1).
Everything started is removed on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud, Timeline
from localcloud.hosts.images import release_body
from localcloud.stories import canary
from localcloud.stories.canary import Loads
from localcloud.stories.playground import cli_environment

APP = "web"
BAD = 5  # the flaky image of the canary act answers "web release 5"
CANARY_BAKE = 10  # the canary's bake: the analysis must catch the bad release within it
ALARM = "checkout-failures"
ALARM_BAKE = 120  # stage 2's bake in the alarm act: long, so only the alarm can end it


def _release_of(cloud: LocalCloud, tag: str) -> dict[str, Any] | None:
    rels = [r for r in cloud.releases(APP) if r.get("tag") == tag and r.get("source", "push") == "push"]
    return rels[-1] if rels else None


def _wait_release(cloud: LocalCloud, tag: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    cloud.wait_for(
        lambda: (_release_of(cloud, tag) or {}).get("status") in statuses,
        timeout,
        f"release {tag} to reach {'/'.join(sorted(statuses))}",
    )
    rel = _release_of(cloud, tag)
    assert rel is not None
    return rel


def _hosts_on(cloud: LocalCloud, digest: str) -> bool:
    """Every host of the group serves the image `digest` (a rollback is a new release number)."""
    assert cloud.fleet is not None
    hosts = cloud.fleet.live(f"{APP}-asg")
    return bool(hosts) and all((h.sandbox.state(APP) or {}).get("digest") == digest for h in hosts)


def _pulled(cloud: LocalCloud, command_id: str | None) -> list[str]:
    """Hosts whose agent pulled an image during one command (the summary's pull timing)."""
    if not command_id or cloud.ssm is None or command_id not in cloud.ssm.runs:
        return []
    out = []
    for h in cloud.ssm.runs[command_id].hosts:
        lines = [ln for ln in h.stdout.splitlines() if ln.startswith("{")]
        try:
            summary = json.loads(lines[-1]) if lines else {}
        except ValueError:
            summary = {}
        if int(summary.get("pull_attempts") or 0) > 0:
            out.append(h.instance_id)
    return out


def run(rate: float, echo: bool = True) -> dict[str, Any]:
    tl = Timeline(echo=echo)
    cloud = LocalCloud(timeline=tl)
    loads = Loads(APP, rate)
    result: dict[str, Any] = {
        "hosts": 0,
        "requests": 0,
        "failed_requests": 0,
        "auto_rollback": False,
        "manual_rollback": False,
        "rollback_seconds": None,
        "hosts_consistent": False,
        "cli_ok": False,
        "canary_caught": False,
        "bad_release_share": None,
        "bad_responses": 0,
        "detect_to_stable_seconds": None,
        "canary_act_share": None,
        "alarm_stopped": False,
    }
    durations: dict[str, float] = {}
    cleaned = False

    def cleanup() -> None:
        nonlocal cleaned
        if cleaned:
            return
        cleaned = True
        loads.stop()
        cloud.stop()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"\ninterrupted (signal {signum}); cleaning up", file=sys.stderr, flush=True)
        cleanup()
        sys.exit(130)

    atexit.register(cleanup)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def step(n: int, title: str) -> float:
        print(f"\n== {n}. {title}", flush=True)
        return time.monotonic()

    try:
        t = step(0, "local cloud: moto server, registry, the stack of template.yaml")
        cloud.start()
        # two hosts at a time: a rolling deploy that still rolls 4 hosts back in seconds
        app_config = cloud.create_app(APP, max_concurrency="2", max_errors="0", retain=3)
        durations["setup"] = time.monotonic() - t

        t = step(1, "a 3-instance fleet boots on v1 from user data")
        cloud.push(APP, "v1", 1)
        _wait_release(cloud, "v1", {"SUCCEEDED"}, 120)
        cloud.scale(APP, 3)
        cloud.fleet.wait_settled(240)  # type: ignore[union-attr]
        cloud.settle(120)
        v1 = _release_of(cloud, "v1")
        assert v1 is not None
        tl(f"hosts: {cloud.host_releases(APP)} (release {v1['release']} = v1)")
        durations["boot_v1"] = time.monotonic() - t

        t = step(2, "push v2: rolling deploy under load on every host's proxy")
        loads.ensure(cloud)
        time.sleep(1.0)
        cloud.push(APP, "v2", 2)
        v2 = _wait_release(cloud, "v2", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, 180)
        cloud.settle(120)
        failed_now = sum(g.result.failed for g in loads.gens.values())
        tl(f"release {v2['release']} (v2) {v2['status']}; failed requests so far: {failed_now}")
        durations["deploy_v2"] = time.monotonic() - t

        t = step(3, "push v3, which fails its health check")
        cloud.push(APP, "v3", 3, kind="broken")
        v3 = _wait_release(cloud, "v3", {"FAILED", "ROLLED_BACK", "SUCCEEDED"}, 180)
        cloud.settle(120)
        v3 = _release_of(cloud, "v3") or v3
        pointer = cloud.pointer(APP) or {}
        result["auto_rollback"] = (
            v3.get("status") in {"FAILED", "ROLLED_BACK"}
            and pointer.get("digest") == v2["digest"]
            and _hosts_on(cloud, str(v2["digest"]))
        )
        why = v3.get("status_reason") or v3.get("reason")
        tl(f"release {v3['release']} (v3) {v3.get('status')}: {why}")
        for o in cloud.host_outcomes(APP, int(v3["release"])):
            summary = o.get("summary") or {}
            tail = (summary.get("log_tail") or o.get("log_tail") or [""])[-1:]
            if (o.get("failure_class") or summary.get("failure_class")) == "cancelled":
                continue  # never sent: the error threshold was reached first
            tl(
                f"  {o.get('instance_id')}: {o.get('failure_class') or summary.get('failure_class')} — "
                f"{o.get('message') or summary.get('message')} | app log: {tail[0] if tail else ''}"
            )
        tl(
            f"pointer back on release {pointer.get('release')} ({pointer.get('tag')}); "
            f"hosts: {cloud.host_releases(APP)}"
        )
        durations["failed_v3_and_auto_rollback"] = time.monotonic() - t

        t = step(4, "scale out to 4 during the v4 deploy")
        cloud.push(APP, "v4", 4)
        time.sleep(0.5)
        new_hosts = cloud.scale(APP, 4)
        v4 = _wait_release(cloud, "v4", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, 180)
        cloud.fleet.wait_settled(240)  # type: ignore[union-attr]
        cloud.settle(120)
        loads.ensure(cloud)
        for h in new_hosts:
            tl(
                f"new host {h.instance_id}: release {(h.sandbox.state(APP) or {}).get('release')} "
                f"(v4 = release {v4['release']}, {v4['status']})"
            )
        durations["deploy_v4_scale_out"] = time.monotonic() - t

        t = step(5, "invoke rollback to v1")
        time.sleep(1.0)
        started = time.monotonic()
        answer = cloud.invoke("RollbackFunction", {"app": APP, "to": "v1", "reason": "demo: back to v1"})
        tl(f"rollback answered: {json.dumps(answer, default=str)[:200]}")
        cloud.wait_for(
            lambda: (
                (cloud.pointer(APP) or {}).get("digest") == v1["digest"]
                and _hosts_on(cloud, str(v1["digest"]))
            ),
            120,
            "every host on v1",
        )
        result["rollback_seconds"] = round(time.monotonic() - started, 2)
        cloud.settle(60)
        command = (answer or {}).get("command_id") if isinstance(answer, dict) else None
        pulled = _pulled(cloud, command)
        result["manual_rollback"] = _hosts_on(cloud, str(v1["digest"]))
        tl(f"every host on v1 after {result['rollback_seconds']} s; hosts that pulled: {pulled or 'none'}")
        durations["rollback_v1"] = time.monotonic() - t
        time.sleep(1.0)

        t = step(6, "canary: a release that passes its health check but fails 20 % of requests")
        staged = canary.with_rollout(
            app_config,
            stages=[{"hosts": 1, "bake_seconds": CANARY_BAKE}, {"hosts": "100%"}],
            analysis={"interval_seconds": 1, "min_requests": 20},
        )
        canary.config_put(cloud, staged)
        caught = canary.canary_act(
            cloud,
            loads,
            app=APP,
            tag="v5",
            number=BAD,
            stable_number=1,
            stable_digest=str(v1["digest"]),
            kind="flaky",
            log=tl,
        )
        result.update(
            canary_caught=caught.caught,
            canary_act_share=caught.act_share,
            bad_responses=caught.bad_responses,
            detect_to_stable_seconds=caught.detect_to_stable_seconds,
        )
        canary.deployer(cloud, "history", APP, "--limit", "2")  # the verdict as an operator reads it
        durations["canary"] = time.monotonic() - t

        t = step(7, f"alarm: {ALARM} fires during stage 2's bake and stops the release")
        canary.create_alarm(cloud, ALARM)
        alarmed = canary.with_rollout(
            staged,
            stages=[
                {"hosts": 1, "bake_seconds": 2},
                {"hosts": 2, "bake_seconds": ALARM_BAKE},
                {"hosts": "100%"},
            ],
            alarms=[ALARM],
        )
        canary.config_put(cloud, alarmed)
        stable = str((cloud.pointer(APP) or {}).get("digest") or v1["digest"])
        stopped = canary.alarm_act(
            cloud, app=APP, alarm=ALARM, tag="v6", number=6, stable_digest=stable, stages=3, log=tl
        )
        result["alarm_stopped"] = stopped.stopped
        durations["alarm"] = time.monotonic() - t
        # bad_release_share is over the minute of traffic from the bad release's push.
        time.sleep(max(0.0, caught.pushed_at + canary.SHARE_WINDOW - time.monotonic()))
        result["bad_release_share"] = canary.minute_share(loads.all(), caught.pushed_at, caught.pushed_line)
    except Exception as exc:  # the story stops; the summary still says what held
        print(f"\ndemo step failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if cloud.bus is not None:
            for d in cloud.bus.dead_letters[-3:]:
                err = d.attempts[-1].error or {}
                print(
                    f"  dead letter {d.function}: {err.get('errorType')}: {err.get('errorMessage')}",
                    file=sys.stderr,
                )
    finally:
        loads.stop()
        if cloud.fleet is not None and cloud.stack is not None:
            try:
                cons = cloud.consistency(APP)
                result["hosts_consistent"] = bool(cons["consistent"])
            except Exception as exc:
                print(f"consistency check failed: {exc}", file=sys.stderr)
            _table(cloud, loads, durations)
            result["cli_ok"] = _cli(cloud)
        result["hosts"] = len(cloud.fleet.live(f"{APP}-asg")) if cloud.fleet else 0
        result["requests"] = sum(r.sent for r in loads.results.values())
        # The bad release's 503s are the app's answers the canary exists to catch (counted as
        # bad_responses), not requests the swaps failed.
        bad_line = release_body(APP, BAD).strip()
        result["failed_requests"] = sum(
            r.failed - r.errors_by_release.get(bad_line, 0) for r in loads.results.values()
        )
        cleanup()
    return result


def _table(cloud: LocalCloud, loads: Loads, durations: dict[str, float]) -> None:
    print("\n== 8. summary", flush=True)
    assert cloud.fleet is not None
    print(f"  {'host':<22}{'proxy':<8}{'release':>8}{'requests':>10}{'failed':>8}  {'errors'}")
    for host in cloud.fleet.live(f"{APP}-asg"):
        state = host.sandbox.state(APP) or {}
        r = loads.current(host.instance_id)
        errs = dict(r.errors) if r else {}
        print(
            f"  {host.instance_id:<22}{host.sandbox.listen_port:<8}{state.get('release', '-')!s:>8}"
            f"{(r.sent if r else 0):>10}{(r.failed if r else 0):>8}  {errs or ''}"
        )
    print("  durations: " + ", ".join(f"{k} {v:.1f}s" for k, v in durations.items()))


def deployer_command() -> list[str]:
    """The installed `deployer` command (the bootstrap installs it into .venv)."""
    script = Path(sys.executable).parent / "deployer"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())"]


def _cli(cloud: LocalCloud) -> bool:
    """`deployer status` and `deployer history` of the app, run as an operator would."""
    print("\n== 9. the deployer CLI against the local cloud", flush=True)
    env = {**os.environ, **cli_environment(cloud), "COLUMNS": "160"}
    ok = True
    for args in (["status", APP], ["history", APP]):
        print(f"$ deployer {' '.join(args)}", flush=True)
        proc = subprocess.run([*deployer_command(), *args], env=env, check=False, timeout=120)
        ok = ok and proc.returncode == 0
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per host proxy (default 100)")
    parser.add_argument("--quiet", action="store_true", help="no timeline, only the DEMO line")
    args = parser.parse_args(argv)
    result = run(args.rate, echo=not args.quiet)
    print("DEMO " + json.dumps(result), flush=True)
    ok = (
        result["failed_requests"] == 0
        and result["auto_rollback"]
        and result["manual_rollback"]
        and result["hosts_consistent"]
        and result["cli_ok"]
        and result["canary_caught"]
        and result["alarm_stopped"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
