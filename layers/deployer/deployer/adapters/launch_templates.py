"""Launch-template versions per release, and the Auto Scaling group on an explicit version.

A new version copies the full LaunchTemplateData of the version the group uses now and changes
only the user data (SourceVersion is not used: its merge rules differ between fields). The
group is then set to that version *number*, never `$Latest`/`$Default`, so the version history
is a rollback history and Instance Refresh can roll back.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from deployer.adapters import aws_errors
from deployer.errors import GroupNotFound, LaunchTemplateMismatch

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.client import AutoScalingClient
    from mypy_boto3_autoscaling.type_defs import (
        LaunchTemplateSpecificationTypeDef,
        MixedInstancesPolicyTypeDef,
    )
    from mypy_boto3_ec2.client import EC2Client

    from deployer.models.config import AppConfig


@dataclass(frozen=True)
class GroupTemplate:
    """The launch template a group uses: id, name and the resolved version number."""

    group: str
    template_id: str
    template_name: str
    version: int
    mixed_instances: bool


class LaunchTemplates:
    def __init__(self, ec2: EC2Client, autoscaling: AutoScalingClient) -> None:
        self._ec2 = ec2
        self._autoscaling = autoscaling

    def current(self, config: AppConfig) -> GroupTemplate:
        """The launch template and version number the app's group launches now."""
        group = self._describe_group(config.auto_scaling_group)
        mixed = "LaunchTemplate" not in group and "MixedInstancesPolicy" in group
        if mixed:
            spec = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
        elif "LaunchTemplate" in group:
            spec = group["LaunchTemplate"]
        else:
            raise LaunchTemplateMismatch(
                f"group {config.auto_scaling_group} uses no launch template (launch configurations "
                "cannot be versioned)"
            )
        template_id = str(spec.get("LaunchTemplateId", ""))
        template_name = str(spec.get("LaunchTemplateName", ""))
        if config.launch_template not in (template_id, template_name):
            raise LaunchTemplateMismatch(
                f"group {config.auto_scaling_group} uses launch template {template_id or template_name}, "
                f"not {config.launch_template} as the app config says"
            )
        version = self._resolve_version(template_id, template_name, str(spec.get("Version", "$Default")))
        return GroupTemplate(
            group=config.auto_scaling_group,
            template_id=template_id or self._template_id(template_name),
            template_name=template_name,
            version=version,
            mixed_instances=mixed,
        )

    def create_version(self, current: GroupTemplate, user_data: str, description: str) -> int:
        """A new version: the current version's full data with only UserData replaced."""
        with aws_errors(f"reading launch template {current.template_id} version {current.version}"):
            response = self._ec2.describe_launch_template_versions(
                LaunchTemplateId=current.template_id, Versions=[str(current.version)]
            )
        versions = response.get("LaunchTemplateVersions", [])
        if not versions:
            raise LaunchTemplateMismatch(
                f"launch template {current.template_id} has no version {current.version}"
            )
        data: dict[str, Any] = copy.deepcopy(dict(versions[0].get("LaunchTemplateData", {})))
        data["UserData"] = base64.b64encode(user_data.encode()).decode("ascii")
        with aws_errors(f"creating a version of launch template {current.template_id}"):
            created = self._ec2.create_launch_template_version(
                LaunchTemplateId=current.template_id,
                LaunchTemplateData=data,  # type: ignore[arg-type]
                VersionDescription=description[:255],
            )
        return int(created["LaunchTemplateVersion"]["VersionNumber"])

    def point_group(self, current: GroupTemplate, version: int) -> None:
        """Set the group on an explicit version number of its launch template."""
        spec: LaunchTemplateSpecificationTypeDef = {
            "LaunchTemplateId": current.template_id,
            "Version": str(version),
        }
        with aws_errors(f"moving group {current.group} to launch template version {version}"):
            if current.mixed_instances:
                self._autoscaling.update_auto_scaling_group(
                    AutoScalingGroupName=current.group,
                    MixedInstancesPolicy=cast(
                        "MixedInstancesPolicyTypeDef",
                        {"LaunchTemplate": {"LaunchTemplateSpecification": spec}},
                    ),
                )
            else:
                self._autoscaling.update_auto_scaling_group(
                    AutoScalingGroupName=current.group, LaunchTemplate=spec
                )

    def user_data(self, template_id: str, version: int) -> str | None:
        """The decoded user data of one version (None when it has none)."""
        with aws_errors(f"reading launch template {template_id} version {version}"):
            response = self._ec2.describe_launch_template_versions(
                LaunchTemplateId=template_id, Versions=[str(version)]
            )
        versions = response.get("LaunchTemplateVersions", [])
        encoded = versions[0].get("LaunchTemplateData", {}).get("UserData") if versions else None
        return base64.b64decode(encoded).decode() if encoded else None

    def _describe_group(self, name: str) -> dict[str, Any]:
        with aws_errors(f"describing group {name}"):
            response = self._autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        groups = response.get("AutoScalingGroups", [])
        if not groups:
            raise GroupNotFound(f"Auto Scaling group {name} does not exist")
        return dict(groups[0])

    def _resolve_version(self, template_id: str, template_name: str, version: str) -> int:
        if version.isdigit():
            return int(version)
        kwargs: dict[str, Any] = (
            {"LaunchTemplateIds": [template_id]} if template_id else {"LaunchTemplateNames": [template_name]}
        )
        with aws_errors(f"describing launch template {template_id or template_name}"):
            response = self._ec2.describe_launch_templates(**kwargs)
        templates = response.get("LaunchTemplates", [])
        if not templates:
            raise LaunchTemplateMismatch(f"launch template {template_id or template_name} does not exist")
        key = "LatestVersionNumber" if version == "$Latest" else "DefaultVersionNumber"
        return int(templates[0][key])  # type: ignore[literal-required]

    def _template_id(self, name: str) -> str:
        with aws_errors(f"describing launch template {name}"):
            response = self._ec2.describe_launch_templates(LaunchTemplateNames=[name])
        templates = response.get("LaunchTemplates", [])
        if not templates:
            raise LaunchTemplateMismatch(f"launch template {name} does not exist")
        return str(templates[0]["LaunchTemplateId"])
