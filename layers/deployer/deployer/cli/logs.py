"""`deployer logs APP [--host I] [--since 10m] [--follow]`: the swap commands' output and the
app's container logs, from CloudWatch Logs. `deployer logs APP --task [--release N]`: the release
task's output instead (every task command of the app since --since, or release N's).

- swap output: the stack's CommandLogGroup (COMMAND_LOG_GROUP); SSM names each stream
  `<command id>/<instance id>/<step>/stdout|stderr`. The app's commands are found by their
  comment (`deployer <app> release N`, `deployer launch|drift <app> release N`).
- task output: the same group; the task commands (TaskDocument, comment `deployer task <app>
  release N`) stream the agent's stderr, where each line of the task's output is `task| <line>`.
- container logs: `/deployer/<app>`, stream `<instance id>/<container>`, where the agent points
  Docker's awslogs driver when the app config sets `log_driver: awslogs` (host/agent.py,
  `awslogs_defaults`).
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from deployer.adapters import aws_errors, error_code
from deployer.cli.context import EXIT_OK, Context, UsageError
from deployer.errors import AwsCallFailed

if TYPE_CHECKING:
    from rich.console import Console

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

FOLLOW_POLL_SECONDS = 2.0
_SINCE = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def app_log_group(app: str) -> str:
    """Where the agent ships an app's container logs with the awslogs driver."""
    return f"/deployer/{app}"


def since_seconds(value: str) -> int:
    match = _SINCE.fullmatch(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 30s, 10m, 2h or 1d")
    return int(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True)
class LogLine:
    timestamp: int  # milliseconds since the epoch
    source: str  # "swap", "task" or "app"
    instance_id: str
    stream: str
    message: str
    event_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(self.timestamp / 1000, UTC).isoformat(),
            "source": self.source,
            "instance_id": self.instance_id,
            "stream": self.stream,
            "message": self.message,
        }


def _listed_commands(
    ctx: Context, document: str | None, ours: re.Pattern[str], since_ms: int, what: str
) -> set[str]:
    """Commands of `document` sent since `since_ms` whose comment matches `ours`."""
    ssm = ctx.deps.clients.client("ssm")
    after = datetime.fromtimestamp(since_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    found: set[str] = set()
    kwargs: dict[str, Any] = {"Filters": [{"key": "InvokedAfter", "value": after}], "MaxResults": 50}
    while True:
        with aws_errors(f"listing the {what}"):
            response = ssm.list_commands(**kwargs)
        for command in response.get("Commands", []):
            if command.get("DocumentName") == document and ours.match(command.get("Comment", "")):
                found.add(str(command["CommandId"]))
        if not response.get("NextToken"):
            return found
        kwargs["NextToken"] = response["NextToken"]


def app_command_ids(ctx: Context, app: str, since_ms: int) -> set[str]:
    """Swap commands sent for the app since `since_ms` (fleet, launch and drift swaps)."""
    ours = re.compile(rf"^deployer (?:launch |drift )?{re.escape(app)} release [0-9]+$")
    document = ctx.deps.settings.swap_document_name
    return _listed_commands(ctx, document, ours, since_ms, f"swap commands of {app}")


def task_command_ids(ctx: Context, app: str, since_ms: int, release: int | None) -> set[str]:
    """Release-task commands of the app since `since_ms` (only release `release`'s, if given)."""
    if release is not None:
        task = ctx.deps.releases.get(app, release).task_command_id
        return {task} if task else set()
    ours = re.compile(rf"^deployer task {re.escape(app)} release [0-9]+$")
    return _listed_commands(
        ctx, ctx.deps.settings.task_document_name, ours, since_ms, f"release-task commands of {app}"
    )


def collect_task(ctx: Context, host: str | None, start_ms: int, commands: set[str]) -> list[LogLine]:
    """The task commands' output lines (the agent's own log lines included, as a person reads them)."""
    lines: list[LogLine] = []
    for event in _events(ctx, ctx.deps.settings.command_log_group, start_ms, None):
        parts = str(event.get("logStreamName", "")).split("/")
        if len(parts) < 2 or parts[0] not in commands or (host and parts[1] != host):
            continue
        lines.append(_line(event, "task", parts[1]))
    return sorted(lines, key=lambda line: (line.timestamp, line.event_id))


def _events(ctx: Context, group: str, start_ms: int, prefix: str | None) -> list[dict[str, Any]]:
    """Every event of a group since `start_ms`; an absent group has none."""
    client = ctx.deps.clients.client("logs")
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
    if prefix:
        kwargs["logStreamNamePrefix"] = prefix
    events: list[dict[str, Any]] = []
    while True:
        try:
            response = client.filter_log_events(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return events
            raise AwsCallFailed(f"reading log group {group} failed: {error_code(exc)}") from exc
        events.extend(response.get("events", []))
        if not response.get("nextToken"):
            return events
        kwargs["nextToken"] = response["nextToken"]


def collect(ctx: Context, app: str, host: str | None, start_ms: int, commands: set[str]) -> list[LogLine]:
    lines: list[LogLine] = []
    for event in _events(ctx, ctx.deps.settings.command_log_group, start_ms, None):
        stream = str(event.get("logStreamName", ""))
        parts = stream.split("/")
        if len(parts) < 2 or parts[0] not in commands or (host and parts[1] != host):
            continue
        lines.append(_line(event, "swap", parts[1]))
    for event in _events(ctx, app_log_group(app), start_ms, f"{host}/" if host else None):
        stream = str(event.get("logStreamName", ""))
        lines.append(_line(event, "app", stream.split("/", 1)[0]))
    return sorted(lines, key=lambda line: (line.timestamp, line.event_id))


def _line(event: dict[str, Any], source: str, instance_id: str) -> LogLine:
    return LogLine(
        timestamp=int(event.get("timestamp", 0)),
        source=source,
        instance_id=instance_id,
        stream=str(event.get("logStreamName", "")),
        message=str(event.get("message", "")).rstrip("\n"),
        event_id=str(event.get("eventId", "")),
    )


def _logs(ctx: Context) -> int:
    args = ctx.args
    ctx.deps.apps.get(args.app)
    start_ms = int((time.time() - args.since) * 1000)
    if args.release is not None and not args.task:
        raise UsageError("--release reads a release task's output: add --task")
    if args.task and args.release is not None:
        release = ctx.deps.releases.get(args.app, args.release)
        if release.task_command_id is None:
            raise UsageError(f"{args.app} release {args.release} ran no release task")
        if release.deploy_started_at is not None:
            # The task ran when its release started, however long ago that was.
            start_ms = min(start_ms, int(release.deploy_started_at.timestamp() * 1000) - 60_000)
    seen: set[str] = set()
    console = None if ctx.json else ctx.console()
    collected: list[dict[str, Any]] = []
    try:
        _read(ctx, start_ms, seen, console, collected)
    except KeyboardInterrupt:
        return EXIT_OK  # --follow ends with Ctrl-C
    if ctx.json and not args.follow:
        ctx.emit_json(collected)
    return EXIT_OK


def _read(
    ctx: Context, start_ms: int, seen: set[str], console: Console | None, collected: list[dict[str, Any]]
) -> None:
    args = ctx.args
    while True:
        if args.task:
            tasks = task_command_ids(ctx, args.app, start_ms, args.release)
            found = collect_task(ctx, args.host, start_ms, tasks)
        else:
            found = collect(ctx, args.app, args.host, start_ms, app_command_ids(ctx, args.app, start_ms))
        fresh = [line for line in found if line.event_id not in seen]
        for line in fresh:
            seen.add(line.event_id)
            if console is not None:
                stamp = datetime.fromtimestamp(line.timestamp / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                colour = {"swap": "cyan", "task": "magenta"}.get(line.source, "green")
                console.print(f"[dim]{stamp}[/] {line.instance_id} [{colour}]{line.source}[/] ", end="")
                console.print(line.message, markup=False, highlight=False)
            elif args.follow:
                ctx.emit_json(line.as_json())
            else:
                collected.append(line.as_json())
        if not args.follow:
            return
        if fresh:
            start_ms = max(start_ms, *(line.timestamp for line in fresh))
        ctx.sleep(FOLLOW_POLL_SECONDS)


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    logs = sub.add_parser("logs", help="swap command output and app container logs", parents=[common])
    logs.add_argument("app")
    logs.add_argument("--host", help="instance id")
    logs.add_argument("--since", type=since_seconds, default=600, help="how far back, e.g. 10m (default)")
    logs.add_argument("--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    logs.add_argument("--task", action="store_true", help="the release task's output instead")
    logs.add_argument("--release", type=int, help="with --task: release N's task (however long ago)")
    logs.set_defaults(run=_logs)
