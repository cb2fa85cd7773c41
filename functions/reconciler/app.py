"""reconciler: on a schedule, deploy missed pushes and repair drift, never during a deploy."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from deployer import runtime
from deployer.entry.events import handle_reconcile
from deployer.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_reconcile(runtime.deps(), event)
