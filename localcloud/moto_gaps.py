"""MOTO GAP-FILLERS for the local cloud's in-process moto server. Development tooling only.

moto 5.x lacks or fakes a few APIs the product uses. Each patch below fills one gap, on the
moto classes of this process (the ThreadedMotoServer serves from them), and never changes
what the product's code does:

1. Launch-template versions created with UserData crash later Auto Scaling launches
   (moto asserts its own wrapper type): wrap the stored string.
2. `send_command(InstanceIds=[...])` also targets every instance in the region (moto resolves
   an empty Targets list as "no filter"): resolve Targets only when given.
3. Every SSM command is `Success` at once: commands start `Pending`, and the SSM stand-in
   (`localcloud.ssm_agent`) records real statuses and output through `record_invocation`
   and `record_command`, which `get_command_invocation`, `list_commands` and
   `list_command_invocations` then report.
4. `list_command_invocations` and `describe_instance_information` are missing: served from
   the same records; an instance is "Online" once the fleet stand-in registers it.
5. `complete_lifecycle_action` and `record_lifecycle_action_heartbeat` are missing: they
   call the fleet stand-in's callback, which records the result.
6. `send_command` drops `CloudWatchOutputConfig`: kept on the command, so the SSM stand-in can
   write each invocation's output to CloudWatch Logs like the real agent.
7. `send_command` accepts any parameters: like SSM, refuse (InvalidParameters) a value that
   fails the document parameter's `allowedPattern`, an unknown parameter or a missing required
   one, and an unknown document (InvalidDocument), before any host sees the command.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()

# instance id -> extra describe_instance_information fields; registered by the fleet stand-in
ONLINE: dict[str, dict[str, Any]] = {}
# (hook name, group, instance id, token, result) -> None; set by the fleet stand-in
lifecycle_callback: Callable[[dict[str, Any]], None] | None = None
heartbeat_callback: Callable[[dict[str, Any]], None] | None = None

STDOUT_CAP_GET = 24000  # GetCommandInvocation: first 24,000 characters
STDOUT_CAP_LIST = 2500  # ListCommandInvocations plugin Output: 2,500 characters


_MISSING = object()
_originals: list[tuple[Any, str, Any]] = []
_users = 0


def _set(obj: Any, name: str, value: Any) -> None:
    _originals.append((obj, name, obj.__dict__.get(name, _MISSING)))
    setattr(obj, name, value)


def install() -> None:
    """Apply every patch (once per process while any local cloud runs)."""
    global _users  # noqa: PLW0603 - one process-wide count of running clouds
    with _lock:
        _users += 1
        if _users > 1:
            return
        _patch_launch_template_user_data()
        _patch_ssm()
        _patch_autoscaling()


def uninstall() -> None:
    """Undo the patches when the last local cloud stops, so moto is itself again (for other
    tests in the same process)."""
    global _users  # noqa: PLW0603 - one process-wide count of running clouds
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        while _originals:
            obj, name, original = _originals.pop()
            if original is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, original)
        ONLINE.clear()


def _patch_launch_template_user_data() -> None:
    from moto.core.types import Base64EncodedString  # noqa: PLC0415
    from moto.ec2.models.launch_templates import LaunchTemplateVersion  # noqa: PLC0415

    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        if isinstance(value, str):
            return Base64EncodedString(value)
        return value

    _set(LaunchTemplateVersion, "user_data", property(user_data))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _patch_ssm() -> None:
    from moto.core.responses import ActionResult  # noqa: PLC0415
    from moto.ssm import models as ssm_models  # noqa: PLC0415
    from moto.ssm.responses import SimpleSystemManagerResponse as R  # noqa: PLC0415

    original_targets = ssm_models.Command._get_instance_ids_from_targets
    original_init = ssm_models.Command.__init__

    def targets_only_when_given(self: Any) -> list[str]:
        return original_targets(self) if self.targets else []

    def pending_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.status = "Pending"
        self.status_details = "Pending"
        self.completed_count = 0
        self.target_count = len(self.instance_ids)
        self.cloudwatch_output = None
        for inv in self.invocations:
            inv.update(
                Status="Pending",
                StatusDetails="Pending",
                ResponseCode=-1,
                ExecutionStartDateTime="",
                ExecutionEndDateTime="",
                ExecutionElapsedTime="",
                StandardOutputContent="",
                StandardErrorContent="",
            )

    _set(ssm_models.Command, "_get_instance_ids_from_targets", targets_only_when_given)
    _set(ssm_models.Command, "__init__", pending_init)

    original_send = R.send_command

    def send_command(self: Any) -> Any:
        _validate_parameters(
            self.ssm_backend, self._get_param("DocumentName"), self._get_param("Parameters", {}) or {}
        )
        result = original_send(self)
        cw = self._get_param("CloudWatchOutputConfig")
        command_id = result.result["Command"]["CommandId"] if hasattr(result, "result") else None
        if command_id and cw:
            self.ssm_backend.get_command_by_id(command_id).cloudwatch_output = cw
        return result

    def list_command_invocations(self: Any) -> Any:
        command_id = self._get_param("CommandId")
        instance_id = self._get_param("InstanceId")
        details = bool(self._get_param("Details", False))
        if command_id:
            commands = [self.ssm_backend.get_command_by_id(command_id)]
        else:
            commands = list(self.ssm_backend._commands)
        out = []
        for command in commands:
            for inv in command.invocations:
                if instance_id and inv["InstanceId"] != instance_id:
                    continue
                out.append(_invocation_entry(command, inv, details))
        return ActionResult({"CommandInvocations": out})

    def describe_instance_information(self: Any) -> Any:
        wanted: set[str] | None = None
        ids = self._get_param("InstanceInformationFilterList") or []
        for flt in ids:
            if flt.get("key") == "InstanceIds":
                wanted = set(flt.get("valueSet") or [])
        for flt in self._get_param("Filters") or []:
            if flt.get("Key") == "InstanceIds":
                wanted = set(flt.get("Values") or [])
        infos = []
        for iid, extra in sorted(ONLINE.items()):
            if wanted is not None and iid not in wanted:
                continue
            infos.append(
                {
                    "InstanceId": iid,
                    "PingStatus": "Online",
                    "PlatformType": "Linux",
                    "PlatformName": "Amazon Linux",
                    "ResourceType": "EC2Instance",
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": True,
                    **extra,
                }
            )
        return ActionResult({"InstanceInformationList": infos})

    _set(R, "send_command", send_command)
    _set(R, "list_command_invocations", list_command_invocations)
    _set(R, "describe_instance_information", describe_instance_information)


def document_parameters(content: dict[str, Any], given: dict[str, list[str]]) -> dict[str, str]:
    """Check `given` against a document's parameter declarations; return every value (defaults
    filled). Raises ValueError naming the first problem."""
    import re  # noqa: PLC0415

    declared: dict[str, Any] = content.get("parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in given:
            raw = given[name]
            if not isinstance(raw, list) or len(raw) != 1:
                raise ValueError(f"parameter {name} must be a list with one value")
            value = str(raw[0])
        elif "default" in spec:
            value = str(spec["default"])
        else:
            raise ValueError(f"missing required parameter {name}")
        pattern = spec.get("allowedPattern")
        if pattern and not re.search(pattern, value):
            raise ValueError(f"parameter {name} value {value!r} fails allowedPattern {pattern}")
        allowed = spec.get("allowedValues")
        if allowed and value not in [str(a) for a in allowed]:
            raise ValueError(f"parameter {name} value {value!r} is not one of {allowed}")
        values[name] = value
    return values


def document_content(backend: Any, name: str) -> dict[str, Any] | None:
    docs = backend._documents.get(name)
    if not docs:
        return None
    content = docs.get_default_version().content_json
    return content if isinstance(content, dict) else None


def _validate_parameters(backend: Any, name: str, given: dict[str, list[str]]) -> None:
    from moto.ssm.exceptions import SSMException  # noqa: PLC0415

    if name.startswith("AWS-"):
        return
    content = document_content(backend, name)
    if content is None:
        raise SSMException("InvalidDocument", f"document {name} does not exist")
    try:
        document_parameters(content, given)
    except ValueError as exc:
        raise SSMException("InvalidParameters", str(exc)) from exc


def _invocation_entry(command: Any, inv: dict[str, Any], details: bool) -> dict[str, Any]:
    entry = {
        "CommandId": command.command_id,
        "InstanceId": inv["InstanceId"],
        "DocumentName": command.document_name,
        "RequestedDateTime": command.requested_date_time.isoformat(),
        "Status": inv["Status"],
        "StatusDetails": inv["StatusDetails"],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
    }
    if details:
        entry["CommandPlugins"] = [
            {
                "Name": inv.get("PluginName", "aws:runShellScript"),
                "Status": inv["Status"],
                "StatusDetails": inv["StatusDetails"],
                "ResponseCode": inv.get("ResponseCode", -1),
                "Output": (inv.get("StandardOutputContent") or "")[:STDOUT_CAP_LIST],
            }
        ]
    return entry


def _backend(account: str, region: str) -> Any:
    from moto.ssm.models import ssm_backends  # noqa: PLC0415

    return ssm_backends[account][region]


def new_commands(account: str, region: str, seen: set[str]) -> list[Any]:
    """Commands the product sent that the SSM stand-in has not picked up yet."""
    return [c for c in list(_backend(account, region)._commands) if c.command_id not in seen]


def record_invocation(
    command: Any,
    instance_id: str,
    *,
    status: str,
    response_code: int = -1,
    stdout: str = "",
    stderr: str = "",
    started: str = "",
    ended: str = "",
    elapsed: str = "",
) -> None:
    """Write one invocation's real status and output where moto's API reads it."""
    for inv in command.invocations:
        if inv["InstanceId"] == instance_id:
            inv.update(
                Status=status,
                StatusDetails=status,
                ResponseCode=response_code,
                StandardOutputContent=stdout[:STDOUT_CAP_GET],
                StandardErrorContent=stderr[:STDOUT_CAP_GET],
                ExecutionStartDateTime=started or inv.get("ExecutionStartDateTime", ""),
                ExecutionEndDateTime=ended,
                ExecutionElapsedTime=elapsed,
            )
            return
    raise KeyError(f"command {command.command_id} has no invocation for {instance_id}")


def record_command(command: Any, status: str, *, completed: int, errors: int) -> None:
    command.status = status
    command.status_details = status
    command.completed_count = completed
    command.error_count = errors


def _patch_autoscaling() -> None:
    from moto.autoscaling.responses import AutoScalingResponse as R  # noqa: PLC0415
    from moto.core.responses import EmptyResult  # noqa: PLC0415

    def complete_lifecycle_action(self: Any) -> Any:
        call = {
            "LifecycleHookName": self._get_param("LifecycleHookName"),
            "AutoScalingGroupName": self._get_param("AutoScalingGroupName"),
            "LifecycleActionToken": self._get_param("LifecycleActionToken"),
            "LifecycleActionResult": self._get_param("LifecycleActionResult"),
            "InstanceId": self._get_param("InstanceId"),
        }
        if lifecycle_callback is not None:
            lifecycle_callback(call)
        return EmptyResult()

    def record_lifecycle_action_heartbeat(self: Any) -> Any:
        call = {
            "LifecycleHookName": self._get_param("LifecycleHookName"),
            "AutoScalingGroupName": self._get_param("AutoScalingGroupName"),
            "LifecycleActionToken": self._get_param("LifecycleActionToken"),
            "InstanceId": self._get_param("InstanceId"),
        }
        if heartbeat_callback is not None:
            heartbeat_callback(call)
        return EmptyResult()

    _set(R, "complete_lifecycle_action", complete_lifecycle_action)
    _set(R, "record_lifecycle_action_heartbeat", record_lifecycle_action_heartbeat)
