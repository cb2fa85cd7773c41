"""Per-host outcomes in the host-outcomes table (key `release_key` = `<app>#<release>` + `instance_id`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors, from_attributes, to_attributes
from deployer.models.records import HostOutcome

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient


class HostOutcomesStore:
    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def put(self, outcome: HostOutcome) -> None:
        with aws_errors(f"recording the outcome of {outcome.instance_id} for {outcome.release_key}"):
            self._db.put_item(TableName=self._table, Item=to_attributes(outcome.to_item()))

    def for_release(self, release_key: str) -> list[HostOutcome]:
        outcomes: list[HostOutcome] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "release_key = :k",
            "ExpressionAttributeValues": {":k": {"S": release_key}},
            "ConsistentRead": True,
        }
        while True:
            with aws_errors(f"listing host outcomes of {release_key}"):
                response = self._db.query(**kwargs)
            outcomes.extend(HostOutcome.model_validate(from_attributes(i)) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return outcomes
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
