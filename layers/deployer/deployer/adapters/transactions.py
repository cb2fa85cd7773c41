"""One DynamoDB TransactWriteItems: a decision and the desired state it leads to, all or nothing.

Stores contribute labelled items (`Transaction.add`); `commit` writes them. A condition that does
not hold cancels the whole transaction and raises `Refused` naming the labels whose condition
failed, so the caller re-reads and decides again; every other failure is `AwsCallFailed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deployer.adapters import error_code
from deployer.errors import AwsCallFailed, DeployerError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

# DynamoDB's limit on the items of one transaction.
MAX_ITEMS = 100


class Refused(DeployerError):
    """The transaction was cancelled because the conditions of `labels` did not hold."""

    def __init__(self, labels: frozenset[str]) -> None:
        super().__init__(f"conditions no longer hold: {', '.join(sorted(labels))}")
        self.labels = labels


@dataclass
class Transaction:
    items: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, label: str, item: dict[str, Any]) -> Transaction:
        """`item` is one TransactWriteItem (`{"Update": {...}}`, `{"Put": {...}}`...)."""
        if len(self.items) >= MAX_ITEMS:
            raise DeployerError(f"a transaction holds at most {MAX_ITEMS} items")
        self.items.append(item)
        self.labels.append(label)
        return self

    def commit(self, dynamodb: DynamoDBClient, what: str) -> None:
        try:
            dynamodb.transact_write_items(TransactItems=self.items)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = list(exc.response.get("CancellationReasons") or [])
                failed = frozenset(
                    self.labels[i]
                    for i, reason in enumerate(reasons[: len(self.labels)])
                    if reason.get("Code") == "ConditionalCheckFailed"
                )
                codes = {reason.get("Code") for reason in reasons} - {None, "None", "ConditionalCheckFailed"}
                if failed and not codes:
                    raise Refused(failed) from exc
            raise AwsCallFailed(f"{what} failed: {error_code(exc)}: {exc}") from exc
        except BotoCoreError as exc:
            raise AwsCallFailed(f"{what} failed: {exc}") from exc
