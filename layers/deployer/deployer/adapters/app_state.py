"""Per-app mutable state in one item of the app-state table (key `app`).

- `last_release`: the release counter, incremented atomically (`UpdateItem ADD`);
- `lock_owner` / `lock_expires_at`: the deploy lock, a lease so a crashed invocation cannot hold
  it forever (an expired lease can be taken over);
- `paused`: automatic deploys suspended;
- `refused_digests`: digests that failed and must not be deployed automatically again.

Every write is an `UpdateItem` with conditions, never a `PutItem`, so writers never clobber
each other's attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from deployer.adapters import aws_errors, error_code, from_attributes
from deployer.errors import AwsCallFailed, LockLost

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient


class AppStateRecord(BaseModel):
    app: str
    last_release: int = 0
    lock_owner: str | None = None
    lock_expires_at: int | None = None
    paused: bool = False
    pause_reason: str = ""
    refused_digests: frozenset[str] = Field(default_factory=frozenset)

    def locked(self, now: float) -> bool:
        return self.lock_owner is not None and (self.lock_expires_at or 0) > now


class AppState:
    def __init__(self, dynamodb: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def get(self, app: str) -> AppStateRecord:
        with aws_errors(f"reading state of {app}"):
            response = self._db.get_item(TableName=self._table, Key=self._key(app), ConsistentRead=True)
        data = from_attributes(response.get("Item", {})) or {"app": app}
        return AppStateRecord.model_validate(data)

    def next_release(self, app: str) -> int:
        """The app's next release number (1, 2, ...), unique even under concurrency."""
        with aws_errors(f"allocating a release number for {app}"):
            response = self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="ADD last_release :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )
        return int(response["Attributes"]["last_release"]["N"])

    def acquire(self, app: str, owner: str, lease_seconds: int) -> bool:
        """Take the app's deploy lock; False while another owner holds an unexpired lease.

        Re-acquiring by the same owner renews the lease."""
        now = int(self._clock())
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="SET lock_owner = :o, lock_expires_at = :e, lock_acquired_at = :n",
                ConditionExpression=(
                    "attribute_not_exists(lock_owner) OR lock_expires_at <= :n OR lock_owner = :o"
                ),
                ExpressionAttributeValues={
                    ":o": {"S": owner},
                    ":e": {"N": str(now + lease_seconds)},
                    ":n": {"N": str(now)},
                },
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"acquiring the deploy lock of {app} failed: {exc}") from exc
        return True

    def renew(self, app: str, owner: str, lease_seconds: int) -> None:
        """Extend the lease; LockLost when `owner` no longer holds the lock."""
        now = int(self._clock())
        self._owner_update(
            app,
            owner,
            "SET lock_expires_at = :e",
            {":e": {"N": str(now + lease_seconds)}},
        )

    def release(self, app: str, owner: str) -> None:
        """Give the lock up; LockLost when `owner` no longer holds it."""
        self._owner_update(app, owner, "REMOVE lock_owner, lock_expires_at, lock_acquired_at", {})

    def transfer(self, app: str, owner: str, new_owner: str, lease_seconds: int) -> None:
        """Hand the lock to `new_owner` without releasing it in between (next pending deploy)."""
        now = int(self._clock())
        self._owner_update(
            app,
            owner,
            "SET lock_owner = :n, lock_expires_at = :e, lock_acquired_at = :t",
            {":n": {"S": new_owner}, ":e": {"N": str(now + lease_seconds)}, ":t": {"N": str(now)}},
        )

    def set_paused(self, app: str, paused: bool, reason: str = "") -> None:
        with aws_errors(f"setting the pause flag of {app}"):
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="SET paused = :p, pause_reason = :r",
                ExpressionAttributeValues={":p": {"BOOL": paused}, ":r": {"S": reason}},
            )

    def refuse_digest(self, app: str, digest: str) -> None:
        """Stop automatic deploys of a failed digest (until `allow_digest`)."""
        with aws_errors(f"refusing {digest} for {app}"):
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="ADD refused_digests :d",
                ExpressionAttributeValues={":d": {"SS": [digest]}},
            )

    def allow_digest(self, app: str, digest: str) -> None:
        with aws_errors(f"allowing {digest} for {app}"):
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="DELETE refused_digests :d",
                ExpressionAttributeValues={":d": {"SS": [digest]}},
            )

    def _owner_update(self, app: str, owner: str, expression: str, values: dict[str, Any]) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression=expression,
                ConditionExpression="lock_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}, **values},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LockLost(f"{owner} no longer holds the deploy lock of {app}") from exc
            raise AwsCallFailed(f"updating the deploy lock of {app} failed: {exc}") from exc

    @staticmethod
    def _key(app: str) -> dict[str, Any]:
        return {"app": {"S": app}}
