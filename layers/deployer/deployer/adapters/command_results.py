"""What SSM knows about a command after it ran: per-instance output and the command's counts.

SSM reports two statuses. `Status` is coarse (botocore's CommandStatus / CommandInvocationStatus:
Pending, InProgress, Delayed, Success, Cancelled, Failed, TimedOut, Cancelling); the distinctions a
verdict needs (Incomplete, Delivery Timed Out, Undeliverable, Terminated, Execution Timed Out)
exist only in `StatusDetails`, so every decision here reads StatusDetails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from deployer.adapters import aws_errors
from deployer.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.client import AutoScalingClient
    from mypy_boto3_ssm import SSMClient


class InvocationResult(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    command_id: str
    instance_id: str
    status: str
    status_details: str = ""
    response_code: int | None = None
    stdout: str = ""


class CommandCounts(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    command_id: str
    status: str
    status_details: str = ""
    comment: str = ""
    target_count: int = 0
    completed_count: int = 0
    error_count: int = 0
    delivery_timed_out_count: int = 0
    # For a group-tag command that targeted no instance: how many instances the group has
    # (None when not looked up). 0 means there was nothing to swap; more means SSM reached none.
    group_instances: int | None = None


# Invocation StatusDetails by what they mean for the release (docs/lifecycle.md), in the words
# of SSM's API reference: Delivery Timed Out ("wasn't delivered to the managed node before the
# delivery timeout expired"; also every invocation still Pending, Delayed or In Progress when
# the command expires, e.g. an instance scaled in mid-run) and Undeliverable ("the managed node
# might not exist or might not be responding") never ran the swap; Terminated ("the parent
# command exceeded its MaxErrors limit and subsequent command invocations were canceled by the
# system") was never sent because other hosts failed. None of them says anything about the
# release on that host.
SUCCEEDED_DETAILS = frozenset({"Success"})
FAILED_DETAILS = frozenset({"Failed", "Execution Timed Out"})
CANCELLED_DETAILS = frozenset({"Cancelled"})
STOPPED_DETAILS = frozenset({"Terminated"})
UNREACHED_DETAILS = frozenset({"Delivery Timed Out", "Undeliverable"})


class InvocationTally(BaseModel):
    """A command's invocations counted by StatusDetails (ListCommandInvocations)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    stopped: int = 0
    unreached: int = 0
    unfinished: int = 0


GROUP_TAG_KEY = "tag:aws:autoscaling:groupName"


class CommandResults:
    def __init__(self, ssm: SSMClient, autoscaling: AutoScalingClient | None = None) -> None:
        self._ssm = ssm
        self._autoscaling = autoscaling

    def invocation(self, command_id: str, instance_id: str) -> InvocationResult | None:
        """The invocation's status and stdout (the agent's one summary line); None if unknown."""
        try:
            r = self._ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"InvocationDoesNotExist", "InvalidCommandId", "InvalidInstanceId"}:
                return None
            raise AwsCallFailed(f"get_command_invocation {command_id}/{instance_id} failed: {code}") from exc
        code_value = r.get("ResponseCode")
        return InvocationResult(
            command_id=command_id,
            instance_id=instance_id,
            status=r.get("Status", ""),
            status_details=r.get("StatusDetails", ""),
            response_code=code_value if isinstance(code_value, int) and code_value >= 0 else None,
            stdout=r.get("StandardOutputContent", ""),
        )

    def counts(self, command_id: str) -> CommandCounts | None:
        """The command's status and per-target counts (one call, whatever the fleet size)."""
        try:
            r = self._ssm.list_commands(CommandId=command_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidCommandId":
                return None
            raise AwsCallFailed(f"list_commands {command_id} failed: {code}") from exc
        commands = r.get("Commands", [])
        if not commands:
            return None
        c = commands[0]
        group_instances = None
        if c.get("TargetCount", 0) == 0:
            groups = [
                v for t in c.get("Targets", []) if t.get("Key") == GROUP_TAG_KEY for v in t.get("Values", [])
            ]
            group_instances = self._group_instances(groups[0]) if len(groups) == 1 else None
        return CommandCounts(
            command_id=command_id,
            status=c.get("Status", ""),
            status_details=c.get("StatusDetails", ""),
            comment=c.get("Comment", ""),
            target_count=c.get("TargetCount", 0),
            completed_count=c.get("CompletedCount", 0),
            error_count=c.get("ErrorCount", 0),
            delivery_timed_out_count=c.get("DeliveryTimedOutCount", 0),
            group_instances=group_instances,
        )

    def _group_instances(self, group: str) -> int | None:
        """How many instances the group runs (any state but terminating); None without a client."""
        if self._autoscaling is None:
            return None
        with aws_errors(f"describing group {group}"):
            answer = self._autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        return sum(
            1
            for g in answer.get("AutoScalingGroups", [])
            for i in g.get("Instances", [])
            if not str(i.get("LifecycleState", "")).startswith("Terminat")
        )

    def tally(self, command_id: str) -> InvocationTally:
        """Every invocation of the command counted by its StatusDetails (one call per 50 hosts).

        ListCommands' counts cannot tell these apart: CompletedCount also holds Undeliverable,
        Terminated and Cancelled invocations, and only Delivery Timed Out has its own count."""
        counts = dict.fromkeys(InvocationTally.model_fields, 0)
        kwargs: dict[str, Any] = {"CommandId": command_id, "MaxResults": 50}
        while True:
            try:
                r = self._ssm.list_command_invocations(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                raise AwsCallFailed(f"list_command_invocations {command_id} failed: {code}") from exc
            for invocation in r.get("CommandInvocations", []):
                counts[_kind(invocation.get("StatusDetails", ""))] += 1
            token = r.get("NextToken")
            if not token:
                return InvocationTally(**counts)
            kwargs["NextToken"] = token

    def comment(self, command_id: str) -> str:
        """The comment the command was sent with ("" for an unknown command)."""
        counts = self.counts(command_id)
        return counts.comment if counts else ""


def _kind(details: str) -> str:
    if details in SUCCEEDED_DETAILS:
        return "succeeded"
    if details in FAILED_DETAILS:
        return "failed"
    if details in CANCELLED_DETAILS:
        return "cancelled"
    if details in STOPPED_DETAILS:
        return "stopped"
    if details in UNREACHED_DETAILS:
        return "unreached"
    return "unfinished"
