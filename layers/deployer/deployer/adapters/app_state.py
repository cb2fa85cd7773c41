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
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from deployer.adapters import aws_errors, error_code, from_attributes
from deployer.errors import AwsCallFailed, DeployInProgress, LockLost

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient


# Writers that can move the counter between a guess and the write: pushes, one per event.
_RESERVE_ATTEMPTS = 8


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

    def admit(self, app: str, digest: str) -> AppStateRecord | None:
        """Allocate the next release number for a push of `digest`, in one write that also
        answers the pause flag and lock; None (and no number used) when the digest is refused."""
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="ADD last_release :one",
                ConditionExpression="NOT contains(refused_digests, :d)",
                ExpressionAttributeValues={":one": {"N": "1"}, ":d": {"S": digest}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise AwsCallFailed(f"allocating a release number for {app} failed: {exc}") from exc
        return AppStateRecord.model_validate(from_attributes(response["Attributes"]))

    def reserve(
        self, app: str, owner_of: Callable[[int], str], lease_seconds: int, last_release_hint: int = 0
    ) -> int:
        """Take the free deploy lock and the next release number N in one write; the lock's
        owner is `owner_of(N)`. DeployInProgress (nothing written) while another owner holds it.

        The write is conditional on the counter's value, guessed from `last_release_hint`; a
        wrong guess costs one more write (the refused write returns the actual value)."""
        expected = last_release_hint
        for _ in range(_RESERVE_ATTEMPTS):
            now = int(self._clock())
            number = expected + 1
            counter = "last_release = :prev" if expected else "attribute_not_exists(last_release)"
            values: dict[str, Any] = {
                ":n": {"N": str(number)},
                ":o": {"S": owner_of(number)},
                ":e": {"N": str(now + lease_seconds)},
                ":t": {"N": str(now)},
            }
            if expected:
                values[":prev"] = {"N": str(expected)}
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=self._key(app),
                    UpdateExpression=(
                        "SET last_release = :n, lock_owner = :o, lock_expires_at = :e, lock_acquired_at = :t"
                    ),
                    ConditionExpression=(
                        f"(attribute_not_exists(lock_owner) OR lock_expires_at <= :t) AND {counter}"
                    ),
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise AwsCallFailed(f"acquiring the deploy lock of {app} failed: {exc}") from exc
                old = cast("dict[str, Any] | None", exc.response.get("Item"))
                found = AppStateRecord.model_validate(from_attributes(old) if old else {"app": app})
                if found.locked(now):
                    raise DeployInProgress(
                        f"{app} is deploying ({found.lock_owner}); wait until it ends, then run this again"
                    ) from exc
                expected = found.last_release
                continue
            return number
        raise AwsCallFailed(f"could not allocate a release number for {app}: too much contention")

    def acquire(self, app: str, owner: str, lease_seconds: int) -> bool:
        """Take the app's deploy lock; False while another owner holds an unexpired lease.

        Re-acquiring by the same owner renews the lease."""
        return self.take(app, owner, lease_seconds) is None

    def take(self, app: str, owner: str, lease_seconds: int) -> str | None:
        """`acquire` that answers who holds the lock when it is refused (None: taken)."""
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
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old = cast("dict[str, Any] | None", exc.response.get("Item"))
                return str(from_attributes(old).get("lock_owner") or "") if old else ""
            raise AwsCallFailed(f"acquiring the deploy lock of {app} failed: {exc}") from exc
        return None

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
