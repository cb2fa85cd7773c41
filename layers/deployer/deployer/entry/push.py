"""The on-image-push use case: validate the event, deduplicate, accept the push.

EventBridge delivers at least once and retries for up to 24 hours, so acceptance is idempotent
on repository + digest + tag (Powertools idempotency, DynamoDB persistence, records kept 48
hours): re-tagging an image already pushed is a new push, which an app filtering on the new tag
deploys.
Bad input is answered with one log line and a metric and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from deployer.admission import accept_push
from deployer.errors import InvalidAppConfig, InvalidEvent
from deployer.models.events import EcrImageAction, parse_push_event
from deployer.observability import Metric, count, logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from deployer.wiring import Adapters as Deps

IDEMPOTENCY_TTL_SECONDS = 48 * 3600
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[repository, digest, tag]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
)

_accept_once: list[tuple[Deps, Callable[..., dict[str, Any]]]] = []


def handle_push_event(deps: Deps, event: Any, context: LambdaContext | None = None) -> dict[str, Any]:
    """Accept one `ECR Image Action` event; returns what it did, as JSON-compatible data."""
    try:
        push = parse_push_event(event)
    except InvalidEvent as exc:
        logger.warning("push event rejected", error=str(exc))
        count(Metric.BAD_INPUT)
        return {"status": "rejected", "error": str(exc)}
    if context is not None:
        IDEMPOTENCY.register_lambda_context(context)
    accept = _idempotent_accept(deps)
    try:
        return accept(
            push={
                "repository": push.detail.repository_name,
                "digest": push.detail.image_digest,
                "tag": push.detail.image_tag,
                "event": push.model_dump(mode="json", by_alias=True),
            }
        )
    except InvalidAppConfig as exc:
        logger.error("push not deployed: stored app config is invalid", error=str(exc))
        count(Metric.BAD_INPUT)
        return {"status": "rejected", "error": str(exc)}


def _idempotent_accept(deps: Deps) -> Callable[..., dict[str, Any]]:
    """`accept_push` wrapped in Powertools idempotency, built once per Deps."""
    if not _accept_once or _accept_once[0][0] is not deps:
        store = DynamoDBPersistenceLayer(
            table_name=deps.settings.idempotency_table,
            boto3_client=deps.clients.client("dynamodb"),
        )

        def accept(push: dict[str, Any]) -> dict[str, Any]:
            outcome = accept_push(deps, EcrImageAction.model_validate(push["event"]))
            return {"status": "accepted", **outcome.as_dict()}

        once = idempotent_function(data_keyword_argument="push", persistence_store=store, config=IDEMPOTENCY)
        accept = cast("Callable[..., dict[str, Any]]", once(accept))
        _accept_once[:] = [(deps, accept)]
    return _accept_once[0][1]
