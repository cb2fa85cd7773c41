"""SSM Run Command stand-in: runs the real document's script on the targeted sandboxed hosts.

A watcher thread picks up every command the product sends to the moto server (in-process
backend, see `localcloud.moto_gaps`), then for each command:
- renders each `aws:runShellScript` step of the document from template.yaml, substituting
  `{{ name }}` textually with the command's parameters (defaults filled), as the SSM agent does;
- runs it with bash on each target host (`localcloud.hosts.hostexec`), paced by MaxConcurrency and
  MaxErrors (`localcloud.aws.ratecontrol`), killed at the step's `timeoutSeconds`;
- records each invocation's status, exit code and output for `get_command_invocation` /
  `list_command_invocations`, writes the output to CloudWatch Logs when the command asked for
  it, and emits `EC2 Command Invocation Status-change Notification` per host and
  `EC2 Command Status-change Notification` for the command, in AWS's shapes.
Targets that are not running hosts are `Undeliverable` (they do not count against MaxErrors).

Vocabulary as SSM reports it: each result is recorded as `StatusDetails` (Success, Failed,
Execution Timed Out, Undeliverable, Terminated; for the command Incomplete, ...) with the coarse
`Status` beside it, and the events carry the coarse `Status`, as AWS's documented samples do
(`localcloud.aws.ratecontrol` maps one to the other).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localcloud import moto_gaps
from localcloud.aws.eventbridge import EventBus, envelope
from localcloud.aws.ratecontrol import (
    command_status,
    command_status_of,
    invocation_status,
    max_errors,
    run_rate_controlled,
)
from localcloud.hosts.hostexec import ScriptResult, run_script

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def render(text: str, values: dict[str, str]) -> str:
    """Substitute `{{ name }}` placeholders; an unknown name is left as SSM leaves it."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def steps(content: dict[str, Any], values: dict[str, str]) -> list[tuple[str, str, int]]:
    """(name, script, timeout seconds) of each shell step of a schema 2.2 document."""
    out = []
    for step in content.get("mainSteps") or []:
        if step.get("action") != "aws:runShellScript":
            raise ValueError(f"step {step.get('name')}: only aws:runShellScript is supported locally")
        inputs = step.get("inputs") or {}
        run = inputs.get("runCommand") or []
        script = "\n".join(run) if isinstance(run, list) else str(run)
        timeout = int(render(str(inputs.get("timeoutSeconds", "3600")), values))
        out.append((str(step.get("name", "run")), render(script, values) + "\n", timeout))
    return out


def _iso(t: dt.datetime | None = None) -> str:
    return (t or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _elapsed(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


@dataclass
class HostRun:
    command_id: str
    instance_id: str
    status: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    ended_at: float = 0.0  # time.monotonic(), for latency breakdowns


@dataclass
class CommandRun:
    command_id: str
    document: str
    parameters: dict[str, str]
    status: str = "Pending"
    hosts: list[HostRun] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    picked_at: float = field(default_factory=time.monotonic)  # when the watcher saw the command


class SsmAgents:
    """The SSM agents of every host, driven from moto's command records."""

    def __init__(
        self,
        account: str,
        region: str,
        documents: dict[str, dict[str, Any]],
        host_for: Callable[[str], Any],
        *,
        host_env: Callable[[Any], dict[str, str]],
        bus: EventBus,
        logs_client: Any = None,
        poll: float = 0.05,
        host_role: Any = None,
    ) -> None:
        """`host_role` (a `permissions.RoleCheck` of the hosts' role): the agent's CloudWatch
        calls are made as the host, so a call the role does not allow is refused and the output
        never reaches CloudWatch Logs (recorded in `denied`), as with the real agent."""
        self.host_role = host_role
        self.denied: list[str] = []
        self.account = account
        self.region = region
        self.documents = documents  # document name -> content
        self.host_for = host_for  # instance id -> HostSandbox or None
        self.host_env = host_env
        self.bus = bus
        self.logs = logs_client
        self.poll = poll
        self.runs: dict[str, CommandRun] = {}
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.listeners: list[Callable[[CommandRun], None]] = []
        self._log_groups: set[str] = set()

    def start(self) -> SsmAgents:
        self._thread = threading.Thread(target=self._watch, name="ssm-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for w in list(self._workers):
            w.join(30)

    def busy(self) -> bool:
        with self._lock:
            return any(not r.done.is_set() for r in self.runs.values())

    def _watch(self) -> None:
        while not self._stop.is_set():
            for command in moto_gaps.new_commands(self.account, self.region, self._seen):
                self._seen.add(command.command_id)
                run = CommandRun(command.command_id, command.document_name, {})
                with self._lock:
                    self.runs[command.command_id] = run
                t = threading.Thread(
                    target=self._execute,
                    args=(command, run),
                    name=f"ssm-{command.command_id[:8]}",
                    daemon=True,
                )
                self._workers.append(t)
                t.start()
            self._stop.wait(self.poll)

    def wait(self, command_id: str, timeout: float = 120.0) -> CommandRun:
        deadline = time.monotonic() + timeout
        while command_id not in self.runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"command {command_id} was never picked up")
            time.sleep(0.02)
        run = self.runs[command_id]
        if not run.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"command {command_id} did not finish in {timeout}s")
        return run

    # -- one command -----------------------------------------------------------------------
    def _execute(self, command: Any, run: CommandRun) -> None:
        try:
            self._execute_inner(command, run)
        finally:
            run.done.set()
            for listener in list(self.listeners):
                listener(run)

    def _execute_inner(self, command: Any, run: CommandRun) -> None:
        content = self.documents.get(command.document_name)
        targets = list(command.instance_ids)
        try:
            if content is None:
                raise ValueError(f"document {command.document_name} is not one of the stack's")
            values = moto_gaps.document_parameters(content, command.parameters or {})
            plan = steps(content, values)
        except ValueError as exc:
            for iid in targets:
                self._finish_host(command, run, iid, ScriptResult(1, "", str(exc), 0.0), "Failed")
            self._finish_command(command, run, len(targets))
            return
        run.parameters = values
        moto_gaps.record_command(command, "In Progress", completed=0, errors=0)

        def run_one(iid: str) -> str:
            host = self.host_for(iid)
            if host is None:
                self._finish_host(
                    command, run, iid, ScriptResult(-1, "", "instance is not running", 0.0), "Undeliverable"
                )
                return "Undeliverable"
            moto_gaps.record_invocation(command, iid, status="In Progress", started=_iso())
            outs, errs, total, code, timed_out = [], [], 0.0, 0, False
            for i, (name, script, timeout) in enumerate(plan):
                res = run_script(host.root, script, self.host_env(host), timeout, name=f"{name}-{i}.sh")
                outs.append(res.stdout)
                errs.append(res.stderr)
                total += res.seconds
                code, timed_out = res.exit_code, res.timed_out
                if timed_out or code != 0:
                    break
            status = "Execution Timed Out" if timed_out else ("Success" if code == 0 else "Failed")
            self._finish_host(
                command, run, iid, ScriptResult(code, "".join(outs), "".join(errs), total, timed_out), status
            )
            return status

        run_rate_controlled(targets, run_one, command.max_concurrency, command.max_errors)
        self._finish_command(command, run, len(targets))

    def _finish_host(self, command: Any, run: CommandRun, iid: str, res: ScriptResult, status: str) -> None:
        now = _iso()
        moto_gaps.record_invocation(
            command,
            iid,
            status=status,
            response_code=res.exit_code,
            stdout=res.stdout,
            stderr=res.stderr,
            ended=now,
            elapsed=_elapsed(res.seconds),
        )
        with self._lock:
            run.hosts.append(
                HostRun(
                    command.command_id, iid, status, res.exit_code, res.stdout, res.stderr, res.seconds,
                    time.monotonic(),
                )
            )
        if status not in {"Cancelled", "Terminated", "Undeliverable"}:
            self._cloudwatch(command, iid, res)
        self.bus.put_event(
            envelope(
                "EC2 Command Invocation Status-change Notification",
                "aws.ssm",
                {
                    "command-id": command.command_id,
                    "document-name": command.document_name,
                    "instance-id": iid,
                    "requested-date-time": _iso(command.requested_date_time),
                    "status": invocation_status(status),
                },
                [f"arn:aws:ec2:{self.region}:{self.account}:instance/{iid}"],
                region=self.region,
                account=self.account,
            )
        )

    def _finish_command(self, command: Any, run: CommandRun, total: int) -> None:
        ran = {h.instance_id for h in run.hosts}
        for iid in command.instance_ids:
            if iid not in ran:  # never sent: error threshold reached first
                self._finish_host(command, run, iid, ScriptResult(-1, "", "", 0.0), "Terminated")
        statuses = [h.status for h in run.hosts]
        allowed = max_errors(command.max_errors, total)
        status = command_status(statuses, allowed) if statuses else "Success"
        errors = sum(1 for s in statuses if s in {"Failed", "Execution Timed Out"})
        moto_gaps.record_command(
            command,
            status,
            completed=len(statuses),
            errors=errors,
            delivery_timed_out=sum(1 for s in statuses if s == "Delivery Timed Out"),
        )
        run.status = status
        self.bus.put_event(
            envelope(
                "EC2 Command Status-change Notification",
                "aws.ssm",
                {
                    "command-id": command.command_id,
                    "document-name": command.document_name,
                    "expire-after": _iso(command.expires_after),
                    "parameters": command.parameters or {},
                    "requested-date-time": _iso(command.requested_date_time),
                    "status": command_status_of(status),
                },
                [f"arn:aws:ec2:{self.region}:{self.account}:instance/{i}" for i in command.instance_ids],
                region=self.region,
                account=self.account,
            )
        )

    def _as_host(self, iid: str, operation: str, params: dict[str, Any]) -> bool:
        """Whether the hosts' role allows this CloudWatch Logs call (always, without a role)."""
        if self.host_role is None:
            return True
        missing = self.host_role.missing("logs", operation, params)
        if missing:
            self.denied.append(f"host {iid} logs:{operation}: {', '.join(missing)}")
        return not missing

    def _cloudwatch(self, command: Any, iid: str, res: ScriptResult) -> None:
        cw = getattr(command, "cloudwatch_output", None) or {}
        if not self.logs or not cw.get("CloudWatchOutputEnabled"):
            return
        group = cw.get("CloudWatchLogGroupName") or f"/aws/ssm/{command.document_name}"
        # The agent's sequence (amazon-ssm-agent's CloudWatch publisher): is the group there
        # (DescribeLogGroups), else create it; find or create the stream; put the events.
        if not self._as_host(iid, "DescribeLogGroups", {"logGroupNamePrefix": group}):
            return
        if group not in self._log_groups:
            present = self.logs.describe_log_groups(logGroupNamePrefix=group).get("logGroups", [])
            if not any(g["logGroupName"] == group for g in present):
                if not self._as_host(iid, "CreateLogGroup", {"logGroupName": group}):
                    return
                with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                    self.logs.create_log_group(logGroupName=group)
            self._log_groups.add(group)
        now = int(time.time() * 1000)
        for kind, text in (("stdout", res.stdout), ("stderr", res.stderr)):
            if not text:
                continue
            stream = f"{command.command_id}/{iid}/aws-runShellScript/{kind}"
            calls = [
                ("DescribeLogStreams", {"logGroupName": group}),
                ("CreateLogStream", {"logGroupName": group, "logStreamName": stream}),
                ("PutLogEvents", {"logGroupName": group, "logStreamName": stream}),
            ]
            if not all(self._as_host(iid, op, params) for op, params in calls):
                return
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self.logs.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now, "message": text}]
            )
