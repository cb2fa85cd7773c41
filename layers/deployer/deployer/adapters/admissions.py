"""Admission markers: one item per accepted push, so a push is recorded as one release even when
the invocation that recorded it died before answering and the event is delivered again.

The items live in the idempotency table (key `id`, TTL attribute `expiration`, the layout
Powertools uses there) under ids of their own (`deployer.markers.admission_key`); they are
written in the same transaction as the release they name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

# As long as the push's Powertools idempotency record: EventBridge retries for at most 24 h.
KEEP_SECONDS = 48 * 3600


class Admissions:
    def __init__(self, dynamodb: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def create_item(self, key: str, app: str, release: int) -> dict[str, Any]:
        now = int(self._clock())
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "id": {"S": key},
                    "expiration": {"N": str(now + KEEP_SECONDS)},
                    "app": {"S": app},
                    "release": {"N": str(release)},
                },
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }

    def release_of(self, key: str) -> int | None:
        """The release a push was admitted as, or None."""
        with aws_errors("reading an admission marker"):
            response = self._db.get_item(TableName=self._table, Key={"id": {"S": key}}, ConsistentRead=True)
        item = response.get("Item")
        if not item or "release" not in item:
            return None
        return int(item["release"]["N"])
