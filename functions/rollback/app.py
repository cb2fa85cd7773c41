"""rollback: operator actions invoked directly (rollback, promote, pause, resume, status)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from deployer import operations, runtime  # noqa: F401 - operations: imported during init
from deployer.entry.events import handle_operation
from deployer.models.lifecycle_events import parse_operation
from deployer.observability import logger, metrics, tracer

# A rollback is latency-critical: the clients, the operations module (imported above) and the
# request schema are built during init, so the first request pays none of them.
if runtime.in_lambda():
    runtime.deps()
    parse_operation({"app": "init", "action": "status"})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_operation(runtime.deps(), event)
