"""`deployer diagnose APP --host I`: the agent's read-only `diagnose` mode on one host, run
through the stack's DiagnoseDocument (SSM Run Command), reported as a table or as
`{"layer": ..., "checks": [...]}`. The layer is the agent's verdict: registry, docker, app,
proxy or none."""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from deployer.adapters import aws_errors, error_code
from deployer.cli.context import DIAGNOSE_DOCUMENT_ENV, EXIT_OK, Context, UsageError
from deployer.errors import AwsCallFailed, DeployerError

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

LAYERS = frozenset({"registry", "docker", "app", "proxy", "none"})
POLL_SECONDS = 1.0
WAIT_SECONDS = 150
INSTANCE_PATTERN = r"^(i-[0-9a-f]{8,17}|mi-[0-9a-f]{17})$"
_FINAL = frozenset({"Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated"})


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The agent's diagnose report: the last stdout line that is a JSON object with a known layer."""
    for line in reversed(stdout.splitlines()):
        text = line.strip()
        if not (text.startswith("{") and text.endswith("}")):
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("layer") in LAYERS and isinstance(data.get("checks"), list):
            return data
    return None


def _instance(value: str) -> str:
    if not re.fullmatch(INSTANCE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an instance id (i-...)")
    return value


def run_diagnose(ctx: Context, app: str, host: str, document: str) -> dict[str, Any]:
    config = ctx.deps.apps.get(app)
    ssm = ctx.deps.clients.client("ssm")
    with aws_errors(f"sending the diagnose command to {host}"):
        command = ssm.send_command(
            InstanceIds=[host],
            DocumentName=document,
            Parameters={"app": [app], "healthPath": [config.container.health_path]},
            Comment=f"deployer diagnose {app}"[:100],
            TimeoutSeconds=WAIT_SECONDS,
        )
    command_id = str(command["Command"]["CommandId"])
    deadline = ctx.clock() + WAIT_SECONDS
    invocation: dict[str, Any] = {}
    while ctx.clock() < deadline:
        try:
            invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=host)
        except ClientError as exc:
            if error_code(exc) != "InvocationDoesNotExist":
                raise AwsCallFailed(
                    f"reading the diagnose result from {host} failed: {error_code(exc)}"
                ) from exc
            invocation = {}
        if invocation.get("Status") in _FINAL:
            break
        ctx.sleep(POLL_SECONDS)
    report = parse_report(str(invocation.get("StandardOutputContent", "")))
    if report is None:
        status = invocation.get("StatusDetails") or invocation.get("Status") or "no answer"
        error = " ".join(str(invocation.get("StandardErrorContent", "")).split())[-200:]
        raise DeployerError(
            f"diagnose on {host} gave no report ({status}){': ' + error if error else ''}; "
            "is the instance online in SSM and does it run the deployer agent?"
        )
    report["command_id"] = command_id
    return report


def _diagnose(ctx: Context) -> int:
    document = ctx.args.document or ctx.env.get(DIAGNOSE_DOCUMENT_ENV)
    if not document:
        raise UsageError(
            f"no diagnose document: set {DIAGNOSE_DOCUMENT_ENV} (stack output DiagnoseDocumentName) "
            "or use --document"
        )
    report = run_diagnose(ctx, ctx.args.app, ctx.args.host, document)
    if ctx.json:
        ctx.emit_json(report)
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    console = ctx.console()
    table = Table(title=f"{ctx.args.app} on {ctx.args.host}", title_justify="left")
    for column in ("check", "layer", "result", "detail"):
        table.add_column(column)
    for check in report["checks"]:
        ok = check.get("ok")
        table.add_row(
            str(check.get("name", "")),
            str(check.get("layer", "")),
            "[green]ok[/]" if ok else "[bold red]FAIL[/]",
            str(check.get("detail", "")),
        )
    console.print(table)
    containers = [c for c in report.get("containers") or [] if isinstance(c, dict)]
    if containers:
        bound = report.get("container_bound")
        listing = Table(title=f"containers of {ctx.args.app} (at most {bound}: live and standby)",
                        title_justify="left")
        for column in ("container", "role", "release", "state"):
            listing.add_column(column)
        for entry in containers:
            role = str(entry.get("role", ""))
            listing.add_row(
                str(entry.get("name", "")),
                f"[bold red]{role}[/]" if role == "leftover" else role,
                str(entry.get("release", "")),
                str(entry.get("state", "")),
            )
        console.print(listing)
    for line in report.get("log_tail") or []:
        console.print(f"  {line}", style="dim", markup=False)
    layer = report["layer"]
    console.print(
        "[green]failing layer: none[/]" if layer == "none" else f"[bold red]failing layer: {layer}[/]"
    )
    return EXIT_OK


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    diagnose = sub.add_parser("diagnose", help="read-only checks of the app on one host", parents=[common])
    diagnose.add_argument("app")
    diagnose.add_argument("--host", required=True, type=_instance, help="instance id")
    diagnose.add_argument("--document", help=f"SSM document (default: ${DIAGNOSE_DOCUMENT_ENV})")
    diagnose.set_defaults(run=_diagnose)
