"""`deployer status` and `deployer history` (and the older `releases`): what the system holds,
read from the tables, the pointer, the group and its launch-template version."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from deployer.cli.context import EXIT_OK, Context
from deployer.cli.sparkline import chart
from deployer.controller.analysis import latest_per_stage
from deployer.controller.stages import stage_view
from deployer.errors import AwsCallFailed
from deployer.models.records import STAGE_BAKING, HostOutcome, Release, ReleaseStatus
from deployer.verdicts import serving

if TYPE_CHECKING:
    from deployer.wiring import Adapters

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

# How far back `status` looks for each host's last outcome.
HOST_HISTORY = 10
STATUS_STYLE = {
    "SUCCEEDED": "green",
    "DEPLOYING": "cyan",
    "PENDING": "yellow",
    "FAILED": "red",
    "ROLLED_BACK": "magenta",
    "CANCELLED": "yellow",
    "SUPERSEDED": "dim",
}


def _duration(release: Release) -> float | None:
    if release.deploy_started_at is None or release.finished_at is None:
        return None
    return round((release.finished_at - release.deploy_started_at).total_seconds(), 1)


def release_changes(before: Release | None, after: Release) -> dict[str, Any]:
    """What `after` changed against `before` (the release it replaced): the image, the names of
    variables added, changed and removed, and each secret whose pinned version changed (old ->
    new version). Never a value: only names and versions."""
    old_env = before.config.environment if before else {}
    new_env = after.config.environment
    old_secrets = {s.var: s for s in before.config.secrets} if before else {}
    new_secrets = {s.var: s for s in after.config.secrets}
    secrets = []
    for var in sorted(set(old_secrets) | set(new_secrets)):
        old, new = old_secrets.get(var), new_secrets.get(var)
        if old == new:  # same reference, same pinned version
            continue
        secrets.append(
            {
                "var": var,
                "from": None if old is None else old.version,
                "to": None if new is None else new.version,
                "reference": None if new is None else f"{new.source}:{new.id}",
            }
        )
    return {
        "against": before.release if before else None,
        "image": "first" if before is None else ("changed" if before.digest != after.digest else "same"),
        "variables": {
            "added": sorted(set(new_env) - set(old_env)),
            "changed": sorted(k for k in set(new_env) & set(old_env) if new_env[k] != old_env[k]),
            "removed": sorted(set(old_env) - set(new_env)),
        },
        "secrets": secrets,
    }


def _short(version: str | None) -> str:
    if version is None:
        return "-"
    return version if len(version) <= 8 else version[:8] + "…"


def changes_text(changes: dict[str, Any]) -> str:
    """One line: `image; +NEW ~CHANGED -GONE; API_KEY 1->2`."""
    parts = [] if changes["image"] == "same" else [f"image {changes['image']}"]
    variables = changes["variables"]
    names = [f"+{n}" for n in variables["added"]] + [f"~{n}" for n in variables["changed"]]
    names += [f"-{n}" for n in variables["removed"]]
    if names:
        parts.append(" ".join(names))
    parts += [f"{s['var']} {_short(s['from'])}->{_short(s['to'])}" for s in changes["secrets"]]
    return "; ".join(parts) or "nothing"


def _compared_with(deps: Adapters, releases: list[Release]) -> dict[int, Release | None]:
    """For each release, the one it is compared with: for a rollback the release it took the
    place of, else the release it replaced when it deployed, else the one before it."""
    by_number = {r.release: r for r in releases}
    against: dict[int, Release | None] = {}
    for release in releases:
        number = release.rollback_of or release.replaces or release.release - 1
        known = by_number.get(number)
        if known is None and number >= 1:
            known = deps.releases.get_or_none(release.app, number)
        against[release.release] = known
    return against


def history_rows(deps: Adapters, app: str, limit: int) -> list[dict[str, Any]]:
    deps.apps.get(app)  # an unknown app is an error, not an empty history
    releases = deps.releases.list_recent(app, limit=limit)
    against = _compared_with(deps, releases)
    return [
        {
            "release": r.release,
            "status": r.status.value,
            "source": r.source.value,
            "tag": r.tag,
            "digest": r.digest,
            "created_at": r.created_at.isoformat(),
            "duration_seconds": _duration(r),
            "hosts_ok": r.hosts_ok,
            "hosts_failed": r.hosts_failed,
            "reason": r.status_reason or r.reason,
            "changes": release_changes(against[r.release], r),
            "analysis": analysis_view(r),
        }
        for r in releases
    ]


def _outcome_json(outcome: HostOutcome) -> dict[str, Any]:
    return {
        "release": outcome.release,
        "status": outcome.status,
        "ok": serving(outcome),
        "failure_class": outcome.failure_class,
        "message": outcome.message,
        "updated_at": outcome.updated_at.isoformat(),
    }


def alarm_view(release: Release) -> list[dict[str, Any]] | None:
    """The app's alarm gates as the release's last check read them (docs/stages.md), by name."""
    if not release.alarm_states:
        return None
    return [{"alarm": name, **release.alarm_states[name]} for name in sorted(release.alarm_states)]


def alarms_text(alarms: list[dict[str, Any]]) -> str:
    """One line for people: `alarms: web-errors ALARM (Threshold Crossed ...), web-p99 OK`."""
    parts = []
    for alarm in alarms:
        state = str(alarm.get("state"))
        reason = f" ({alarm['reason']})" if state != "OK" and alarm.get("reason") else ""
        parts.append(f"{alarm['alarm']} {state}{reason}")
    return "alarms: " + ", ".join(parts)


def stage_text(stage: dict[str, Any]) -> str:
    """One line for people: `stage 2 of 3: baking, 40s left; hosts i-1, i-2`."""
    what = {
        "RUNNING": "sending",
        "BAKING": "baking",
        "AWAITING_APPROVAL": "[yellow]awaiting approval[/] (deployer continue)",
    }.get(stage["state"] or "", str(stage["state"]))
    if stage["bake_seconds_left"] is not None:
        what += f", {stage['bake_seconds_left']}s left"
    hosts = ", ".join(stage["hosts"]) or "none yet"
    return f"stage {stage['stage']} of {stage['stages']}: {what}; hosts {hosts}"


def _figures_text(figures: dict[str, Any]) -> str:
    rate = figures.get("error_rate")
    p99 = figures.get("p99_ms")
    return (
        f"release {figures['release']} 5xx {'n/a' if rate is None else f'{rate * 100:.1f}%'} "
        f"({figures['errors']} of {figures['requests']}), p99 {'n/a' if p99 is None else f'{p99:.0f} ms'}"
    )


def analysis_text(check: dict[str, Any]) -> str:
    """One line per check: `stage 1 analysis FAIL: canary release 8 5xx 20.0% (40 of 200), p99
    45 ms; stable release 7 5xx 0.0% (0 of 600), p99 40 ms`."""
    return (
        f"stage {int(check['stage']) + 1} analysis {str(check['verdict']).upper()}: "
        f"canary {_figures_text(check['canary'])}; stable {_figures_text(check['stable'])}"
    )


def analysis_view(release: Release) -> list[dict[str, Any]]:
    """The newest check of each stage of `release` (its record keeps the last few)."""
    return [check for _, check in sorted(latest_per_stage(release.analysis).items())]


def chart_view(deps: Adapters, release: Release) -> dict[str, Any] | None:
    """The canary's and the stable release's 5xx rate and p99 over the bake so far, about 30
    points (GetMetricData with the caller's own credentials); None when the release is not
    baking against a stable release. A read the caller may not make is said, not raised."""
    if release.stage_state != STAGE_BAKING or release.bake_started_at is None or release.replaces is None:
        return None
    end = max(deps.state.now(), release.bake_started_at + 1)
    try:
        canary, stable = deps.proxy_metrics.series(
            release.app, [release.release, release.replaces], release.bake_started_at, end
        )
    except AwsCallFailed as failed:
        return {"error": str(failed)}
    return {
        "canary": {"release": canary.release, "error_rates": canary.error_rates, "p99_ms": canary.p99_ms},
        "stable": {"release": stable.release, "error_rates": stable.error_rates, "p99_ms": stable.p99_ms},
        "lines": chart(canary, stable),
    }


def status_view(deps: Adapters, app: str) -> dict[str, Any]:
    """The app's current release, pointer vs group version, each in-service host, drift."""
    config = deps.apps.get(app)
    state = deps.state.get(app)
    pointer = deps.pointer.get(app)
    recent = deps.releases.list_recent(app, limit=HOST_HISTORY)
    by_number = {r.release: r for r in recent}
    current = by_number.get(pointer.release) if pointer else None
    if pointer is not None and current is None:
        current = deps.releases.get(app, pointer.release)
    drift: list[str] = []

    group = deps.launch_templates.current(config)
    expected_version = current.launch_template_version if current else None
    template_in_sync = expected_version is None or group.version == expected_version
    if not template_in_sync:
        drift.append(
            f"group {config.auto_scaling_group} launches version {group.version}, "
            f"release {pointer.release if pointer else '?'} is version {expected_version}"
        )

    active = (
        next((r for r in recent if r.status is ReleaseStatus.DEPLOYING), None) if state.locked() else None
    )
    staged = active if active is not None and active.stage is not None else None
    # Newest first: each host's newest serving outcome is the release it runs.
    outcomes: dict[str, list[HostOutcome]] = {}
    for release in recent:
        for outcome in deps.host_outcomes.for_release(release.key):
            outcomes.setdefault(outcome.instance_id, []).append(outcome)
    described = deps.clients.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[config.auto_scaling_group]
    )
    groups = described.get("AutoScalingGroups", [])
    instances = groups[0].get("Instances", []) if groups else []
    hosts = []
    for instance in sorted(instances, key=lambda i: str(i["InstanceId"])):
        iid = str(instance["InstanceId"])
        history = sorted(outcomes.get(iid, []), key=lambda o: o.release, reverse=True)
        running = next((o.release for o in history if serving(o)), None)
        last = max(history, key=lambda o: o.updated_at) if history else None
        state_text = "unknown" if last is None else ("serving" if serving(last) else "failed")
        in_service = instance.get("LifecycleState") == "InService"
        # A host that took a stage of the release rolling out runs it before the pointer moves.
        canary = staged is not None and running == staged.release and iid in (staged.stage_hosts or [])
        host_drift = in_service and pointer is not None and running != pointer.release and not canary
        if host_drift:
            drift.append(
                f"{iid} runs release {running or 'unknown'}, pointer is {pointer.release if pointer else '?'}"
            )
        hosts.append(
            {
                "instance_id": iid,
                "lifecycle_state": instance.get("LifecycleState"),
                "health": instance.get("HealthStatus"),
                "release": running,
                "state": state_text,
                "last_result": _outcome_json(last) if last else None,
                "drift": host_drift,
            }
        )
    deploying: dict[str, Any] | None = None
    if state.locked():
        deploying = {"owner": state.lock_owner, "release": active.release if active else None}
        if staged is not None:
            deploying["stage"] = stage_view(staged, len(config.rollout.stages), deps.state.now())
            deploying["analysis"] = analysis_view(staged)
            deploying["chart"] = chart_view(deps, staged)
            deploying["alarms"] = alarm_view(staged)
    return {
        "app": app,
        "current": (
            {
                "release": pointer.release,
                "tag": pointer.tag,
                "digest": pointer.digest,
                "since": pointer.updated_at.isoformat(),
                "source": pointer.source.value,
                "status": current.status.value if current else None,
                "changes": (
                    release_changes(_compared_with(deps, [current])[current.release], current)
                    if current
                    else None
                ),
            }
            if pointer
            else None
        ),
        "launch_template": {
            "template_id": group.template_id,
            "group_version": group.version,
            "release_version": expected_version,
            "in_sync": template_in_sync,
        },
        "paused": state.paused,
        "pause_reason": state.pause_reason or None,
        "deploying": deploying,
        "refused_digests": sorted(state.refused_digests),
        "hosts": hosts,
        "drift": drift,
    }


def _status(ctx: Context) -> int:
    view = status_view(ctx.deps, ctx.args.app)
    if ctx.json:
        ctx.emit_json(view)
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    console = ctx.console()
    current = view["current"]
    if current is None:
        console.print(f"[bold]{view['app']}[/]: never deployed")
    else:
        console.print(
            f"[bold]{view['app']}[/] release [bold]{current['release']}[/] "
            f"({current['tag'] or '-'}, {current['digest'][:19]}) "
            f"since {current['since'][:19].replace('T', ' ')} "
            f"[dim]source {current['source']}, {current['status']}[/]"
        )
        if current["changes"] is not None:
            console.print(f"changed: {changes_text(current['changes'])}")
    lt = view["launch_template"]
    mark = "[green]in sync[/]" if lt["in_sync"] else "[bold red]DRIFT[/]"
    console.print(
        f"launch template {lt['template_id']}: group on version {lt['group_version']}, "
        f"release version {lt['release_version']} {mark}"
    )
    if view["paused"]:
        console.print(f"[yellow]paused[/]: {view['pause_reason'] or ''}")
    if view["deploying"]:
        console.print(
            f"[cyan]deploying[/] release {view['deploying']['release']} ({view['deploying']['owner']})"
        )
        if view["deploying"].get("stage"):
            console.print(stage_text(view["deploying"]["stage"]))
        for check in view["deploying"].get("analysis") or []:
            console.print(analysis_text(check), markup=False)
        drawn = view["deploying"].get("chart")
        if drawn is not None:
            for line in drawn.get("lines") or [f"chart unavailable: {drawn.get('error')}"]:
                console.print(line, markup=False)
        if view["deploying"].get("alarms"):
            console.print(alarms_text(view["deploying"]["alarms"]))
    table = Table(title="hosts", title_justify="left")
    for column in ("instance", "lifecycle", "release", "state"):
        table.add_column(column, no_wrap=True)
    table.add_column("last result", ratio=1, overflow="fold")
    for host in view["hosts"]:
        last = host["last_result"]
        result = (
            "-"
            if last is None
            else (
                f"release {last['release']}: {last['status']}"
                + (f" ({last['failure_class']}) {last['message']}" if last["failure_class"] else "")
            )
        )
        release = str(host["release"] or "-")
        table.add_row(
            host["instance_id"],
            str(host["lifecycle_state"]),
            f"[bold red]{release}[/]" if host["drift"] else release,
            {"serving": "[green]serving[/]", "failed": "[red]failed[/]"}.get(host["state"], host["state"]),
            result,
        )
    console.print(table)
    if view["drift"]:
        for line in view["drift"]:
            console.print(f"[bold red]drift[/]: {line}")
    else:
        console.print("[green]no drift[/]: pointer, launch-template version and hosts agree")
    return EXIT_OK


def _history(ctx: Context) -> int:
    rows = history_rows(ctx.deps, ctx.args.app, ctx.args.limit)
    if ctx.json:
        ctx.emit_json(rows)
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{ctx.args.app} releases, newest first", title_justify="left")
    for column in ("release", "status", "source", "tag", "created", "duration", "ok", "failed"):
        table.add_column(column, no_wrap=True)
    table.add_column("changes", ratio=1, overflow="fold")
    table.add_column("reason", ratio=1, overflow="fold")
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "")
        table.add_row(
            str(row["release"]),
            f"[{style}]{row['status']}[/]" if style else row["status"],
            row["source"],
            row["tag"] or "-",
            row["created_at"][:16].replace("T", " "),
            "-" if row["duration_seconds"] is None else f"{row['duration_seconds']:.0f}s",
            "-" if row["hosts_ok"] is None else str(row["hosts_ok"]),
            "-" if row["hosts_failed"] is None else str(row["hosts_failed"]),
            changes_text(row["changes"]),
            "\n".join([row["reason"], *(analysis_text(check) for check in row["analysis"])]),
        )
    ctx.console().print(table)
    return EXIT_OK


def _releases(ctx: Context) -> int:
    """The older tab-separated listing, kept for scripts written against it."""
    if ctx.json:
        ctx.emit_json(history_rows(ctx.deps, ctx.args.name, ctx.args.limit))
        return EXIT_OK
    for r in ctx.deps.releases.list_recent(ctx.args.name, limit=ctx.args.limit):
        ctx.out.write(
            f"{r.release}\t{r.status.value}\t{r.source.value}\t{r.tag or '-'}\t{r.digest}\t"
            f"{r.created_at.isoformat()}\t{r.status_reason or r.reason}\n"
        )
    return EXIT_OK


def _positive(value: str) -> int:
    number = int(value) if value.isdigit() else 0
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 1 to 1000")
    return number


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status", help="current release, pointer vs group, hosts, drift", parents=[common]
    )
    status.add_argument("app")
    status.set_defaults(run=_status)
    history = sub.add_parser(
        "history", help="releases with status, duration, hosts, reason", parents=[common]
    )
    history.add_argument("app")
    history.add_argument("--limit", type=_positive, default=20)
    history.set_defaults(run=_history)
    releases = sub.add_parser(
        "releases", help="an app's releases, tab-separated (see history)", parents=[common]
    )
    releases.add_argument("name")
    releases.add_argument("--limit", type=_positive, default=20)
    releases.set_defaults(run=_releases)
