"""The one Logger, Tracer and Metrics of the deployer (AWS Lambda Powertools).

Logs are JSON with key-value context; handlers set the correlation id to the EventBridge event
id. Metrics go out as CloudWatch EMF under the `Deployer` namespace. Service name and namespace
come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE when set.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "deployer")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Deployer")

logger = Logger(service=SERVICE)
# Only AWS SDK calls are traced: patching every library X-Ray knows (the default) imports each
# one that happens to be installed, at cold start.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class Metric:
    """Metric names, so producers and alarms agree on spelling."""

    PUSH_IGNORED = "PushIgnored"
    PUSH_UNTAGGED = "PushUntagged"
    PUSH_REFUSED = "PushRefused"
    PUSH_PENDING = "PushPending"
    BAD_INPUT = "BadInput"
    DEPLOY_STARTED = "DeployStarted"
    DEPLOY_START_FAILED = "DeployStartFailed"
    RELEASES_SUPERSEDED = "ReleasesSuperseded"
    VERSION_CLEANUP_FAILED = "LaunchTemplateCleanupFailed"


def count(name: str, value: float = 1) -> None:
    """Add a count metric."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


__all__ = ["Metric", "count", "logger", "metrics", "tracer"]
