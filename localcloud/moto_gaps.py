"""MOTO GAP-FILLERS for the local cloud's in-process moto server. Development tooling only.

moto 5.x lacks or fakes a few APIs the product uses. Each patch below fills one gap, on the
moto classes of this process (the ThreadedMotoServer serves from them), and never changes
what the product's code does:

1. Launch-template versions created with UserData crash later Auto Scaling launches
   (moto asserts its own wrapper type): wrap the stored string.
2. `send_command(InstanceIds=[...])` also targets every instance in the region (moto resolves
   an empty Targets list as "no filter"): resolve Targets only when given.
3. Every SSM command is `Success` at once: commands start `Pending`, and the SSM stand-in
   (`localcloud.ssm_agent`) records real results and output through `record_invocation`
   and `record_command`, which `get_command_invocation`, `list_commands` and
   `list_command_invocations` then report as SSM does: the detail (Incomplete, Undeliverable,
   Delivery Timed Out, Terminated, ...) in `StatusDetails`, botocore's coarse enum value in
   `Status`, and the count of Delivery Timed Out invocations in `DeliveryTimedOutCount`
   (moto always answers 0).
4. `list_command_invocations` and `describe_instance_information` are missing: served from
   the same records; an instance is "Online" once the fleet stand-in registers it.
5. `complete_lifecycle_action` and `record_lifecycle_action_heartbeat` are missing, and moto
   puts launches straight into InService: `localcloud.lifecycle_actions` (`LIFECYCLE`) keeps a
   launch in a hooked group in Pending:Wait, refuses unknown, completed or timed-out tokens with
   ValidationError, and applies the hook's default result on timeout; accepted calls reach the
   fleet stand-in's callbacks.
6. `send_command` drops `CloudWatchOutputConfig`: kept on the command, so the SSM stand-in can
   write each invocation's output to CloudWatch Logs like the real agent.
7. `send_command` accepts any parameters: like SSM, refuse (InvalidParameters) a value that
   fails the document parameter's `allowedPattern`, an unknown parameter or a missing required
   one, and an unknown document (InvalidDocument), before any host sees the command.
8. `create_launch_template_version` ignores `SourceVersion`: the new version inherits the
   source's data, the given members overwrite it, and a block device's snapshot is not carried
   over unless given again (as EC2 documents). `delete_launch_template_versions` is missing:
   deleted versions disappear from DescribeLaunchTemplateVersions, the default version and
   unknown versions are refused per version. (`launch_template_version_patches`, which the
   test shims apply too.)
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from localcloud import lifecycle_actions

_lock = threading.Lock()

# instance id -> extra describe_instance_information fields; registered by the fleet stand-in
ONLINE: dict[str, dict[str, Any]] = {}
# (hook name, group, instance id, token, result) -> None; set by the fleet stand-in
lifecycle_callback: Callable[[dict[str, Any]], None] | None = None
heartbeat_callback: Callable[[dict[str, Any]], None] | None = None
# the launch lifecycle actions moto's groups issued (tokens, Pending:Wait, timeouts)
LIFECYCLE = lifecycle_actions.LifecycleActions()

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
        for owner, name, value in launch_template_version_patches():
            _set(owner, name, value)
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
        LIFECYCLE.actions.clear()


def _patch_launch_template_user_data() -> None:
    from moto.core.types import Base64EncodedString  # noqa: PLC0415
    from moto.ec2.models.launch_templates import LaunchTemplateVersion  # noqa: PLC0415

    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        if isinstance(value, str):
            return Base64EncodedString(value)
        return value

    _set(LaunchTemplateVersion, "user_data", property(user_data))


def launch_template_version_patches() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, value) for gap 8: SourceVersion and DeleteLaunchTemplateVersions."""
    import copy  # noqa: PLC0415

    from moto.core.responses import ActionResult  # noqa: PLC0415
    from moto.ec2.models.launch_templates import LaunchTemplateBackend  # noqa: PLC0415
    from moto.ec2.responses.launch_templates import LaunchTemplates as R  # noqa: PLC0415

    def template_of(response: Any) -> Any:
        template_id = response._get_param("LaunchTemplateId")
        backend = response.ec2_backend
        if template_id:
            return backend.get_launch_template(template_id)
        return backend.get_launch_template_by_name(response._get_param("LaunchTemplateName"))

    def create_launch_template_version(self: Any) -> ActionResult:
        template = template_of(self)
        data = self._get_param("LaunchTemplateData", {})
        source = self._get_param("SourceVersion")
        if source:
            inherited = copy.deepcopy(template.get_version(source).data)
            for mapping in inherited.get("BlockDeviceMappings") or []:
                (mapping.get("Ebs") or {}).pop("SnapshotId", None)
            data = {**inherited, **data}
        self.error_on_dryrun()
        version = template.create_version(data, self._get_param("VersionDescription"))
        return ActionResult(
            {
                "LaunchTemplateVersion": {
                    "CreateTime": version.create_time,
                    "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                    "DefaultVersion": template.is_default(version),
                    "LaunchTemplateData": version.data,
                    "LaunchTemplateId": template.id,
                    "LaunchTemplateName": template.name,
                    "VersionDescription": version.description,
                    "VersionNumber": version.number,
                }
            }
        )

    def delete_launch_template_versions(self: Any) -> ActionResult:
        template = template_of(self)
        done: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for wanted in self._get_param("Versions", []):
            entry = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
            number = int(wanted) if str(wanted).isdigit() else 0
            version = template.versions[number - 1] if 0 < number <= len(template.versions) else None
            if version is None or getattr(version, "deleted", False):
                code, message = "launchTemplateVersionDoesNotExist", "The specified version does not exist."
            elif template.is_default(version):
                code, message = "unexpectedError", "The default version cannot be deleted."
            else:
                version.deleted = True
                done.append({**entry, "VersionNumber": number})
                continue
            refused.append(
                {**entry, "VersionNumber": number, "ResponseError": {"Code": code, "Message": message}}
            )
        self.error_on_dryrun()
        return ActionResult(
            {
                "SuccessfullyDeletedLaunchTemplateVersions": done,
                "UnsuccessfullyDeletedLaunchTemplateVersions": refused,
            }
        )

    original_describe = LaunchTemplateBackend.describe_launch_template_versions

    def describe_launch_template_versions(self: Any, *args: Any, **kwargs: Any) -> Any:
        return [
            (t, v) for t, v in original_describe(self, *args, **kwargs) if not getattr(v, "deleted", False)
        ]

    return [
        (R, "create_launch_template_version", create_launch_template_version),
        (R, "delete_launch_template_versions", delete_launch_template_versions),
        (LaunchTemplateBackend, "describe_launch_template_versions", describe_launch_template_versions),
    ]


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

    original_response = ssm_models.Command.response_object

    def response_object(self: Any) -> dict[str, Any]:
        data = original_response(self)
        data["DeliveryTimedOutCount"] = getattr(self, "delivery_timed_out_count", 0)
        return data

    _set(ssm_models.Command, "_get_instance_ids_from_targets", targets_only_when_given)
    _set(ssm_models.Command, "__init__", pending_init)
    _set(ssm_models.Command, "response_object", response_object)

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
    """Write one invocation's result and output where moto's API reads it; `status` is the
    StatusDetails value (Success, Failed, Execution Timed Out, Undeliverable, ...)."""
    from localcloud.ratecontrol import invocation_status  # noqa: PLC0415

    for inv in command.invocations:
        if inv["InstanceId"] == instance_id:
            inv.update(
                Status=invocation_status(status),
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


def record_command(
    command: Any, status: str, *, completed: int, errors: int, delivery_timed_out: int = 0
) -> str:
    """Write the command's StatusDetails `status` and counts; returns the coarse Status."""
    from localcloud.ratecontrol import command_status_of  # noqa: PLC0415

    command.status = command_status_of(status)
    command.status_details = status
    command.completed_count = completed
    command.error_count = errors
    command.delivery_timed_out_count = delivery_timed_out
    return str(command.status)


def _patch_autoscaling() -> None:
    def completed(call: dict[str, Any]) -> None:
        if lifecycle_callback is not None:
            lifecycle_callback(call)

    def heartbeat(call: dict[str, Any]) -> None:
        if heartbeat_callback is not None:
            heartbeat_callback(call)

    for owner, name, value in lifecycle_actions.patches(LIFECYCLE, completed, heartbeat):
        _set(owner, name, value)
