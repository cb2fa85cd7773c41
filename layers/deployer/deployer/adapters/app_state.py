"""Per-app controller state in one item of the app-state table (key `app`).

- `last_release`: the release counter;
- `lock_owner`: the release rolling out (`<app>#<n>`, deployer.markers); absent when idle. Only
  a decision of the controller moves or removes it, so it is never taken over by a timer;
- `desired`: the release the fleet must run; while a release rolls out, that release;
- `outbox`: notices owed for recorded transitions (deployer.markers.OutboxEntry), written in the
  same transaction as the transition and removed once published;
- `realign`: pointer and group must be put back on `desired` (a start that failed for good);
- `paused`, `pause_reason`: automatic deploys suspended;
- `last_pushed_at`: the newest push time admitted; a push older than it is recorded SUPERSEDED
  (EventBridge retries can deliver an older push after a newer one);
- `refused_digests`: digests that failed and are never deployed automatically again.

Decisions write this item inside a transaction (`StateChange`, deployer.adapters.transactions),
conditioned on what the decision read (`last_release`, `lock_owner`), so two deciders cannot both
win.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from deployer.adapters import aws_errors, from_attributes

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

class AppStateRecord(BaseModel):
    app: str
    last_release: int = 0
    lock_owner: str | None = None
    desired: int | None = None
    outbox: frozenset[str] = Field(default_factory=frozenset)
    realign: bool = False
    paused: bool = False
    pause_reason: str = ""
    # The newest push time admitted (epoch seconds): a push older than it arrived late.
    last_pushed_at: int = 0
    refused_digests: frozenset[str] = Field(default_factory=frozenset)

    def locked(self) -> bool:
        """A release is rolling out."""
        return self.lock_owner is not None


@dataclass
class StateChange:
    """One conditional update of the app's state item, built by a decision.

    Conditions: `expect_last` (the counter as read: the decision allocates `expect_last + 1`),
    `expect_owner` (the lock as read: None = free), `refuse_if_refused` (a digest that must not
    be refused), `require_unpaused`."""

    app: str
    expect_owner: str | None = None
    check_owner: bool = True
    expect_last: int | None = None
    refuse_if_refused: str | None = None
    require_unpaused: bool = False
    last_release: int | None = None
    owner: str | None = None
    clear_owner: bool = False
    desired: int | None = None
    clear_desired: bool = False  # no release is desired any more (ignored when `desired` is set)
    realign: bool | None = None
    add_outbox: list[str] = field(default_factory=list)
    refuse: str | None = None
    allow: str | None = None
    last_pushed_at: int | None = None

    def applied_to(self, state: AppStateRecord) -> AppStateRecord:
        """The state as this change leaves it, once committed (spares a read after a decision)."""
        update: dict[str, Any] = {"outbox": state.outbox | set(self.add_outbox)}
        if self.last_release is not None:
            update["last_release"] = self.last_release
        if self.owner is not None:
            update["lock_owner"] = self.owner
        elif self.clear_owner:
            update["lock_owner"] = None
        if self.desired is not None:
            update["desired"] = self.desired
        elif self.clear_desired:
            update["desired"] = None
        if self.realign is not None:
            update["realign"] = self.realign
        if self.last_pushed_at is not None:
            update["last_pushed_at"] = self.last_pushed_at
        refused = set(state.refused_digests)
        if self.refuse:
            refused.add(self.refuse)
        if self.allow:
            refused.discard(self.allow)
        update["refused_digests"] = frozenset(refused)
        return state.model_copy(update=update)

    def item(self, table: str, now: int) -> dict[str, Any]:
        sets: list[str] = []
        removes: list[str] = []
        adds: list[str] = []
        deletes: list[str] = []
        conditions: list[str] = []
        values: dict[str, Any] = {}
        if self.last_release is not None:
            sets.append("last_release = :n")
            values[":n"] = {"N": str(self.last_release)}
        if self.owner is not None:
            sets += ["lock_owner = :o", "lock_acquired_at = :t"]
            values[":o"] = {"S": self.owner}
            values[":t"] = {"N": str(now)}
        elif self.clear_owner:
            removes += ["lock_owner", "lock_acquired_at"]
        if self.desired is not None:
            sets.append("desired = :d")
            values[":d"] = {"N": str(self.desired)}
        elif self.clear_desired:
            removes.append("desired")
        if self.last_pushed_at is not None:
            sets.append("last_pushed_at = :pa")
            values[":pa"] = {"N": str(self.last_pushed_at)}
        if self.realign is not None:
            sets.append("realign = :r")
            values[":r"] = {"BOOL": self.realign}
        if self.add_outbox:
            adds.append("outbox :ob")
            values[":ob"] = {"SS": sorted(set(self.add_outbox))}
        if self.refuse:
            adds.append("refused_digests :rf")
            values[":rf"] = {"SS": [self.refuse]}
        if self.allow:
            deletes.append("refused_digests :al")
            values[":al"] = {"SS": [self.allow]}
        if self.check_owner:
            if self.expect_owner is None:
                conditions.append("attribute_not_exists(lock_owner)")
            else:
                conditions.append("lock_owner = :eo")
                values[":eo"] = {"S": self.expect_owner}
        if self.expect_last is not None:
            if self.expect_last == 0:
                conditions.append("(attribute_not_exists(last_release) OR last_release = :el)")
            else:
                conditions.append("last_release = :el")
            values[":el"] = {"N": str(self.expect_last)}
        if self.refuse_if_refused:
            conditions.append("NOT contains(refused_digests, :rd)")
            values[":rd"] = {"S": self.refuse_if_refused}
        if self.require_unpaused:
            conditions.append("(attribute_not_exists(paused) OR paused = :false)")
            values[":false"] = {"BOOL": False}
        expression = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
                f"ADD {', '.join(adds)}" if adds else "",
                f"DELETE {', '.join(deletes)}" if deletes else "",
            )
            if part
        )
        update: dict[str, Any] = {
            "TableName": table,
            "Key": {"app": {"S": self.app}},
            "UpdateExpression": expression,
        }
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
        if values:
            update["ExpressionAttributeValues"] = values
        return {"Update": update}


class AppState:
    def __init__(self, dynamodb: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    @property
    def table(self) -> str:
        return self._table

    def now(self) -> int:
        return int(self._clock())

    def get(self, app: str) -> AppStateRecord:
        with aws_errors(f"reading state of {app}"):
            response = self._db.get_item(TableName=self._table, Key=self._key(app), ConsistentRead=True)
        data = from_attributes(response.get("Item", {})) or {"app": app}
        return AppStateRecord.model_validate(data)

    def change_item(self, change: StateChange) -> dict[str, Any]:
        """The transaction item for `change`."""
        return change.item(self._table, self.now())

    def outbox_done(self, app: str, entry: str) -> None:
        """A notice was published: it is no longer owed."""
        with aws_errors(f"updating the notices owed for {app}"):
            self._db.update_item(
                TableName=self._table,
                Key=self._key(app),
                UpdateExpression="DELETE outbox :e",
                ExpressionAttributeValues={":e": {"SS": [entry]}},
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

    @staticmethod
    def _key(app: str) -> dict[str, Any]:
        return {"app": {"S": app}}
