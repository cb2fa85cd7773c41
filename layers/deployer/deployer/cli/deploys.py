"""`deployer deploy|rollback|cancel|promote|pause|resume|wait`: the rollback function's actions,
and a live view of a release until its verdict.

The actions are the direct-invocation payloads of the rollback function
(`deployer.models.lifecycle_events`); with DEPLOYER_ROLLBACK_FUNCTION (or --function) the
function runs them, else the same core code runs here.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.cli import awaiting
from deployer.cli.context import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    FUNCTION_ENV,
    Context,
    UsageError,
)
from deployer.cli.views import alarm_view, alarms_text, analysis_text, chart_view, stage_text
from deployer.controller.stages import stage_view
from deployer.errors import DeployerError, ReleaseNotFound
from deployer.models.records import HostOutcome, Release, ReleaseSource, ReleaseStatus
from deployer.verdicts import serving

if TYPE_CHECKING:
    from rich.console import Console

    from deployer.models.config import AppConfig

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

POLL_SECONDS = 2.0
DEFAULT_TIMEOUT = 1800
# After a FAILED verdict, how long to wait for the automatic rollback to be recorded.
ROLLBACK_GRACE_SECONDS = 30
ENDED = frozenset(
    {
        ReleaseStatus.SUCCEEDED,
        ReleaseStatus.FAILED,
        ReleaseStatus.ROLLED_BACK,
        ReleaseStatus.CANCELLED,
        ReleaseStatus.SUPERSEDED,
    }
)


# --- sending the action ------------------------------------------------------------------------


def _invoke(ctx: Context, function: str, payload: dict[str, Any]) -> dict[str, Any]:
    client = ctx.deps.clients.client("lambda")
    response = client.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        message = body.get("errorMessage") if isinstance(body, dict) else body
        if isinstance(body, dict) and body.get("errorType") in {
            "AppNotFound",
            "ReleaseNotFound",
            "InvalidEvent",
        }:
            raise UsageError(f"{function}: {message}")
        raise DeployerError(f"{function}: {message}")
    return body if isinstance(body, dict) else {"result": body}


def run_action(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    function = getattr(ctx.args, "function", None) or os.environ.get(FUNCTION_ENV)
    if function:
        return _invoke(ctx, function, payload)
    from deployer.entry.events import handle_operation  # noqa: PLC0415

    return handle_operation(ctx.ld, payload)


def _payload(ctx: Context, action: str, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "app": ctx.args.app}
    payload.update({k: v for k, v in fields.items() if v is not None})
    return payload


def _reference(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _report_action(ctx: Context, result: dict[str, Any], sentence: str) -> None:
    if ctx.json and not getattr(ctx.args, "wait", False):
        ctx.emit_json(result)
    elif not ctx.json:
        ctx.console().print(sentence)


def deploy_config(ctx: Context, app: str, reason: str | None = None) -> dict[str, Any]:
    """Start a config-only release of `app` (the running image, the stored config)."""
    payload: dict[str, Any] = {"action": "deploy_config", "app": app}
    if reason:
        payload["reason"] = reason
    return run_action(ctx, payload)


def _deploy(ctx: Context) -> int:
    args = ctx.args
    if args.config_only:
        result = deploy_config(ctx, args.app, args.reason)
        _report_action(
            ctx,
            result,
            f"{args.app}: config-only release [bold]{result['release']}[/] started "
            f"(the image of release {result['image_of']})",
        )
        return follow(ctx, args.app, int(result["release"])) if args.wait else EXIT_OK
    ref: int | str = args.release if args.release is not None else (args.digest or args.tag)
    result = run_action(ctx, _payload(ctx, "promote", to=ref, reason=args.reason))
    _report_action(
        ctx,
        result,
        f"{args.app}: release [bold]{result['release']}[/] started ({result.get('tag') or result['digest']})",
    )
    return follow(ctx, args.app, int(result["release"])) if args.wait else EXIT_OK


def _promote(ctx: Context) -> int:
    result = run_action(ctx, _payload(ctx, "promote", to=ctx.args.to, reason=ctx.args.reason))
    _report_action(ctx, result, f"{ctx.args.app}: release [bold]{result['release']}[/] started")
    return EXIT_OK


def _rollback(ctx: Context) -> int:
    with_task = True if ctx.args.with_task else None
    staged = True if ctx.args.staged else None
    result = run_action(
        ctx,
        _payload(
            ctx, "rollback", to=ctx.args.to, reason=ctx.args.reason, with_task=with_task, staged=staged
        ),
    )
    _report_action(
        ctx,
        result,
        f"{ctx.args.app}: rolling back to release {result['target']} as release [bold]{result['release']}[/]",
    )
    return follow(ctx, ctx.args.app, int(result["release"])) if ctx.args.wait else EXIT_OK


def _cancel(ctx: Context) -> int:
    result = run_action(ctx, _payload(ctx, "cancel", reason=ctx.args.reason))
    back = (
        f"; rolling back to release {result['target']} as release {result['rollback_release']}"
        if result.get("rollback_release")
        else "; no earlier release to roll back to"
    )
    _report_action(ctx, result, f"{ctx.args.app}: release {result['release']} [yellow]CANCELLED[/]{back}")
    if ctx.args.wait and result.get("rollback_release"):
        code = follow(ctx, ctx.args.app, int(result["rollback_release"]))
        return EXIT_CANCELLED if code == EXIT_OK else code
    return EXIT_CANCELLED if ctx.args.wait else EXIT_OK


def _continue(ctx: Context) -> int:
    result = run_action(ctx, _payload(ctx, "continue"))
    _report_action(
        ctx,
        result,
        f"{ctx.args.app}: release {result['release']} approved; stage {result['stage'] + 1} "
        f"of {result['stages']} starting",
    )
    return follow(ctx, ctx.args.app, int(result["release"])) if ctx.args.wait else EXIT_OK


def _pause(ctx: Context) -> int:
    result = run_action(ctx, _payload(ctx, "pause", reason=ctx.args.reason))
    _report_action(ctx, result, f"{ctx.args.app}: automatic deploys [yellow]paused[/]")
    return EXIT_OK


def _resume(ctx: Context) -> int:
    result = run_action(ctx, _payload(ctx, "resume"))
    started = f"; release {result['release']} started" if result.get("release") else ""
    _report_action(ctx, result, f"{ctx.args.app}: automatic deploys resumed{started}")
    return EXIT_OK


def _wait(ctx: Context) -> int:
    deps = ctx.deps
    args = ctx.args
    app = args.app
    if args.tag is not None and args.digest is None:
        raise UsageError("--tag needs --digest: wait for the push of that digest under that tag")
    config = deps.apps.get(app)
    deadline = ctx.clock() + args.timeout
    if args.release is not None:
        return follow(ctx, app, args.release, deadline)
    if args.digest is not None:
        tags = awaiting.deployable_tags(ctx, config, args.digest, args.tag)
        return _follow_push(ctx, config, args.digest, tags, deadline)
    # A push whose event is still on its way must not let the wait end on the release before it.
    in_flight = awaiting.push_in_flight(ctx, config)
    if in_flight is not None:
        digest, tags = in_flight
        return _follow_push(ctx, config, digest, tags, deadline)
    recent = deps.releases.list_recent(app, limit=10)
    active = next((r for r in recent if r.status in {ReleaseStatus.DEPLOYING, ReleaseStatus.PENDING}), None)
    chosen = active or (recent[0] if recent else None)
    if chosen is None:
        raise ReleaseNotFound(f"{app} has no release to wait for")
    return follow(ctx, app, chosen.release, deadline)


def _follow_push(ctx: Context, config: AppConfig, digest: str, tags: tuple[str, ...], deadline: float) -> int:
    awaited = awaiting.await_push(ctx, config, digest, tags, deadline)
    if awaited.release is not None:
        return follow(ctx, config.app, awaited.release, deadline)
    verdict = f"no release was admitted for {digest} when the wait timed out"
    if ctx.json:
        ctx.emit_json(
            {
                "app": config.app,
                "digest": digest,
                "tags": list(tags),
                "release": None,
                "status": None,
                "verdict": verdict,
                "exit_code": EXIT_FAILED,
            }
        )
    else:
        ctx.console().print(f"[bold red]{verdict}[/]: is the push event reaching the deployer?")
    return EXIT_FAILED


# --- following a release -----------------------------------------------------------------------


@dataclass
class Followed:
    """What the live view has shown of one release."""

    release: Release
    hosts: dict[str, HostOutcome] = field(default_factory=dict)


def _host_json(outcome: HostOutcome) -> dict[str, Any]:
    summary = outcome.summary or {}
    return {
        "instance_id": outcome.instance_id,
        "ok": serving(outcome),
        "status": outcome.status,
        "failure_class": outcome.failure_class,
        "message": outcome.message,
        "log_tail": list(summary.get("log_tail") or []),
        "seconds": (summary.get("timings") or {}).get("total"),
    }


def _targets(ctx: Context, release: Release) -> int | None:
    if not release.command_id:
        return None
    counts = ctx.ld.results.counts(release.command_id)
    return counts.target_count if counts and counts.target_count else None


def _show_host(console: Console | None, outcome: HostOutcome) -> None:
    if console is None:
        return
    if serving(outcome):
        seconds = ((outcome.summary or {}).get("timings") or {}).get("total")
        took = f" in {seconds:.1f}s" if isinstance(seconds, int | float) else ""
        console.print(f"  [green]✓[/] {outcome.instance_id} live on release {outcome.release}{took}")
        return
    console.print(
        f"  [red]✗[/] {outcome.instance_id} [bold red]{outcome.failure_class or 'failed'}[/]: "
        f"{outcome.message}"
    )
    for line in (outcome.summary or {}).get("log_tail") or []:
        console.print(f"      {line}", style="dim", markup=False)


def _track(ctx: Context, app: str, number: int, console: Console | None, deadline: float) -> Followed:
    """Poll one release until it ends (or the deadline), showing each host as it reports."""
    deps = ctx.deps
    followed = Followed(release=deps.releases.get(app, number))
    progress = None
    task = None
    if console is not None and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

        progress = Progress(
            TextColumn("release {task.fields[number]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
        )
        progress.start()
        task = progress.add_task("swap", total=None, number=number, status=followed.release.status.value)
    stages = len(deps.apps.get(app).rollout.stages)
    shown: tuple[int | None, str | None] = (None, None)
    checked: dict[str, Any] | None = None
    shown_alarms: list[dict[str, Any]] | None = None
    try:
        while True:
            release = deps.releases.get(app, number)
            followed.release = release
            out = progress.console if progress else console
            if (
                release.stage is not None
                and (release.stage, release.stage_state) != shown
                and out is not None
            ):
                # Each stage step once: stage n of m, sending / baking (time left) / awaiting approval.
                shown = (release.stage, release.stage_state)
                out.print(stage_text(stage_view(release, stages, deps.state.now())))
            if release.analysis and release.analysis[-1] != checked and out is not None:
                # Each new check of the canary analysis once, with the chart of the bake so far.
                checked = release.analysis[-1]
                out.print(analysis_text(checked), markup=False)
                drawn = chart_view(deps, release)
                for line in (drawn or {}).get("lines") or []:
                    out.print(line, markup=False)
            alarms = alarm_view(release)
            if alarms is not None and alarms != shown_alarms and out is not None:
                # Each change of the alarm gates' states once.
                shown_alarms = alarms
                out.print(alarms_text(alarms))
            for outcome in deps.host_outcomes.for_release(release.key):
                known = followed.hosts.get(outcome.instance_id)
                if known is None or known.updated_at != outcome.updated_at:
                    followed.hosts[outcome.instance_id] = outcome
                    _show_host(progress.console if progress else console, outcome)
            if progress is not None and task is not None:
                progress.update(
                    task,
                    total=_targets(ctx, release),
                    completed=len(followed.hosts),
                    status=release.status.value,
                )
            if release.status in ENDED or ctx.clock() >= deadline:
                return followed
            ctx.sleep(POLL_SECONDS)
    finally:
        if progress is not None:
            progress.stop()


def _rollback_of(ctx: Context, failed: Release) -> Release | None:
    """The rollback release started for a failed (or cancelled) release: the first rollback
    release after it (the lock hands over from one to the other, so none starts in between)."""
    later = [
        r
        for r in ctx.deps.releases.list_recent(failed.app, limit=20)
        if r.release > failed.release and r.source is ReleaseSource.ROLLBACK
    ]
    return min(later, key=lambda r: r.release) if later else None


def follow(ctx: Context, app: str, number: int, deadline: float | None = None) -> int:
    """The live view of one release until its verdict (or `deadline`, by default --timeout from
    now); returns the exit code."""
    console = None if ctx.json else ctx.console()
    if deadline is None:
        deadline = ctx.clock() + getattr(ctx.args, "timeout", DEFAULT_TIMEOUT)
    if console is not None:
        console.print(f"following {app} release [bold]{number}[/]")
    followed = _track(ctx, app, number, console, deadline)
    release = followed.release
    config = ctx.deps.apps.get(app)
    if (
        release.status is ReleaseStatus.FAILED
        and config.auto_rollback
        and release.source is not ReleaseSource.ROLLBACK
    ):
        # The automatic rollback is recorded by the same invocation that decided the failure.
        grace = min(deadline, ctx.clock() + ROLLBACK_GRACE_SECONDS)
        while release.status is ReleaseStatus.FAILED and ctx.clock() < grace:
            ctx.sleep(POLL_SECONDS)
            release = ctx.deps.releases.get(app, number)
    rollback: Followed | None = None
    if release.status in {ReleaseStatus.ROLLED_BACK, ReleaseStatus.CANCELLED}:
        back = _rollback_of(ctx, release)
        if back is not None:
            if console is not None:
                console.print(f"rolling back as release [bold]{back.release}[/] ({back.reason})")
            rollback = _track(ctx, app, back.release, console, deadline)
    verdict, code = _verdict(release, rollback, ctx.clock() >= deadline)
    failures = [h for h in followed.hosts.values() if not serving(h)]
    classes = sorted({h.failure_class for h in failures if h.failure_class})
    result = {
        "app": app,
        "release": release.release,
        "status": release.status.value,
        "reason": release.status_reason,
        "verdict": verdict,
        "exit_code": code,
        "hosts": [_host_json(h) for h in sorted(followed.hosts.values(), key=lambda h: h.instance_id)],
        "failure_classes": classes,
        "stage": None
        if release.stage is None
        else stage_view(release, len(config.rollout.stages), ctx.deps.state.now()),
        "alarms": alarm_view(release),
        "rollback": None
        if rollback is None
        else {
            "release": rollback.release.release,
            "status": rollback.release.status.value,
            "reason": rollback.release.status_reason,
        },
    }
    if console is None:
        ctx.emit_json(result)
    else:
        style = {EXIT_OK: "bold green", EXIT_CANCELLED: "bold yellow"}.get(code, "bold red")
        named = f" ({', '.join(classes)})" if classes else ""
        console.print(f"[{style}]{verdict}[/]{named}: {release.status_reason}")
    return code


def _verdict(release: Release, rollback: Followed | None, timed_out: bool) -> tuple[str, int]:
    status = release.status
    if status is ReleaseStatus.SUCCEEDED:
        return "succeeded", EXIT_OK
    if status is ReleaseStatus.CANCELLED:
        return "cancelled", EXIT_CANCELLED
    if status is ReleaseStatus.ROLLED_BACK:
        if rollback is not None and rollback.release.status is not ReleaseStatus.SUCCEEDED:
            return f"failed; the rollback ended {rollback.release.status.value}", EXIT_FAILED
        return "failed and rolled back", EXIT_ROLLED_BACK
    if status is ReleaseStatus.SUPERSEDED:
        return "superseded by a newer release before it started", EXIT_FAILED
    if timed_out and status in {ReleaseStatus.DEPLOYING, ReleaseStatus.PENDING}:
        return f"still {status.value} when the wait timed out", EXIT_FAILED
    return "failed", EXIT_FAILED


# --- parsers -----------------------------------------------------------------------------------


def _function_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--function", help=f"rollback function to invoke (default: ${FUNCTION_ENV}, else run here)"
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow the release live until its verdict")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds --wait waits")


def _release_number(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a release number")
    return int(value)


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    deploy = sub.add_parser("deploy", help="deploy a tag, digest or earlier release", parents=[common])
    deploy.add_argument("app")
    what = deploy.add_mutually_exclusive_group(required=True)
    what.add_argument("--tag")
    what.add_argument("--digest")
    what.add_argument("--release", type=_release_number)
    what.add_argument(
        "--config-only",
        action="store_true",
        help="the running image again, with the stored environment and each secret's current version",
    )
    deploy.add_argument("--reason")
    _wait_options(deploy)
    _function_option(deploy)
    deploy.set_defaults(run=_deploy)

    rollback = sub.add_parser(
        "rollback", help="roll back (default: to the previous SUCCEEDED release)", parents=[common]
    )
    rollback.add_argument("app")
    rollback.add_argument("--to", type=_reference, help="release number, tag or sha256 digest")
    rollback.add_argument("--reason")
    rollback.add_argument(
        "--with-task",
        action="store_true",
        help="run the app's release task for this rollback too (skipped by default)",
    )
    rollback.add_argument(
        "--staged",
        action="store_true",
        help="go through the app's rollout stages, bakes and gates like a deploy (skipped by default)",
    )
    _wait_options(rollback)
    _function_option(rollback)
    rollback.set_defaults(run=_rollback)

    cancel = sub.add_parser(
        "cancel", help="stop the deploy in progress; swapped hosts go back", parents=[common]
    )
    cancel.add_argument("app")
    cancel.add_argument("--reason")
    _wait_options(cancel)
    _function_option(cancel)
    cancel.set_defaults(run=_cancel)

    wait = sub.add_parser("wait", help="follow a deploy (e.g. one a push started) live", parents=[common])
    wait.add_argument("app")
    which = wait.add_mutually_exclusive_group()
    which.add_argument(
        "--release",
        type=_release_number,
        help="default: a push not yet admitted, else the deploy in progress, else the newest",
    )
    which.add_argument(
        "--digest",
        type=awaiting.digest_argument,
        help="wait for the release a push of this digest is admitted as (CI: the digest it pushed)",
    )
    wait.add_argument("--tag", type=awaiting.tag_argument, help="with --digest: the tag it was pushed as")
    wait.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds to wait, admission included"
    )
    wait.set_defaults(run=_wait)

    promote = sub.add_parser("promote", help="deploy a tag, digest or release (see deploy)", parents=[common])
    promote.add_argument("app")
    promote.add_argument("--to", type=_reference, required=True, help="tag, sha256 digest or release number")
    promote.add_argument("--reason")
    _function_option(promote)
    promote.set_defaults(run=_promote)

    pause = sub.add_parser("pause", help="stop automatic deploys (pushes wait as PENDING)", parents=[common])
    pause.add_argument("app")
    pause.add_argument("--reason")
    _function_option(pause)
    pause.set_defaults(run=_pause)

    proceed = sub.add_parser(
        "continue",
        help="approve a staged deploy waiting after a stage: its next stage starts",
        parents=[common],
    )
    proceed.add_argument("app")
    _wait_options(proceed)
    _function_option(proceed)
    proceed.set_defaults(run=_continue)

    resume = sub.add_parser(
        "resume", help="resume automatic deploys; the newest pending starts", parents=[common]
    )
    resume.add_argument("app")
    _function_option(resume)
    resume.set_defaults(run=_resume)
