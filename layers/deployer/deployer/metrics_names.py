"""Metric names of deploys, so producers and the template's alarms agree."""

from __future__ import annotations


class DeployMetric:
    DEPLOY_DURATION = "DeployDuration"
    DEPLOY_SUCCEEDED = "DeploySucceeded"
    DEPLOY_FAILED = "DeployFailed"
    ROLLBACKS = "Rollbacks"
    # An operator stopped a deploy in progress (`deployer cancel`).
    DEPLOY_CANCELLED = "DeployCancelled"
    HOSTS_FAILED = "HostsFailed"
    # Hosts live on the release with a warning (the old release not stopped, images not pruned).
    HOST_WARNINGS = "HostWarnings"
    DRIFT_DETECTED = "DriftDetected"
    LAUNCH_ABANDONED = "LaunchAbandoned"
    # A launch's lifecycle action was gone (timed out) when we completed or heartbeated it.
    LAUNCH_ACTION_EXPIRED = "LaunchActionExpired"
    OPERATION_REFUSED = "OperationRefused"
    # A deploy notice could not be published; it stays owed and is retried.
    NOTICES_OWED = "NoticesOwed"


# The hosts' proxy metrics (host/agent.py `meter`; docs/stages.md, "Canary analysis"): one datum
# per flush and release, dimensions [App, Release] and [App] alone, high resolution.
PROXY_NAMESPACE = "Deployer/Proxy"
PROXY_REQUESTS = "Requests"
PROXY_ERRORS = "Errors5xx"
PROXY_LATENCY = "Latency"
