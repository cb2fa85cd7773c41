"""Swap commands sent to single instances outside a release's fleet command.

A new instance (launch lifecycle hook) or a drifted host gets its own swap command; the
command id is not on any release, so on-command-status finds what the command was for here:
an item in the host-outcomes table under the partition `cmd#<command id>`, one per instance,
carrying the app, the release and, for a launch, the lifecycle action to complete.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from deployer.adapters import aws_errors, error_code, from_attributes, to_attributes
from deployer.errors import AwsCallFailed
from deployer.models.records import utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

PREFIX = "cmd#"


class CommandPurpose(StrEnum):
    LAUNCH = "launch"
    DRIFT = "drift"


class TrackedCommand(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    command_id: str
    instance_id: str
    purpose: CommandPurpose
    app: str
    release: int
    group: str | None = None
    hook: str | None = None
    token: str | None = None
    attempt: int = 1
    # CONTINUE / ABANDON once the lifecycle action was completed; FOLLOWED when a further swap
    # (the pointer moved during the launch) took the action over, `next_command_id` being it.
    completed: str | None = None
    next_command_id: str | None = None


class TrackedCommands:
    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def put(self, tracked: TrackedCommand) -> None:
        item = tracked.model_dump(mode="json", exclude_none=True)
        item["release_key"] = PREFIX + item.pop("command_id")
        item["updated_at"] = utcnow().isoformat()
        with aws_errors(f"tracking command {tracked.command_id} on {tracked.instance_id}"):
            self._db.put_item(TableName=self._table, Item=to_attributes(item))

    def get(self, command_id: str, instance_id: str) -> TrackedCommand | None:
        with aws_errors(f"looking up tracked command {command_id}"):
            response = self._db.get_item(
                TableName=self._table,
                Key={"release_key": {"S": PREFIX + command_id}, "instance_id": {"S": instance_id}},
                ConsistentRead=True,
            )
        if "Item" not in response:
            return None
        data = from_attributes(response["Item"])
        data["command_id"] = str(data.pop("release_key"))[len(PREFIX) :]
        return TrackedCommand.model_validate({k: v for k, v in data.items() if k != "updated_at"})

    def mark_completed(self, tracked: TrackedCommand, result: str) -> bool:
        """Record the lifecycle result once; False when another delivery recorded it first."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key={
                    "release_key": {"S": PREFIX + tracked.command_id},
                    "instance_id": {"S": tracked.instance_id},
                },
                UpdateExpression="SET completed = :r",
                ConditionExpression="attribute_exists(release_key) AND attribute_not_exists(completed)",
                ExpressionAttributeValues={":r": {"S": result}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"recording the lifecycle result of {tracked.instance_id} failed") from exc
        return True

    def set_next(self, tracked: TrackedCommand, next_command_id: str) -> None:
        """Name the swap that took this launch's lifecycle action over (after `mark_completed`)."""
        with aws_errors(f"recording the next launch swap of {tracked.instance_id}"):
            self._db.update_item(
                TableName=self._table,
                Key={
                    "release_key": {"S": PREFIX + tracked.command_id},
                    "instance_id": {"S": tracked.instance_id},
                },
                UpdateExpression="SET next_command_id = :n",
                ExpressionAttributeValues={":n": {"S": next_command_id}},
            )
