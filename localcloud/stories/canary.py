"""The progressive-delivery acts of the story, shared by `make demo` and `make bench B=canary`.

- `canary_act`: push a release under load through a canary stage with the built-in analysis on;
  a flaky release (``images.KINDS``: healthy, 503 to a fifth of `/`) must be caught during the
  canary's bake, the canary host must go back to the stable release and no other host may ever
  answer with it. A good release must pass (else: a false positive).
- `alarm_act`: a CloudWatch alarm named in `rollout.alarms` fires during a later stage's bake
  (the act feeds its metric); the release must fail at that stage, naming the alarm, the hosts
  that took it must go back, and the last stage must never be sent.
- `Loads`: one keep-alive load generator per host proxy; `window` reads what they saw between
  two marks, per release (`localcloud.hosts.load`).

Figures (all from the load generators' clock):

- ``bad_release_share``: responses answered by the pushed release / every request sent to any
  host during the minute of traffic that starts at the push (``SHARE_WINDOW``; `minute_share`,
  read once the minute is over). A fixed window, so runs compare: without a canary, a bad
  release that took a minute to catch would have answered all of it;
- ``act_share``: the same over the act itself, from the push until every host is back on the
  stable release (with 1 canary of 4 hosts, at most about 25 %: the canary's share of traffic);
- ``bad_responses``: the pushed release's 5xx in that window;
- ``detect_to_stable_seconds``: from the first 5xx of the pushed release (any host) to the
  moment the last canary host answered with the stable release again (its first stable answer
  after its last answer from the pushed release).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployer.markers import release_comment, stage_comment

from localcloud.cloud import LocalCloud
from localcloud.hosts.images import release_body
from localcloud.hosts.load import LoadGenerator, LoadResult

TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "CANCELLED"}
ALARM_NAMESPACE = "Demo/Checkout"
ALARM_METRIC = "Failures"


@dataclass
class Loads:
    """One keep-alive load generator per host proxy of `app`, started as hosts join."""

    app: str
    rate: float
    gens: dict[str, LoadGenerator] = field(default_factory=dict)
    results: dict[str, LoadResult] = field(default_factory=dict)

    def ensure(self, cloud: LocalCloud) -> None:
        assert cloud.fleet is not None
        for host in cloud.fleet.live(f"{self.app}-asg"):
            if host.instance_id not in self.gens and host.state == "running":
                gen = LoadGenerator(
                    "127.0.0.1", host.sandbox.listen_port, rate=self.rate, connections=4, max_seconds=1800
                )
                self.gens[host.instance_id] = gen.start()

    def stop(self) -> None:
        for iid, gen in self.gens.items():
            if iid not in self.results:
                self.results[iid] = gen.stop()

    def current(self, iid: str) -> LoadResult | None:
        return self.results.get(iid) or (self.gens[iid].result if iid in self.gens else None)

    def all(self) -> dict[str, LoadResult]:
        return {iid: r for iid in self.gens if (r := self.current(iid)) is not None}


@dataclass
class Window:
    """What the load generators saw between two marks."""

    requests: int  # every request that ended in the window, answered or not
    by_release: dict[str, int]  # release line -> answers (any status)
    errors_by_release: dict[str, int]  # release line -> 5xx answers
    hosts_answered_by: dict[str, list[str]]  # release line -> hosts that answered with it


# The fixed window `bad_release_share` is measured over (seconds from the push).
SHARE_WINDOW = 60.0


def minute_share(results: dict[str, LoadResult], start: float, pushed_line: str) -> float | None:
    """Share of the requests sent in [start, start + SHARE_WINDOW] that `pushed_line`'s release
    answered; None until that minute is over (or without traffic)."""
    if time.monotonic() < start + SHARE_WINDOW:
        return None
    seen = window(results, start, start + SHARE_WINDOW)
    if not seen.requests:
        return None
    return round(seen.by_release.get(pushed_line, 0) / seen.requests, 4)


def window(results: dict[str, LoadResult], start: float, end: float) -> Window:
    requests = 0
    by: dict[str, int] = {}
    errors: dict[str, int] = {}
    hosts: dict[str, list[str]] = {}
    for iid, result in results.items():
        requests += sum(1 for r in list(result.records) if start <= r.ended_at <= end)
        for ended, release, status in list(result.answers):
            if release is None or not start <= ended <= end:
                continue
            by[release] = by.get(release, 0) + 1
            if 500 <= status < 600:
                errors[release] = errors.get(release, 0) + 1
            if iid not in hosts.setdefault(release, []):
                hosts[release].append(iid)
    return Window(requests, by, errors, hosts)


def detect_to_stable(results: dict[str, LoadResult], bad: str, stable: str) -> float | None:
    """First 5xx of `bad` anywhere → the last host that answered with `bad` answers `stable`
    again. None when `bad` never failed or a host never came back."""
    firsts = [r.first_error_at[bad] for r in results.values() if bad in r.first_error_at]
    if not firsts:
        return None
    back: list[float] = []
    for result in results.values():
        if bad not in result.last_at:
            continue
        returned = result.first_answer_after(result.last_at[bad], stable)
        if returned is None:
            return None
        back.append(returned)
    return round(max(back) - min(firsts), 2)


# -- the control plane, read as an operator would -------------------------------------------------


def release_by_tag(cloud: LocalCloud, app: str, tag: str) -> dict[str, Any] | None:
    rels = [r for r in cloud.releases(app) if r.get("tag") == tag and r.get("source", "push") == "push"]
    return max(rels, key=lambda r: int(r["release"])) if rels else None


def hosts_on(cloud: LocalCloud, app: str, digest: str) -> bool:
    assert cloud.fleet is not None
    hosts = cloud.fleet.live(f"{app}-asg")
    return bool(hosts) and all((h.sandbox.state(app) or {}).get("digest") == digest for h in hosts)


def deployer(cloud: LocalCloud, *args: str, echo: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `deployer` CLI against the local cloud (as `make up`'s shell would run it)."""
    from localcloud.stories.playground import cli_environment  # noqa: PLC0415

    script = os.path.join(os.path.dirname(sys.executable), "deployer")
    command = (
        [script]
        if os.path.exists(script)
        else [sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())"]
    )
    env = {**os.environ, **cli_environment(cloud), "COLUMNS": "160"}
    proc = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    if echo:
        print(f"$ deployer {' '.join(args)}", flush=True)
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            print("\n".join("  " + line for line in out.splitlines()), flush=True)
    return proc


def containers_of(cloud: LocalCloud, app: str, release: int) -> int:
    """Containers (running or not) the agents started for one release of `app` on this cloud's
    hosts (other clouds may share the Docker engine)."""
    assert cloud.fleet is not None
    count = 0
    for host in cloud.fleet.live(f"{app}-asg"):
        labels = [
            f"deployer.host={host.sandbox.host_id}",
            f"deployer.app={app}",
            f"deployer.release={release}",
        ]
        filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
        proc = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=False)
        count += len(proc.stdout.split())
    return count


def config_put(cloud: LocalCloud, config: dict[str, Any], echo: bool = True) -> None:
    """`deployer config put APP FILE`: validated and stored as an operator stores it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="app-", delete=False) as handle:
        json.dump(config, handle, indent=1)
        path = handle.name
    try:
        proc = deployer(cloud, "config", "put", str(config["app"]), path, echo=echo)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(f"config put refused the config: {(proc.stderr or proc.stdout).strip()[-400:]}")


def with_rollout(config: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    """`config` with these `rollout` fields replaced (stages, analysis, alarms)."""
    return {**config, "rollout": {**config.get("rollout", {}), **rollout}}


def last_verdict(release: dict[str, Any]) -> dict[str, Any] | None:
    entries = release.get("analysis") or []
    return dict(entries[-1]) if entries else None


def describe_verdict(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "no analysis recorded"
    canary, stable = verdict.get("canary") or {}, verdict.get("stable") or {}

    def side(s: dict[str, Any]) -> str:
        rate = s.get("error_rate")
        p99 = s.get("p99_ms")
        return (
            f"release {s.get('release')}: {s.get('errors')} 5xx of {s.get('requests')}"
            + (f" ({rate * 100:.1f} %)" if isinstance(rate, int | float) else "")
            + (f", p99 {p99:.0f} ms" if isinstance(p99, int | float) else "")
        )

    return (
        f"{verdict.get('verdict')} at stage {int(verdict.get('stage', 0)) + 1}: canary {side(canary)} "
        f"vs stable {side(stable)}; {verdict.get('reason', '')}"
    )


# -- act: the canary ----------------------------------------------------------------------------


@dataclass
class CanaryOutcome:
    release: int | None = None
    status: str | None = None
    reason: str = ""
    verdict: dict[str, Any] | None = None
    canary_hosts: list[str] = field(default_factory=list)
    others_answered: list[str] = field(default_factory=list)  # hosts outside the canary that served it
    others_with_outcome: list[str] = field(default_factory=list)  # ... or recorded a swap of it
    containers_left: int | None = None  # containers of the release on any host once it is over
    back_on_stable: bool = False
    caught: bool = False  # a bad release: failed by the analysis, the fleet back, no other host touched
    passed: bool = False  # a good release: SUCCEEDED
    requests: int = 0
    answered_by_pushed: int = 0
    bad_responses: int = 0
    act_share: float | None = None
    detect_to_stable_seconds: float | None = None
    window_seconds: float = 0.0
    pushed_at: float = 0.0  # the load generators' clock at the push (the share's minute starts here)
    pushed_line: str = ""


def canary_act(
    cloud: LocalCloud,
    loads: Loads,
    *,
    app: str,
    tag: str,
    number: int,
    stable_number: int,
    stable_digest: str,
    kind: str = "flaky",
    timeout: float = 180.0,
    log: Callable[[str], None] = print,
) -> CanaryOutcome:
    """Push image `number` (`kind`) under load through the app's stages; see the module doc.
    `stable_number`/`stable_digest`: the image every host runs before the push."""
    out = CanaryOutcome()
    pushed_line = release_body(app, number).strip()
    stable_line = release_body(app, stable_number).strip()
    loads.ensure(cloud)
    start = time.monotonic()
    pushed = cloud.push(app, tag, number, kind=kind, app=app)
    seen_canary = False

    def progressed() -> bool:
        nonlocal seen_canary
        rel = release_by_tag(cloud, app, tag) or {}
        if not seen_canary and rel.get("stage_state") == "BAKING":
            seen_canary = True
            out.canary_hosts = list(rel.get("stage_hosts") or [])
            log(
                f"release {rel.get('release')} ({tag}, {kind}): stage 1 taken by "
                f"{', '.join(out.canary_hosts)}; baking (analysis every second)"
            )
        return rel.get("status") in TERMINAL

    cloud.wait_for(progressed, timeout, f"release {tag} to end")
    rel = release_by_tag(cloud, app, tag) or {}
    out.release, out.status = int(rel["release"]), str(rel.get("status"))
    out.reason = str(rel.get("status_reason") or "")
    out.canary_hosts = list(rel.get("stage_hosts") or out.canary_hosts)
    out.verdict = last_verdict(rel)
    log(f"release {out.release} {out.status}: {out.reason or '-'}")
    log(f"  analysis: {describe_verdict(out.verdict)}")
    target = stable_digest if kind != "good" or out.status != "SUCCEEDED" else pushed.digest
    try:
        cloud.wait_for(lambda: hosts_on(cloud, app, target), 60, "every host on the expected release")
        out.back_on_stable = True
    except TimeoutError:
        log(f"  hosts not all on {target[:19]}…: {cloud.host_digests(app)}")
    end = time.monotonic()
    cloud.settle(60)
    results = loads.all()
    seen = window(results, start, end)
    out.window_seconds = round(end - start, 1)
    out.requests = seen.requests
    out.answered_by_pushed = seen.by_release.get(pushed_line, 0)
    out.bad_responses = seen.errors_by_release.get(pushed_line, 0)
    out.act_share = round(out.answered_by_pushed / seen.requests, 4) if seen.requests else None
    out.pushed_at, out.pushed_line = start, pushed_line
    answered = seen.hosts_answered_by.get(pushed_line, [])
    out.others_answered = [h for h in answered if h not in out.canary_hosts]
    if kind == "good":
        out.passed = out.status == "SUCCEEDED" and out.back_on_stable
        return out
    took = [
        str(o.get("instance_id"))
        for o in cloud.host_outcomes(app, out.release)
        if (o.get("failure_class") or (o.get("summary") or {}).get("failure_class")) != "cancelled"
    ]
    out.others_with_outcome = [h for h in took if h not in out.canary_hosts]
    out.containers_left = containers_of(cloud, app, out.release)
    log(
        f"  hosts with an outcome for release {out.release}: {', '.join(took) or 'none'}; "
        f"its containers left on any host: {out.containers_left}"
    )
    out.detect_to_stable_seconds = detect_to_stable(results, pushed_line, stable_line)
    by_analysis = bool(out.verdict and out.verdict.get("verdict") == "fail") and "analysis" in out.reason
    out.caught = (
        out.status in {"FAILED", "ROLLED_BACK"}
        and by_analysis
        and out.back_on_stable
        and not out.others_answered
        and not out.others_with_outcome
        and len(out.canary_hosts) == 1
    )
    host_list = ", ".join(out.canary_hosts) or "none"
    log(
        f"  canary host(s) {host_list} back on the stable release: {out.back_on_stable}; "
        f"other hosts that ever answered with release {number}: {out.others_answered or 'none'}"
    )
    log(
        f"  load generator: {out.answered_by_pushed} of {out.requests} requests answered by the bad release "
        f"({(out.act_share or 0) * 100:.2f} %) over {out.window_seconds} s, {out.bad_responses} of "
        f"them 5xx; first 5xx → canary back on stable in {out.detect_to_stable_seconds} s"
    )
    return out


def sent_stage(cloud: LocalCloud, app: str, release: int, index: int) -> bool:
    """Whether stage `index` of a release was ever sent (the command's comment names it; the
    last stage is the ordinary rollout's command, docs/stages.md)."""
    comments = {stage_comment(app, release, index), release_comment(app, release)}
    ssm = cloud.moto.client("ssm")
    for page in ssm.get_paginator("list_commands").paginate():
        if any(c.get("Comment") in comments for c in page["Commands"]):
            return True
    return False


# -- act: the alarm ------------------------------------------------------------------------------


def create_alarm(cloud: LocalCloud, name: str, threshold: float = 5.0) -> None:
    """A CloudWatch alarm on the demo's own business metric (`Demo/Checkout Failures`)."""
    cw = cloud.moto.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName=name,
        AlarmDescription="checkout failures (the demo feeds this metric)",
        Namespace=ALARM_NAMESPACE,
        MetricName=ALARM_METRIC,
        Statistic="Sum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=threshold,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )


def alarm_state(cloud: LocalCloud, name: str) -> tuple[str, str]:
    alarms = cloud.moto.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return (str(alarms[0].get("StateValue")), str(alarms[0].get("StateReason", ""))) if alarms else ("", "")


@dataclass
class AlarmOutcome:
    release: int | None = None
    status: str | None = None
    reason: str = ""
    alarm_state: str = ""
    stage_at_failure: int | None = None
    stage_hosts: list[str] = field(default_factory=list)
    last_stage_sent: bool = False
    back_on_stable: bool = False
    stopped: bool = False


def alarm_act(
    cloud: LocalCloud,
    *,
    app: str,
    alarm: str,
    tag: str,
    number: int,
    stable_digest: str,
    stages: int,
    timeout: float = 180.0,
    log: Callable[[str], None] = print,
) -> AlarmOutcome:
    """Push a good release through `stages` stages; once the second stage bakes, feed the alarm's
    metric above its threshold until the release ends. See the module doc."""
    out = AlarmOutcome()
    cw = cloud.moto.client("cloudwatch")
    cloud.push(app, tag, number, kind="good", app=app)

    def second_stage_baking() -> bool:
        rel = release_by_tag(cloud, app, tag) or {}
        return (rel.get("stage") == 1 and rel.get("stage_state") == "BAKING") or rel.get("status") in TERMINAL

    cloud.wait_for(second_stage_baking, timeout, f"release {tag}'s second stage to bake")
    rel = release_by_tag(cloud, app, tag) or {}
    log(
        f"release {rel.get('release')} ({tag}): stage 2 baking on {', '.join(rel.get('stage_hosts') or [])}; "
        f"checkout failures start (metric {ALARM_NAMESPACE} {ALARM_METRIC})"
    )
    flipped = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cw.put_metric_data(
            Namespace=ALARM_NAMESPACE,
            MetricData=[{"MetricName": ALARM_METRIC, "Value": 25.0, "Unit": "Count", "StorageResolution": 1}],
        )
        state, why = alarm_state(cloud, alarm)
        if state == "ALARM" and not flipped:
            flipped = True
            log(f"alarm {alarm} is ALARM (the local alarm stand-in): {why}")
        rel = release_by_tag(cloud, app, tag) or {}
        if rel.get("status") in TERMINAL:
            break
        time.sleep(1.0)
    rel = release_by_tag(cloud, app, tag) or {}
    out.release = int(rel["release"]) if rel else None
    out.status, out.reason = rel.get("status"), str(rel.get("status_reason") or "")
    out.stage_at_failure = rel.get("stage")
    out.stage_hosts = list(rel.get("stage_hosts") or [])
    out.alarm_state = alarm_state(cloud, alarm)[0]
    log(f"release {out.release} {out.status} at stage {(out.stage_at_failure or 0) + 1}: {out.reason or '-'}")
    out.last_stage_sent = bool(out.release) and sent_stage(cloud, app, int(out.release or 0), stages - 1)
    try:
        cloud.wait_for(lambda: hosts_on(cloud, app, stable_digest), 60, "every host back on stable")
        out.back_on_stable = True
    except TimeoutError:
        log(f"  hosts not all back: {cloud.host_digests(app)}")
    cloud.settle(60)
    log(
        f"  hosts that took it: {', '.join(out.stage_hosts) or 'none'}, back on the stable release: "
        f"{out.back_on_stable}; stage {stages} sent: {out.last_stage_sent}"
    )
    out.stopped = (
        out.status in {"FAILED", "ROLLED_BACK", "CANCELLED"}
        and alarm in out.reason
        and out.stage_at_failure == 1
        and not out.last_stage_sent
        and out.back_on_stable
    )
    return out
