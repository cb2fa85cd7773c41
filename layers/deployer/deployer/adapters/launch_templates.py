"""Launch-template versions per release, and the Auto Scaling group on an explicit version.

A new version is based on the version the group uses now (`SourceVersion`) and states only
what a release changes: the user data. An answer of DescribeLaunchTemplateVersions is never
sent back as LaunchTemplateData: its response shape has members the request shape refuses
(`MetadataOptions.State`, `Operator.Managed`, ...). EC2 does not carry a block device's
snapshot over from the source version, so those mappings are restated, in the request shape.

The group is then set to that version *number*, never `$Latest`/`$Default`, so the version
history is a rollback history and Instance Refresh can roll back. A group with a mixed
instances policy gets its launch template written back whole: the top-level specification
and every override, the overrides that name our template moved to the same version (an
override that carries its own specification would otherwise keep launching the old release).
InstancesDistribution is left out of that write: an update leaves omitted members unchanged,
while restating `OnDemandBaseCapacity` would remove the group's Distribution Segments.

Versions do not accumulate: after a deploy starts, `prune` deletes this app's release versions
outside the kept set (EC2 allows 10,000 versions per template).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from deployer import builders
from deployer.adapters import aws_errors
from deployer.adapters.request_shapes import input_shape, request_shaped
from deployer.errors import GroupNotFound, LaunchTemplateMismatch
from deployer.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.client import AutoScalingClient
    from mypy_boto3_autoscaling.type_defs import (
        LaunchTemplateSpecificationTypeDef,
        MixedInstancesPolicyTypeDef,
    )
    from mypy_boto3_ec2.client import EC2Client

    from deployer.models.config import AppConfig

DELETE_BATCH = 200  # DeleteLaunchTemplateVersions takes at most 200 versions per request
_VERSION_GONE = "launchTemplateVersionDoesNotExist"


def release_version_description(app: str, release: int, digest: str) -> str:
    """The VersionDescription of a release's version; `prune` deletes only versions marked so."""
    return f"{_release_marker(app)}{release} {digest}"[:255]


def _release_marker(app: str) -> str:
    return f"{app} release "


@dataclass(frozen=True)
class GroupTemplate:
    """The launch template a group uses: id, name and the resolved version number.

    For a mixed instances policy, `overrides` holds its overrides as read (request members
    only) and `versions` every explicit version number of our template the group names."""

    group: str
    template_id: str
    template_name: str
    version: int
    mixed_instances: bool
    max_size: int = 0  # the most instances the group may run (bounds the swap's waves)
    overrides: tuple[dict[str, Any], ...] = ()
    versions: frozenset[int] = frozenset()

    def names_template(self, spec: dict[str, Any]) -> bool:
        """Whether a LaunchTemplateSpecification names this template (by id or by name)."""
        return bool(
            (spec.get("LaunchTemplateId") and spec.get("LaunchTemplateId") == self.template_id)
            or (spec.get("LaunchTemplateName") and spec.get("LaunchTemplateName") == self.template_name)
        )


class LaunchTemplates:
    def __init__(self, ec2: EC2Client, autoscaling: AutoScalingClient) -> None:
        self._ec2 = ec2
        self._autoscaling = autoscaling

    def current(self, config: AppConfig) -> GroupTemplate:
        """The launch template and version number the app's group launches now."""
        group = self._describe_group(config.auto_scaling_group)
        policy: dict[str, Any] = dict(group.get("MixedInstancesPolicy") or {})
        mixed = "LaunchTemplate" not in group and bool(policy)
        if mixed:
            spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
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
        current = GroupTemplate(
            group=config.auto_scaling_group,
            template_id=template_id or self._template_id(template_name),
            template_name=template_name,
            version=version,
            mixed_instances=mixed,
            max_size=int(group.get("MaxSize", 0)),
        )
        overrides: tuple[dict[str, Any], ...] = ()
        if mixed:
            shape = input_shape(
                self._autoscaling,
                "UpdateAutoScalingGroup",
                "MixedInstancesPolicy",
                "LaunchTemplate",
                "Overrides",
                "[]",
            )
            overrides = tuple(
                request_shaped(o, shape) for o in policy["LaunchTemplate"].get("Overrides") or []
            )
        versions = {version}
        for override in overrides:
            own = override.get("LaunchTemplateSpecification")
            if own and current.names_template(own) and str(own.get("Version", "")).isdigit():
                versions.add(int(own["Version"]))
        return replace(current, overrides=overrides, versions=frozenset(versions))

    def create_version(self, current: GroupTemplate, user_data: str, description: str) -> int:
        """A new version based on the group's version, with only the user data replaced."""
        with aws_errors(f"reading launch template {current.template_id} version {current.version}"):
            response = self._ec2.describe_launch_template_versions(
                LaunchTemplateId=current.template_id, Versions=[str(current.version), "$Latest"]
            )
        found = response.get("LaunchTemplateVersions", [])
        for candidate in found:
            # Created by an earlier attempt for the same release (it died before moving the
            # group, or the group is already on it): reuse it rather than stack up versions.
            if candidate.get("VersionDescription") == description[:255] and "VersionNumber" in candidate:
                return int(candidate["VersionNumber"])
        versions = [v for v in found if v.get("VersionNumber") == current.version]
        if not versions:
            raise LaunchTemplateMismatch(
                f"launch template {current.template_id} has no version {current.version}"
            )
        source = versions[0].get("LaunchTemplateData", {})
        # A new version's UserData replaces the source's whole (EC2 merges no parameter), so the
        # operator's own user data is carried into it, with the boot script after it.
        existing = source.get("UserData")
        try:
            own = base64.b64decode(existing, validate=True) if existing else None
        except binascii.Error as exc:
            raise LaunchTemplateMismatch(
                f"launch template {current.template_id} version {current.version} "
                "has user data that is not base64"
            ) from exc
        combined = builders.with_operator_user_data(own, user_data)
        data: dict[str, Any] = {"UserData": base64.b64encode(combined.encode()).decode("ascii")}
        mappings = list(source.get("BlockDeviceMappings", []))
        if any(m.get("Ebs", {}).get("SnapshotId") for m in mappings):
            shape = input_shape(
                self._ec2, "CreateLaunchTemplateVersion", "LaunchTemplateData", "BlockDeviceMappings"
            )
            data["BlockDeviceMappings"] = request_shaped(mappings, shape)
        with aws_errors(f"creating a version of launch template {current.template_id}"):
            created = self._ec2.create_launch_template_version(
                LaunchTemplateId=current.template_id,
                SourceVersion=str(current.version),
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
                launch_template: dict[str, Any] = {"LaunchTemplateSpecification": spec}
                if current.overrides:
                    launch_template["Overrides"] = [
                        _override_on(o, current, version) for o in current.overrides
                    ]
                self._autoscaling.update_auto_scaling_group(
                    AutoScalingGroupName=current.group,
                    MixedInstancesPolicy=cast(
                        "MixedInstancesPolicyTypeDef", {"LaunchTemplate": launch_template}
                    ),
                )
            else:
                self._autoscaling.update_auto_scaling_group(
                    AutoScalingGroupName=current.group, LaunchTemplate=spec
                )

    def prune(
        self, current: GroupTemplate, app: str, latest: int, newest: int, keep: Collection[int]
    ) -> list[int]:
        """Delete the app's release versions older than the newest `newest` and not in `keep`.

        Never deleted: the default version, every version the group names, and versions this
        app's releases did not create (another app's or an operator's). One batch per call:
        a template with a long history shrinks over the next deploys. Deleting a version that
        is already gone counts as done, so a retry is harmless. Returns the deleted numbers."""
        cutoff = latest - newest
        if cutoff < 1:
            return []
        protected = set(keep) | set(current.versions) | {latest}
        marker = _release_marker(app)
        doomed: list[int] = []
        kwargs: dict[str, Any] = {
            "LaunchTemplateId": current.template_id,
            "MaxVersion": str(cutoff),
            "MaxResults": DELETE_BATCH,
        }
        while len(doomed) < DELETE_BATCH:
            with aws_errors(f"listing versions of launch template {current.template_id}"):
                response = self._ec2.describe_launch_template_versions(**kwargs)
            for described in response.get("LaunchTemplateVersions", []):
                number = int(described.get("VersionNumber", 0))
                if (
                    number
                    and number <= cutoff
                    and number not in protected
                    and not described.get("DefaultVersion", False)
                    and str(described.get("VersionDescription", "")).startswith(marker)
                ):
                    doomed.append(number)
            if not response.get("NextToken"):
                break
            kwargs["NextToken"] = response["NextToken"]
        doomed = sorted(set(doomed))[:DELETE_BATCH]
        if not doomed:
            return []
        with aws_errors(f"deleting old versions of launch template {current.template_id}"):
            answer = self._ec2.delete_launch_template_versions(
                LaunchTemplateId=current.template_id, Versions=[str(n) for n in doomed]
            )
        failed = {}
        for item in answer.get("UnsuccessfullyDeletedLaunchTemplateVersions", []):
            code = item.get("ResponseError", {}).get("Code", "")
            if code != _VERSION_GONE:
                failed[int(item.get("VersionNumber", 0))] = code
        if failed:
            logger.warning(
                "some launch-template versions were not deleted",
                template=current.template_id,
                versions=failed,
            )
        return [n for n in doomed if n not in failed]

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


def _override_on(override: dict[str, Any], current: GroupTemplate, version: int) -> dict[str, Any]:
    """One override as written back: on `version` when it names our template.

    A specification names its template by id or by name, never both (Auto Scaling refuses
    both, though DescribeAutoScalingGroups answers with both)."""
    own = override.get("LaunchTemplateSpecification")
    if not own:
        return dict(override)
    if current.names_template(own):
        spec: dict[str, Any] = {"LaunchTemplateId": current.template_id, "Version": str(version)}
    else:
        key = "LaunchTemplateId" if own.get("LaunchTemplateId") else "LaunchTemplateName"
        spec = {key: own[key], **({"Version": own["Version"]} if own.get("Version") else {})}
    return {**override, "LaunchTemplateSpecification": spec}
