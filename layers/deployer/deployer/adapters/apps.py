"""App configurations in the apps table (key `app`; GSI `repository-index` on `repository`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors
from deployer.errors import AppNotFound, InvalidAppConfig
from deployer.models.config import AppConfig
from deployer.models.records import utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REPOSITORY_INDEX = "repository-index"


class AppsStore:
    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def put(self, config: AppConfig) -> None:
        """Create or replace an app's configuration."""
        item = {
            "app": {"S": config.app},
            "repository": {"S": config.repository},
            "config": {"S": json.dumps(config.to_document(), sort_keys=True)},
            "updated_at": {"S": utcnow().isoformat()},
        }
        with aws_errors(f"storing app {config.app}"):
            self._db.put_item(TableName=self._table, Item=item)

    def get(self, app: str) -> AppConfig:
        with aws_errors(f"reading app {app}"):
            response = self._db.get_item(TableName=self._table, Key={"app": {"S": app}}, ConsistentRead=True)
        if "Item" not in response:
            raise AppNotFound(f"no app named {app!r} is registered")
        return _config(response["Item"])

    def find_by_repository(self, repository: str) -> list[AppConfig]:
        """Every app deploying from this ECR repository (tag filters may split one repo)."""
        configs: list[AppConfig] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": REPOSITORY_INDEX,
            "KeyConditionExpression": "repository = :r",
            "ExpressionAttributeValues": {":r": {"S": repository}},
        }
        while True:
            with aws_errors(f"looking up apps for repository {repository}"):
                response = self._db.query(**kwargs)
            configs.extend(_config(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return sorted(configs, key=lambda c: c.app)

    def list(self) -> list[AppConfig]:
        configs: list[AppConfig] = []
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            with aws_errors("listing apps"):
                response = self._db.scan(**kwargs)
            configs.extend(_config(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return sorted(configs, key=lambda c: c.app)


def _config(item: dict[str, Any]) -> AppConfig:
    try:
        document = json.loads(item["config"]["S"])
    except (KeyError, ValueError) as exc:
        raise InvalidAppConfig(f"stored config of {item.get('app')} is not JSON") from exc
    return AppConfig.parse(document)
