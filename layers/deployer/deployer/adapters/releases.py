"""Release history in the releases table (key `app` + `release`; GSIs `command-index` and the
sparse `pending-index`, keyed by `pending_app`, which a release carries only while PENDING)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, cast

from botocore.exceptions import ClientError
from pydantic import TypeAdapter

from deployer.adapters import aws_errors, error_code, from_attributes, to_attributes, to_value
from deployer.errors import AwsCallFailed, ReleaseNotFound
from deployer.models.records import (
    ALLOWED_TRANSITIONS,
    PENDING_KEY,
    STAGE_BAKING,
    Release,
    ReleaseStatus,
    utcnow,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

COMMAND_INDEX = "command-index"
PENDING_INDEX = "pending-index"
FINAL_STATUSES = frozenset(
    {
        ReleaseStatus.SUCCEEDED,
        ReleaseStatus.FAILED,
        ReleaseStatus.ROLLED_BACK,
        ReleaseStatus.SUPERSEDED,
        ReleaseStatus.CANCELLED,
    }
)
# Fields that identify a release and never change after creation.
_IMMUTABLE = frozenset({"app", "release", "repository", "image", "digest", "tag", "pushed_at", "created_at"})


class ReleasesStore:
    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def create(self, release: Release) -> Release:
        """Store a new release; a release number is never overwritten."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item=to_attributes(release.to_item()),
                ConditionExpression="attribute_not_exists(#r)",
                ExpressionAttributeNames={"#r": "release"},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise AwsCallFailed(f"release {release.key} already exists") from exc
            raise AwsCallFailed(f"recording release {release.key} failed: {exc}") from exc
        return release

    def get(self, app: str, release: int) -> Release:
        with aws_errors(f"reading release {app}#{release}"):
            response = self._db.get_item(
                TableName=self._table,
                Key={"app": {"S": app}, "release": {"N": str(release)}},
                ConsistentRead=True,
            )
        if "Item" not in response:
            raise ReleaseNotFound(f"{app} has no release {release}")
        return Release.model_validate(from_attributes(response["Item"]))

    def by_command_id(self, command_id: str) -> Release | None:
        """The release whose swap command has this id, or None (not one of ours).

        The index projects every attribute, so the answer is the release itself. It is
        eventually consistent: callers that change the release do so with conditional writes,
        which see the table's current state."""
        with aws_errors(f"looking up command {command_id}"):
            response = self._db.query(
                TableName=self._table,
                IndexName=COMMAND_INDEX,
                KeyConditionExpression="command_id = :c",
                ExpressionAttributeValues={":c": {"S": command_id}},
            )
        items = response.get("Items", [])
        if not items:
            return None
        return Release.model_validate(from_attributes(items[0]))

    def set_fields(self, app: str, release: int, **fields: Any) -> Release:
        """Set attributes (command id, launch-template version, host counts...) on a release."""
        try:
            return self._update(app, release, {**fields, "updated_at": utcnow()}, allowed_statuses=None)
        except _ConditionFailed as failed:
            raise ReleaseNotFound(f"{app} has no release {release}") from failed

    def list_recent(self, app: str, limit: int = 20) -> list[Release]:
        """Newest first."""
        releases: list[Release] = []
        for release in self._iterate(app, newest_first=True, page=max(limit, 1)):
            releases.append(release)
            if len(releases) >= limit:
                break
        return releases

    def pending(self, app: str) -> list[Release]:
        """PENDING releases, oldest first: one Query of the sparse index, which holds only them.

        The index is eventually consistent. Callers move what they find with conditional
        writes, so a release that left PENDING a moment ago costs a refused write, and one
        recorded a moment ago is found by the next push or completion."""
        releases: list[Release] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": PENDING_INDEX,
            "KeyConditionExpression": "#p = :a",
            "ExpressionAttributeNames": {"#p": PENDING_KEY},
            "ExpressionAttributeValues": {":a": {"S": app}},
            "ScanIndexForward": True,
        }
        while True:
            with aws_errors(f"listing pending releases of {app}"):
                response = self._db.query(**kwargs)
            releases.extend(Release.model_validate(from_attributes(i)) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return [r for r in releases if r.status is ReleaseStatus.PENDING]
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def succeeded_before(self, app: str, release: int) -> Iterator[Release]:
        """SUCCEEDED releases older than `release`, newest first, read page by page as consumed."""
        for found in self._iterate(app, newest_first=True, status=ReleaseStatus.SUCCEEDED):
            if found.release < release:
                yield found

    def latest_succeeded(self, app: str, before: int | None = None) -> Release | None:
        """The newest SUCCEEDED release (older than `before` when given)."""
        return self.find(app, lambda r: before is None or r.release < before, status=ReleaseStatus.SUCCEEDED)

    def find(
        self,
        app: str,
        predicate: Callable[[Release], bool],
        status: ReleaseStatus | None = None,
    ) -> Release | None:
        """The newest release matching `predicate` (and `status` when given)."""
        for release in self._iterate(app, newest_first=True, status=status):
            if predicate(release):
                return release
        return None

    def _iterate(
        self,
        app: str,
        newest_first: bool,
        status: ReleaseStatus | None = None,
        page: int = 100,
    ) -> Iterator[Release]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "app = :a",
            "ExpressionAttributeValues": {":a": {"S": app}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
            "Limit": page,
        }
        if status is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status.value}
        while True:
            with aws_errors(f"listing releases of {app}"):
                response = self._db.query(**kwargs)
            for item in response.get("Items", []):
                yield Release.model_validate(from_attributes(item))
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _update(
        self, app: str, release: int, updates: dict[str, Any], allowed_statuses: list[str] | None
    ) -> Release:
        """One conditional UpdateItem (the release exists, and has one of `allowed_statuses`
        when given) returning the new release; _ConditionFailed carries the item as it was."""
        request = self._update_request(app, release, updates, allowed_statuses)
        try:
            response = self._db.update_item(
                **request, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old = cast("dict[str, Any] | None", exc.response.get("Item"))
                raise _ConditionFailed(Release.model_validate(from_attributes(old)) if old else None) from exc
            raise AwsCallFailed(f"updating release {app}#{release} failed: {exc}") from exc
        return Release.model_validate(from_attributes(response["Attributes"]))

    def _update_request(
        self,
        app: str,
        release: int,
        updates: dict[str, Any],
        allowed_statuses: list[str] | None,
        *,
        extra_condition: str = "",
        extra_values: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        bad = _IMMUTABLE.intersection(updates)
        if bad:
            raise ValueError(f"release fields {sorted(bad)} cannot change")
        # Validate the new values through the model's field types before writing anything.
        dumped = {name: _field_json(name, value) for name, value in updates.items()}
        names = {f"#f{i}": name for i, name in enumerate(updates)}
        values = {
            f":v{i}": to_value(dumped[name]) for i, name in enumerate(updates) if dumped[name] is not None
        }
        values.update(extra_values or {})
        sets = [f"#f{i} = :v{i}" for i, name in enumerate(updates) if dumped[name] is not None]
        removes = [f"#f{i}" for i, name in enumerate(updates) if dumped[name] is None]
        if "status" in updates and dumped["status"] != ReleaseStatus.PENDING.value:
            # Out of PENDING: out of the sparse pending index, in the same write.
            names["#pending_key"] = PENDING_KEY
            removes.append("#pending_key")
        expression = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if part
        )
        names["#release_key"] = "release"
        condition = "attribute_exists(#release_key)"
        if allowed_statuses is not None:
            names["#status_now"] = "status"
            placeholders = []
            for i, allowed in enumerate(allowed_statuses):
                values[f":status_from{i}"] = {"S": allowed}
                placeholders.append(f":status_from{i}")
            condition += f" AND #status_now IN ({', '.join(placeholders)})"
        if extra_condition:
            condition += f" AND {extra_condition}"
        return {
            "TableName": self._table,
            "Key": {"app": {"S": app}, "release": {"N": str(release)}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    # --- transaction items (deployer.adapters.transactions) ---------------------------------

    def create_item(self, release: Release) -> dict[str, Any]:
        """Record a new release; a release number is never overwritten."""
        return {
            "Put": {
                "TableName": self._table,
                "Item": to_attributes(release.to_item()),
                "ConditionExpression": "attribute_not_exists(#r)",
                "ExpressionAttributeNames": {"#r": "release"},
            }
        }

    def transition_item(
        self,
        app: str,
        release: int,
        status: ReleaseStatus,
        reason: str = "",
        *,
        allowed_from: frozenset[ReleaseStatus] | None = None,
        expect: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Move a release to `status`, on condition that it is in one of the statuses the
        lifecycle allows before it (or `allowed_from`, a subset) and that each field named in
        `expect` holds that value (None: the field is absent)."""
        now = utcnow()
        updates: dict[str, Any] = {
            "status": status.value,
            "status_reason": reason,
            "updated_at": now,
            **fields,
        }
        if status in FINAL_STATUSES and "finished_at" not in fields:
            updates["finished_at"] = now
        sources = allowed_from or frozenset(
            s for s, allowed in ALLOWED_TRANSITIONS.items() if status in allowed
        )
        conditions: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        for i, (name, value) in enumerate(sorted((expect or {}).items())):
            names[f"#e{i}"] = name
            if value is None:
                conditions.append(f"attribute_not_exists(#e{i})")
            else:
                values[f":e{i}"] = to_value(_field_json(name, value))
                conditions.append(f"#e{i} = :e{i}")
        request = self._update_request(
            app,
            release,
            updates,
            sorted(s.value for s in sources),
            extra_condition=" AND ".join(conditions),
            extra_values=values,
        )
        request["ExpressionAttributeNames"].update(names)
        return {"Update": request}

    def claim_send(self, app: str, release: int, token: str, now: int, stale_after: int) -> Release | None:
        """Take the right to send release `release`'s command for invocation `token`.

        Granted while the release is DEPLOYING without a command and nobody else claimed it
        within `stale_after` seconds (an invocation cannot live longer). Returns the release as
        it was before the claim (its `send_claim` says whether someone claimed before), or None
        when refused."""
        names = {"#status_c": "status"}
        values = {
            ":deploying": {"S": ReleaseStatus.DEPLOYING.value},
            ":stale": {"N": str(now - stale_after)},
            ":me": {"S": token},
        }
        condition = (
            "#status_c = :deploying AND attribute_not_exists(command_id) AND "
            "(attribute_not_exists(send_claim) OR send_claimed_at < :stale OR send_claim = :me)"
        )
        request = self._update_request(
            app,
            release,
            {"send_claim": token, "send_claimed_at": now},
            None,
            extra_condition=condition,
            extra_values=values,
        )
        request["ExpressionAttributeNames"].update(names)
        try:
            response = self._db.update_item(**request, ReturnValues="ALL_OLD")
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise AwsCallFailed(f"claiming the command of {app}#{release} failed: {exc}") from exc
        return Release.model_validate(from_attributes(response["Attributes"]))

    def claim_tick(self, app: str, release: int, stage: int, due: int, now: int) -> bool:
        """Record that a stage tick is due at `due` for release `release` baking stage `stage`;
        granted only when no tick is pending (none recorded, or the recorded one is due by `now`:
        it arrived or was lost). The one invocation it grants sends the tick, so duplicates and
        concurrent converges never start a second chain."""
        request = self._update_request(
            app,
            release,
            {"next_tick_at": due},
            None,
            extra_condition=(
                "#status_t = :deploying AND #stage_t = :stage AND #state_t = :baking AND "
                "(attribute_not_exists(#tick_t) OR #tick_t <= :now)"
            ),
            extra_values={
                ":deploying": {"S": ReleaseStatus.DEPLOYING.value},
                ":stage": {"N": str(stage)},
                ":baking": {"S": STAGE_BAKING},
                ":now": {"N": str(now)},
            },
        )
        request["ExpressionAttributeNames"].update(
            {"#status_t": "status", "#stage_t": "stage", "#state_t": "stage_state", "#tick_t": "next_tick_at"}
        )
        try:
            self._db.update_item(**request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"recording the stage tick of {app}#{release} failed: {exc}") from exc
        return True

    def drop_claim(self, app: str, release: int, token: str) -> None:
        """Give up invocation `token`'s claim to send, when nothing was sent under it."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"app": {"S": app}, "release": {"N": str(release)}},
                UpdateExpression="REMOVE send_claim, send_claimed_at",
                ConditionExpression="send_claim = :me AND attribute_not_exists(command_id)",
                ExpressionAttributeValues={":me": {"S": token}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return  # someone else's claim by now, or sent: nothing to give up
            raise AwsCallFailed(f"dropping the send claim of {app}#{release} failed: {exc}") from exc

    def get_or_none(self, app: str, release: int) -> Release | None:
        try:
            return self.get(app, release)
        except ReleaseNotFound:
            return None


class _ConditionFailed(Exception):
    """A conditional release write did not apply; `old` is the item then (None: no item)."""

    def __init__(self, old: Release | None) -> None:
        super().__init__("condition failed")
        self.old = old


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = Release.model_fields.get(name)
    if field is None:
        raise ValueError(f"releases have no field {name!r}")
    return TypeAdapter(Annotated[field.annotation, field])


def _field_json(name: str, value: Any) -> Any:
    """`value` validated as the release field `name`, in its JSON form."""
    adapter = _field_adapter(name)
    return adapter.dump_python(adapter.validate_python(value), mode="json")
