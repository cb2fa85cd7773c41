"""Metric names of the deploy lifecycle, so producers and the template's alarms agree."""

from __future__ import annotations


class LifecycleMetric:
    DEPLOY_DURATION = "DeployDuration"
    DEPLOY_SUCCEEDED = "DeploySucceeded"
    DEPLOY_FAILED = "DeployFailed"
    ROLLBACKS = "Rollbacks"
    HOSTS_FAILED = "HostsFailed"
    DRIFT_DETECTED = "DriftDetected"
    LAUNCH_ABANDONED = "LaunchAbandoned"
    OPERATION_REFUSED = "OperationRefused"
