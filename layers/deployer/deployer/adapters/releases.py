"""Release history in the releases table (key `app` + `release`; GSI `command-index`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from deployer.adapters import aws_errors, error_code, from_attributes, to_attributes, to_value
from deployer.errors import AwsCallFailed, InvalidTransition, ReleaseNotFound
from deployer.models.records import ALLOWED_TRANSITIONS, Release, ReleaseStatus, utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

COMMAND_INDEX = "command-index"
FINAL_STATUSES = frozenset(
    {ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED, ReleaseStatus.ROLLED_BACK, ReleaseStatus.SUPERSEDED}
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
        """The release whose swap command has this id, or None (not one of ours)."""
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
        # The index is eventually consistent and may not project every attribute: read the item.
        found = from_attributes(items[0])
        return self.get(str(found["app"]), int(found["release"]))

    def update_status(
        self,
        app: str,
        release: int,
        status: ReleaseStatus,
        reason: str = "",
        **fields: Any,
    ) -> Release:
        """Move a release to `status` if the lifecycle allows it from the current status.

        Setting the status a release already has is a no-op that returns it unchanged, so
        duplicate events are harmless. InvalidTransition otherwise; the write is conditional on
        the status read, so two concurrent writers cannot both win."""
        current = self.get(app, release)
        if current.status == status:
            return current
        if status not in ALLOWED_TRANSITIONS[current.status]:
            raise InvalidTransition(f"release {app}#{release} cannot go from {current.status} to {status}")
        now = utcnow()
        updates: dict[str, Any] = {
            "status": status.value,
            "status_reason": reason,
            "updated_at": now,
            **fields,
        }
        if status in FINAL_STATUSES and "finished_at" not in fields:
            updates["finished_at"] = now
        try:
            return self._update(app, release, updates, expected_status=current.status)
        except InvalidTransition:
            latest = self.get(app, release)
            if latest.status == status:
                return latest
            raise

    def set_fields(self, app: str, release: int, **fields: Any) -> Release:
        """Set attributes (command id, launch-template version, host counts...) on a release."""
        return self._update(app, release, {**fields, "updated_at": utcnow()}, expected_status=None)

    def list_recent(self, app: str, limit: int = 20) -> list[Release]:
        """Newest first."""
        releases: list[Release] = []
        for release in self._iterate(app, newest_first=True, page=max(limit, 1)):
            releases.append(release)
            if len(releases) >= limit:
                break
        return releases

    def pending(self, app: str) -> list[Release]:
        """PENDING releases, oldest first."""
        return list(self._iterate(app, newest_first=False, status=ReleaseStatus.PENDING))

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
        self, app: str, release: int, updates: dict[str, Any], expected_status: ReleaseStatus | None
    ) -> Release:
        bad = _IMMUTABLE.intersection(updates)
        if bad:
            raise ValueError(f"release fields {sorted(bad)} cannot change")
        # Validate the new values through the model before writing anything.
        dumped = Release.model_validate({**self.get(app, release).model_dump(), **updates}).model_dump(
            mode="json"
        )
        names = {f"#f{i}": name for i, name in enumerate(updates)}
        values = {
            f":v{i}": to_value(dumped[name]) for i, name in enumerate(updates) if dumped[name] is not None
        }
        sets = [f"#f{i} = :v{i}" for i, name in enumerate(updates) if dumped[name] is not None]
        removes = [f"#f{i}" for i, name in enumerate(updates) if dumped[name] is None]
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
        if expected_status is not None:
            names["#status_now"] = "status"
            values[":status_now"] = {"S": expected_status.value}
            condition += " AND #status_now = :status_now"
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key={"app": {"S": app}, "release": {"N": str(release)}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                if expected_status is None:
                    raise ReleaseNotFound(f"{app} has no release {release}") from exc
                raise InvalidTransition(
                    f"release {app}#{release} changed status concurrently (expected {expected_status})"
                ) from exc
            raise AwsCallFailed(f"updating release {app}#{release} failed: {exc}") from exc
        return Release.model_validate(from_attributes(response["Attributes"]))
