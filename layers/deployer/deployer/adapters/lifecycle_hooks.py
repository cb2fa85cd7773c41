"""Auto Scaling lifecycle actions and SSM registration of a launching instance."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from deployer.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ssm import SSMClient


class LifecycleResult(StrEnum):
    CONTINUE = "CONTINUE"
    ABANDON = "ABANDON"


class LifecycleActionGone(Exception):
    """The lifecycle action no longer exists (completed already, or timed out)."""


class LifecycleHooks:
    def __init__(self, autoscaling: AutoScalingClient) -> None:
        self._asg = autoscaling

    def complete(
        self, *, group: str, hook: str, token: str, instance_id: str, result: LifecycleResult
    ) -> bool:
        """Complete the action; False when it was already completed or expired (a duplicate)."""
        try:
            self._asg.complete_lifecycle_action(
                AutoScalingGroupName=group,
                LifecycleHookName=hook,
                LifecycleActionToken=token,
                LifecycleActionResult=result.value,
                InstanceId=instance_id,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ValidationError":
                # AWS answers ValidationError "No active Lifecycle Action found" for a token that
                # was already completed or has timed out.
                return False
            raise AwsCallFailed(f"complete_lifecycle_action for {instance_id} failed") from exc
        return True

    def heartbeat(self, *, group: str, hook: str, token: str, instance_id: str) -> bool:
        try:
            self._asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=group,
                LifecycleHookName=hook,
                LifecycleActionToken=token,
                InstanceId=instance_id,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ValidationError":
                return False
            raise AwsCallFailed(f"record_lifecycle_action_heartbeat for {instance_id} failed") from exc
        return True

    def in_service(self, group: str) -> list[str]:
        """Ids of the group's instances that are InService (launching ones are the hook's)."""
        return list(self.in_service_zones(group))

    def in_service_zones(self, group: str) -> dict[str, str]:
        """The group's InService instances: id -> Availability Zone."""
        try:
            response = self._asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        except ClientError as exc:
            raise AwsCallFailed(f"describe_auto_scaling_groups {group} failed") from exc
        groups = response.get("AutoScalingGroups", [])
        if not groups:
            return {}
        return {
            i["InstanceId"]: i.get("AvailabilityZone", "")
            for i in groups[0].get("Instances", [])
            if i.get("LifecycleState") == "InService"
        }


class ManagedInstances:
    """Whether SSM can run commands on an instance yet."""

    def __init__(self, ssm: SSMClient) -> None:
        self._ssm = ssm

    def online(self, instance_id: str) -> bool:
        try:
            response = self._ssm.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
            )
        except ClientError as exc:
            raise AwsCallFailed(f"describe_instance_information for {instance_id} failed") from exc
        return any(
            info.get("InstanceId") == instance_id and info.get("PingStatus") == "Online"
            for info in response.get("InstanceInformationList", [])
        )
