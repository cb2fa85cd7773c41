"""What SSM knows about a command after it ran: per-instance output and the command's counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from deployer.errors import AwsCallFailed

if TYPE_CHECKING:
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


class CommandResults:
    def __init__(self, ssm: SSMClient) -> None:
        self._ssm = ssm

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
        return CommandCounts(
            command_id=command_id,
            status=c.get("Status", ""),
            status_details=c.get("StatusDetails", ""),
            comment=c.get("Comment", ""),
            target_count=c.get("TargetCount", 0),
            completed_count=c.get("CompletedCount", 0),
            error_count=c.get("ErrorCount", 0),
            delivery_timed_out_count=c.get("DeliveryTimedOutCount", 0),
        )

    def comment(self, command_id: str) -> str:
        """The comment the command was sent with ("" for an unknown command)."""
        counts = self.counts(command_id)
        return counts.comment if counts else ""
