"""on-instance-launch: a launching instance is swapped onto the current pointer before it serves."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from deployer import runtime
from deployer.entry.events import handle_instance_launch
from deployer.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_instance_launch(runtime.deps(), event)
