"""MOTO GAP-FILLERS: the one module that fills moto 5.x's gaps, for every harness. Development
tooling only; product code (layers/, functions/) never imports it.

Two ways to apply the same patches:

- in-process, for a test: `install(monkeypatch)` applies every patch through pytest's
  monkeypatch (undone after the test) and returns the `MotoGaps` the test drives SSM outcomes
  and observes lifecycle calls through (the unit, lifecycle, IAM and fault suites, benchmarks);
- process-wide, for the local cloud's in-process moto server: `install_process_wide()` while a
  local cloud runs, `uninstall_process_wide()` when the last one stops (so other tests in the
  same process see plain moto); its state is `CLOUD`, where the fleet and SSM stand-ins
  (`localcloud.aws.fleet`, `localcloud.aws.ssm_agent`) register hosts and record results.

It lives in localcloud/, not tests/, because the local cloud needs it in the `demo` environment,
which has no pytest and no test tree to import (`tools/bootstrap.sh demo`); tests already import
from localcloud (this, `ratecontrol`, `lifecycle_actions`), never the other way round.

The gaps, each filled as AWS documents the behaviour:

1. Launch-template versions created with UserData crash later Auto Scaling launches (moto
   asserts its own wrapper type on the stored value): the stored string is wrapped.
2. `create_launch_template_version` ignores `SourceVersion`: the new version inherits the
   source's data, the given members overwrite it, and a block device's snapshot is not carried
   over unless given again. `delete_launch_template_versions` is missing: deleted versions
   disappear from DescribeLaunchTemplateVersions, the default version and unknown versions are
   refused per version (`launch_template_version_patches`).
3. `send_command(InstanceIds=[...])` also targets every instance in the region (moto resolves an
   empty Targets list as "no filter"): Targets are resolved only when given.
4. Every SSM command is `Success` at once: commands start `Pending` (as SSM reports them right
   after SendCommand); whoever plays the hosts records results and output (`MotoGaps.invocation`
   and `MotoGaps.command` for a test, `record_invocation` / `record_command` for the SSM
   stand-in), which `get_command_invocation`, `list_commands` and `list_command_invocations`
   then report as SSM does: the detail (Incomplete, Undeliverable, Delivery Timed Out,
   Terminated, ...) in `StatusDetails`, botocore's coarse enum value in `Status`
   (`localcloud.aws.ratecontrol` maps one to the other), and the count of Delivery Timed Out
   invocations in `DeliveryTimedOutCount` (moto always answers 0).
5. `send_command` accepts any parameters: like SSM, it refuses (InvalidParameters) a value that
   fails the document parameter's `allowedPattern` or `allowedValues`, an unknown parameter or a
   missing required one, and an unknown document (InvalidDocument), before any host sees the
   command. It also drops `CloudWatchOutputConfig`: kept on the command, so the SSM stand-in
   can write each invocation's output to CloudWatch Logs like the real agent.
6. `list_command_invocations` is missing: served from the same invocations (by CommandId and/or
   InstanceId, plugin output with `Details`), 50 per page with NextToken as SSM pages them.
7. `cancel_command` is missing: the invocations that have not finished end `Cancelled`
   (recorded in `MotoGaps.cancelled`). The local cloud's SSM stand-in does not stop a script
   already running.
8. `describe_instance_information` is missing: served from `MotoGaps.online` (an instance is
   "Online" once registered there).
9. moto puts launches straight into InService and has no `complete_lifecycle_action` /
   `record_lifecycle_action_heartbeat`: `localcloud.aws.lifecycle_actions` (`MotoGaps.lifecycle`)
   keeps a launch in a group with a launch hook in Pending:Wait until its action completes,
   refuses a token that was never issued, was completed or has timed out (ValidationError, as
   Auto Scaling does), applies the hook's default result on timeout and lets a test expire
   actions (`lifecycle.advance(seconds)`); accepted calls are recorded in `MotoGaps.completed` /
   `MotoGaps.heartbeats` and passed to `on_complete` / `on_heartbeat` when set.
10. moto evaluates a DynamoDB condition and then writes, with nothing in between held: two
    threads can both pass the same condition. DynamoDB applies each conditional write
    atomically, so the writes are serialized (a re-entrant lock: `transact_write_items` calls
    `update_item` inside).
11. `list_commands` ignores `Filters` and pages nothing: the filters are applied as SSM documents
    them (botocore's ssm model, CommandFilter: InvokedAfter, InvokedBefore, Status with its
    ListCommands values, ExecutionStage, DocumentName; an unknown key or malformed value is
    refused, InvalidFilterKey), 50 per page with NextToken (`command_filter`).
12. Lambda's `GetAccountSettings` is missing: answered with Lambda's default quota (1,000
    concurrent executions) less what the region's functions reserve (`deployer doctor` reads it).
    Only where the routes are read after the patch: the local cloud's server.
13. IAM holds no AWS-managed policy (moto loads them only when configured): the local cloud's
    server loads them, so the hosts' role can attach AmazonSSMManagedInstanceCore.
14. A document CloudFormation created keeps its Content as a mapping and DescribeDocument fails
    hashing it: hashed as its JSON text (`deployer doctor` reads the default version).
15. CloudWatch's GetMetricData answers nothing for a percentile statistic (`p99`, `p99.9`) and
    then fails serializing the missing value: the percentile of the period's values is
    computed as CloudWatch computes it from what PutMetricData sent (each of `Values` counted
    `Counts` times, which moto stores one by one), nearest rank; no datum, no datapoint
    (`_cloudwatch_percentile_patches`; the canary analysis reads the hosts' p99 latency).
16. `get_metric_statistics` matches every datum whose dimensions include the asked ones;
    CloudWatch treats each dimension combination as its own metric, so only data with exactly
    the asked dimensions count (an alarm on `[App]` must not also sum the `[App, Release]` data
    the hosts send next to it; `localcloud.aws.alarms` evaluates alarms with it).
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from localcloud.aws import lifecycle_actions
from localcloud.aws.ratecontrol import command_status_of, invocation_status

STDOUT_CAP_GET = 24000  # GetCommandInvocation: first 24,000 characters
STDOUT_CAP_LIST = 2500  # ListCommandInvocations plugin Output: 2,500 characters
INVOCATIONS_PAGE = 50  # ListCommandInvocations: MaxResults 1..50
UNFINISHED = frozenset({"Pending", "InProgress", "Delayed"})  # invocation Status CancelCommand stops


class Patcher(Protocol):
    """What applies a patch: pytest's MonkeyPatch, or the process-wide patcher below."""

    def setattr(self, target: Any, name: str, value: Any, raising: bool = ...) -> None: ...


class OnlineInstances(dict[str, dict[str, Any]]):
    """Instances registered with SSM: instance id -> extra describe_instance_information fields."""

    def add(self, instance_id: str, **extra: Any) -> None:
        self[instance_id] = dict(extra)


@dataclass
class MotoGaps:
    """The state the gap-fillers serve from, and the handle to drive and observe it."""

    online: OnlineInstances = field(default_factory=OnlineInstances)
    lifecycle: lifecycle_actions.LifecycleActions = field(default_factory=lifecycle_actions.LifecycleActions)
    completed: list[dict[str, Any]] = field(default_factory=list)  # accepted CompleteLifecycleAction calls
    heartbeats: list[dict[str, Any]] = field(default_factory=list)  # accepted heartbeat calls
    cancelled: list[str] = field(default_factory=list)  # command ids given to CancelCommand
    on_complete: Callable[[dict[str, Any]], None] | None = None
    on_heartbeat: Callable[[dict[str, Any]], None] | None = None

    def _completed(self, call: dict[str, Any]) -> None:
        self.completed.append(call)
        if self.on_complete is not None:
            self.on_complete(call)

    def _heartbeat(self, call: dict[str, Any]) -> None:
        self.heartbeats.append(call)
        if self.on_heartbeat is not None:
            self.on_heartbeat(call)

    def clear(self) -> None:
        self.online.clear()
        self.lifecycle.actions.clear()
        self.completed.clear()
        self.heartbeats.clear()
        self.cancelled.clear()

    # -- SSM commands, as a test drives them ----------------------------------------------------
    @staticmethod
    def commands() -> list[Any]:
        return commands()

    @staticmethod
    def find(command_id: str) -> Any:
        """moto's command `command_id` (any account and region)."""
        for command in commands():
            if command.command_id == command_id:
                return command
        raise KeyError(command_id)

    def targets(self, command_id: str) -> list[str]:
        return sorted(self.find(command_id).instance_ids)

    def invocation(
        self, command_id: str, instance_id: str, details: str, stdout: str = "", response_code: int = 0
    ) -> None:
        """One invocation ends with StatusDetails `details` (Success, Failed, Execution Timed Out,
        Delivery Timed Out, Undeliverable, Terminated, Cancelled)."""
        record_invocation(
            self.find(command_id), instance_id, status=details, response_code=response_code, stdout=stdout
        )

    def command(
        self,
        command_id: str,
        details: str,
        *,
        completed: int,
        errors: int = 0,
        delivery_timed_out: int = 0,
    ) -> str:
        """The command ends with StatusDetails `details` (Success, Failed, Incomplete, Delivery
        Timed Out, ...); returns the coarse Status SSM reports beside it (and in its event)."""
        return record_command(
            self.find(command_id),
            details,
            completed=completed,
            errors=errors,
            delivery_timed_out=delivery_timed_out,
        )


# ------------------------------------------------------------------ applying the patches
def install(monkeypatch: Patcher) -> MotoGaps:
    """Every patch, applied through `monkeypatch` (pytest's: undone after the test); returns the
    state they serve from."""
    gaps = MotoGaps()
    for owner, name, value in patches(gaps):
        monkeypatch.setattr(owner, name, value, raising=False)
    return gaps


_MISSING = object()


class _ProcessPatcher:
    """monkeypatch's setattr/undo for a process that has no pytest (the local cloud's)."""

    def __init__(self) -> None:
        self._originals: list[tuple[Any, str, Any]] = []

    def setattr(self, target: Any, name: str, value: Any, raising: bool = True) -> None:
        original = (
            target.__dict__.get(name, _MISSING)
            if isinstance(target, type)
            else getattr(target, name, _MISSING)
        )
        if raising and original is _MISSING and not hasattr(target, name):
            raise AttributeError(f"{target!r} has no attribute {name!r}")
        self._originals.append((target, name, original))
        setattr(target, name, value)

    def undo(self) -> None:
        while self._originals:
            target, name, original = self._originals.pop()
            if original is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, original)


# The local cloud's state: hosts register here (`online`), the lifecycle actions moto's groups
# issued, and the fleet stand-in's callbacks (`on_complete`, `on_heartbeat`).
CLOUD = MotoGaps()
_process_lock = threading.Lock()
_process_patcher = _ProcessPatcher()
_users = 0


def install_process_wide() -> MotoGaps:
    """Apply every patch to this process's moto (once, while any local cloud runs); returns
    `CLOUD`."""
    global _users  # noqa: PLW0603 - one process-wide count of running clouds
    with _process_lock:
        _users += 1
        if _users == 1:
            for owner, name, value in patches(CLOUD):
                _process_patcher.setattr(owner, name, value, raising=False)
            for owner, name, value in _local_cloud_patches():
                _process_patcher.setattr(owner, name, value, raising=False)
        return CLOUD


def uninstall_process_wide() -> None:
    """Undo the patches when the last local cloud stops, so moto is itself again (for other
    tests in the same process)."""
    global _users  # noqa: PLW0603 - one process-wide count of running clouds
    with _process_lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        _process_patcher.undo()
        CLOUD.clear()


def _local_cloud_patches() -> list[tuple[Any, str, Any]]:
    """Gap 13: IAM knows no AWS-managed policy unless configured; the local cloud's hosts' role
    attaches AmazonSSMManagedInstanceCore, as on AWS. (About 2 s when IAM first starts, so only
    the local cloud pays it.)"""
    from moto.iam import models as iam_models  # noqa: PLC0415

    return [(iam_models, "load_iam_aws_managed_policies", lambda: True)]


def patches(gaps: MotoGaps) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for every gap, serving from `gaps`; the caller applies
    them (and undoes them)."""
    return [
        *_document_hash_patches(),
        *_lambda_account_settings_patches(),
        *_launch_template_user_data_patches(),
        *launch_template_version_patches(),
        *_ssm_patches(gaps),
        *lifecycle_actions.patches(gaps.lifecycle, on_complete=gaps._completed, on_heartbeat=gaps._heartbeat),
        *_dynamodb_patches(),
        *_cloudwatch_percentile_patches(),
        *_cloudwatch_statistics_patches(),
    ]


# ------------------------------------------------------------------ EC2 launch templates
def _launch_template_user_data_patches() -> list[tuple[Any, str, Any]]:
    """Gap 1."""
    from moto.core.types import Base64EncodedString  # noqa: PLC0415
    from moto.ec2.models.launch_templates import LaunchTemplateVersion  # noqa: PLC0415

    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        return Base64EncodedString(value) if isinstance(value, str) else value

    return [(LaunchTemplateVersion, "user_data", property(user_data))]


def launch_template_version_patches() -> list[tuple[Any, str, Any]]:
    """Gap 2: SourceVersion and DeleteLaunchTemplateVersions."""
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


# ------------------------------------------------------------------ SSM documents
def _document_hash_patches() -> list[tuple[Any, str, Any]]:
    """Gap 14: a document created by CloudFormation keeps its Content as the template's mapping,
    and DescribeDocument fails hashing it (500): hashed as the JSON text of that mapping."""
    import hashlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    from moto.ssm.models import Document  # noqa: PLC0415

    def document_hash(self: Any) -> str:
        content = self.content if isinstance(self.content, str) else json.dumps(self.content, sort_keys=True)
        return hashlib.sha256(content.encode("utf-8")).hexdigest()

    return [(Document, "hash", property(document_hash))]


# ------------------------------------------------------------------ Lambda
ACCOUNT_CONCURRENCY = 1000  # Lambda's default concurrent executions quota per account and region
UNRESERVED_MINIMUM = 100  # what Lambda keeps unreserved


def _lambda_account_settings_patches() -> list[tuple[Any, str, Any]]:
    """Gap 12: GetAccountSettings (GET /2016-08-19/account-settings/)."""
    import json  # noqa: PLC0415

    from moto.awslambda import urls  # noqa: PLC0415
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415

    def account_settings(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], str]:
        region = re.search(r"lambda\.([a-z0-9-]+)\.amazonaws\.com", full_url)
        name = region.group(1) if region else "us-east-1"
        backends = [regions[name] for regions in lambda_backends.values() if name in regions]
        functions = [f for backend in backends for f in backend.list_functions()]
        reserved = sum(int(getattr(f, "reserved_concurrency", None) or 0) for f in functions)
        body = {
            "AccountLimit": {
                "TotalCodeSize": 80530636800,
                "CodeSizeUnzipped": 262144000,
                "CodeSizeZipped": 52428800,
                "ConcurrentExecutions": ACCOUNT_CONCURRENCY,
                "UnreservedConcurrentExecutions": ACCOUNT_CONCURRENCY - reserved,
            },
            "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": len(functions)},
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    routes = {**urls.url_paths, r"{0}/(?P<api_version>[^/]+)/account-settings/?$": account_settings}
    return [(urls, "url_paths", routes)]


# ------------------------------------------------------------------ SSM
def _ssm_patches(gaps: MotoGaps) -> list[tuple[Any, str, Any]]:
    """Gaps 3 to 8 and 11."""
    from moto.core.responses import ActionResult  # noqa: PLC0415
    from moto.ssm import models as ssm_models  # noqa: PLC0415
    from moto.ssm.responses import SimpleSystemManagerResponse as R  # noqa: PLC0415

    original_targets = ssm_models.Command._get_instance_ids_from_targets
    original_init = ssm_models.Command.__init__
    original_response = ssm_models.Command.response_object
    original_send = R.send_command

    def targets_only_when_given(self: Any) -> list[str]:
        return original_targets(self) if self.targets else []

    def pending_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.status = "Pending"
        self.status_details = "Pending"
        self.completed_count = 0
        self.target_count = len(self.instance_ids)
        self.delivery_timed_out_count = 0
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

    def response_object(self: Any) -> dict[str, Any]:
        data = original_response(self)
        data["DeliveryTimedOutCount"] = getattr(self, "delivery_timed_out_count", 0)
        return data

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
        size = int(self._get_param("MaxResults") or INVOCATIONS_PAGE)
        start = int(self._get_param("NextToken") or 0)
        if command_id:
            chosen = [self.ssm_backend.get_command_by_id(command_id)]
        else:
            chosen = list(self.ssm_backend._commands)
        found = [
            _invocation_entry(command, inv, details)
            for command in chosen
            for inv in command.invocations
            if not instance_id or inv["InstanceId"] == instance_id
        ]
        result: dict[str, Any] = {"CommandInvocations": found[start : start + size]}
        if start + size < len(found):
            result["NextToken"] = str(start + size)
        return ActionResult(result)

    def cancel_command(self: Any) -> Any:
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        gaps.cancelled.append(command.command_id)
        wanted = set(self._get_param("InstanceIds") or [])
        for inv in command.invocations:
            if inv["Status"] in UNFINISHED and (not wanted or inv["InstanceId"] in wanted):
                inv.update(Status="Cancelled", StatusDetails="Cancelled")
        return ActionResult({})

    def describe_instance_information(self: Any) -> Any:
        wanted: set[str] | None = None
        for flt in self._get_param("InstanceInformationFilterList") or []:
            if flt.get("key") == "InstanceIds":
                wanted = set(flt.get("valueSet") or [])
        for flt in self._get_param("Filters") or []:
            if flt.get("Key") == "InstanceIds":
                wanted = set(flt.get("Values") or [])
        infos = [
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
            for iid, extra in sorted(gaps.online.items())
            if wanted is None or iid in wanted
        ]
        return ActionResult({"InstanceInformationList": infos})

    def list_commands(self: Any) -> Any:
        from moto.ssm.exceptions import SSMException  # noqa: PLC0415

        command_id = self._get_param("CommandId")
        instance_id = self._get_param("InstanceId")
        size = int(self._get_param("MaxResults") or LIST_COMMANDS_PAGE)
        start = int(self._get_param("NextToken") or 0)
        try:
            keep = command_filter(self._get_param("Filters") or [])
        except ValueError as exc:
            raise SSMException("InvalidFilterKey", str(exc)) from exc
        found = [c for c in self.ssm_backend.list_commands(command_id, instance_id) if keep(c)]
        result: dict[str, Any] = {"Commands": [c.response_object() for c in found[start : start + size]]}
        if start + size < len(found):
            result["NextToken"] = str(start + size)
        return ActionResult(result)

    return [
        (ssm_models.Command, "_get_instance_ids_from_targets", targets_only_when_given),
        (R, "list_commands", list_commands),
        (ssm_models.Command, "__init__", pending_init),
        (ssm_models.Command, "response_object", response_object),
        (R, "send_command", send_command),
        (R, "list_command_invocations", list_command_invocations),
        (R, "cancel_command", cancel_command),
        (R, "describe_instance_information", describe_instance_information),
    ]


LIST_COMMANDS_PAGE = 50  # ListCommands: MaxResults 1..50
# ListCommands' Status filter values (botocore's ssm model, CommandFilter.value) and the
# StatusDetails each matches; TimedOut "includes both Delivery and Execution time outs".
_STATUS_FILTER = {
    "Pending": {"Pending"},
    "InProgress": {"InProgress", "In Progress"},
    "Success": {"Success"},
    "Cancelled": {"Cancelled"},
    "Failed": {"Failed"},
    "TimedOut": {"TimedOut", "Delivery Timed Out", "Execution Timed Out"},
    "AccessDenied": {"Access Denied"},
    "DeliveryTimedOut": {"Delivery Timed Out"},
    "ExecutionTimedOut": {"Execution Timed Out"},
    "Incomplete": {"Incomplete"},
    "NoInstancesInTag": {"No Instances In Tag"},
    "LimitExceeded": {"Rate Exceeded"},
}
_EXECUTING = frozenset({"Pending", "InProgress", "In Progress", "Delayed", "Cancelling"})


def _filter_time(key: str, value: str) -> Any:
    import datetime  # noqa: PLC0415

    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} needs a timestamp such as 2024-07-07T00:00:00Z, not {value!r}") from None
    if when.tzinfo is not None:
        when = when.astimezone(datetime.UTC).replace(tzinfo=None)  # moto keeps naive UTC times
    return when


def command_filter(filters: list[dict[str, str]]) -> Callable[[Any], bool]:
    """ListCommands' Filters as SSM documents them (botocore's ssm model, CommandFilter): every
    filter must hold. InvokedAfter keeps commands requested at or after the time, InvokedBefore
    those requested before it, Status matches the command's status (TimedOut both kinds),
    ExecutionStage is Executing or Complete, DocumentName the document's name. An unknown key
    or a malformed value raises ValueError."""
    tests: list[Callable[[Any], bool]] = []
    for entry in filters:
        key, value = entry.get("key"), entry.get("value", "")
        if key == "InvokedAfter":
            after = _filter_time(key, value)
            tests.append(lambda c, t=after: c.requested_date_time >= t)
        elif key == "InvokedBefore":
            before = _filter_time(key, value)
            tests.append(lambda c, t=before: c.requested_date_time < t)
        elif key == "DocumentName":
            tests.append(lambda c, name=value: c.document_name == name)
        elif key == "Status":
            if value not in _STATUS_FILTER:
                raise ValueError(f"Status filter value {value!r} is not one of {', '.join(_STATUS_FILTER)}")
            accepted = _STATUS_FILTER[value]
            tests.append(lambda c, ok=accepted: getattr(c, "status_details", c.status) in ok)
        elif key == "ExecutionStage":
            if value not in {"Executing", "Complete"}:
                raise ValueError(f"ExecutionStage filter value {value!r} is not Executing or Complete")
            executing = value == "Executing"
            tests.append(lambda c, e=executing: (getattr(c, "status_details", c.status) in _EXECUTING) == e)
        else:
            raise ValueError(
                f"filter key {key!r} is not one of InvokedAfter, InvokedBefore, Status, "
                "ExecutionStage, DocumentName"
            )
    return lambda command: all(test(command) for test in tests)


def document_parameters(content: dict[str, Any], given: dict[str, list[str]]) -> dict[str, str]:
    """Check `given` against a document's parameter declarations; return every value (defaults
    filled). Raises ValueError naming the first problem."""
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
    entry: dict[str, Any] = {
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


def commands() -> list[Any]:
    """Every command moto holds (all accounts and regions), oldest first per region."""
    from moto.ssm.models import ssm_backends  # noqa: PLC0415

    return [c for regions in ssm_backends.values() for b in regions.values() for c in list(b._commands)]


def new_commands(account: str, region: str, seen: set[str]) -> list[Any]:
    """Commands the product sent that the SSM stand-in has not picked up yet."""
    from moto.ssm.models import ssm_backends  # noqa: PLC0415

    return [c for c in list(ssm_backends[account][region]._commands) if c.command_id not in seen]


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
    raise KeyError(f"command {command.command_id} has no invocation on {instance_id}")


def record_command(
    command: Any, status: str, *, completed: int, errors: int, delivery_timed_out: int = 0
) -> str:
    """Write the command's StatusDetails `status` and counts; returns the coarse Status."""
    command.status = command_status_of(status)
    command.status_details = status
    command.completed_count = completed
    command.error_count = errors
    command.delivery_timed_out_count = delivery_timed_out
    return str(command.status)


# ------------------------------------------------------------------ DynamoDB
def _dynamodb_patches() -> list[tuple[Any, str, Any]]:
    """Gap 10: each write applied atomically."""
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    writes = threading.RLock()  # transact_write_items calls update_item inside
    out: list[tuple[Any, str, Any]] = []
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with writes:
                return __original(self, *args, **kwargs)

        out.append((DynamoDBBackend, name, atomic))
    return out


# ------------------------------------------------------------------ CloudWatch
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile `p` (0-100) of `values`; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[min(int(rank), len(ordered)) - 1]


def _cloudwatch_percentile_patches() -> list[tuple[Any, str, Any]]:
    """Gap 15."""
    from moto.cloudwatch import models as cw  # noqa: PLC0415

    original = cw.Statistics.get_statistics_for_type
    original_get_metric_data = cw.CloudWatchBackend.get_metric_data

    @functools.wraps(original)
    def get_statistics_for_type(self: Any, stat: str) -> Any:
        match = _PERCENTILE.match(stat)
        if match is None:
            return original(self, stat)
        return percentile(self.metric_single_values_list, float(match.group(1)))

    @functools.wraps(original_get_metric_data)
    def get_metric_data(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A period whose statistic has no value yields no datapoint, as in CloudWatch.
        results = original_get_metric_data(self, *args, **kwargs)
        for result in results:
            pairs = [
                (t, v) for t, v in zip(result["timestamps"], result["values"], strict=True) if v is not None
            ]
            result["timestamps"] = [t for t, _ in pairs]
            result["values"] = [v for _, v in pairs]
        return results

    return [
        (cw.Statistics, "get_statistics_for_type", get_statistics_for_type),
        (cw.CloudWatchBackend, "get_metric_data", get_metric_data),
    ]
def _cloudwatch_statistics_patches() -> list[tuple[Any, str, Any]]:
    """Gap 16: GetMetricStatistics counts only the data with exactly the asked dimensions (moto's
    own bucketing otherwise: periods from the first datum, empty ones left out)."""
    from datetime import timedelta  # noqa: PLC0415

    from moto.cloudwatch import models as cw  # noqa: PLC0415
    from moto.cloudwatch.exceptions import InvalidParameterValue  # noqa: PLC0415

    def get_metric_statistics(  # noqa: PLR0917 - moto's signature
        self: Any,
        namespace: str,
        metric_name: str,
        start_time: Any,
        end_time: Any,
        period: int,
        stats: list[str],
        dimensions: list[dict[str, str]],
        unit: str | None = None,
    ) -> list[Any]:
        start_time = start_time.replace(microsecond=0)
        end_time = end_time.replace(microsecond=0)
        if start_time >= end_time:
            raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
        asked = sorted((d["Name"], d.get("Value")) for d in dimensions or [])
        data = sorted(
            (
                md
                for md in self.get_all_metrics()
                if md.namespace == namespace
                and md.name == metric_name
                and start_time <= md.timestamp < end_time
                and (unit is None or md.unit == unit)
                and sorted((d.name, d.value) for d in md.dimensions) == asked
            ),
            key=lambda md: md.timestamp,
        )
        if not data:
            return []
        step = timedelta(seconds=period)
        out: list[Any] = []
        idx = 0
        for begin in cw.daterange(data[0].timestamp, data[-1].timestamp + step, step):
            bucket = cw.Statistics(stats, begin)
            while idx < len(data) and data[idx].timestamp < begin + step:
                bucket.metric_data.append(data[idx])
                bucket.unit = data[idx].unit
                idx += 1
            if bucket.metric_data:
                out.append(bucket)
        return out

    return [(cw.CloudWatchBackend, "get_metric_statistics", get_metric_statistics)]
