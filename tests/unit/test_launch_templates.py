"""Launch-template versions per release and the group on an explicit version number."""

from __future__ import annotations

import base64
from typing import Any

import boto3
import pytest
from deployer.errors import LaunchTemplateMismatch
from deployer.models.config import AppConfig

from tests.conftest import GROUP, REGION, WEB_CONFIG

pytestmark = pytest.mark.unit


def group_spec() -> dict[str, Any]:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0][
        "LaunchTemplate"
    ]


def test_a_group_on_latest_gets_the_next_version_as_an_explicit_number(deps: Any, fleet: Any) -> None:
    # Given a template with two versions (the second without IamInstanceProfile) and the group on $Latest
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_launch_template_version(
        LaunchTemplateId=fleet.template_id,
        LaunchTemplateData={"ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.small"},
    )
    boto3.client("autoscaling", region_name=REGION).update_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateId": fleet.template_id, "Version": "$Latest"},
    )
    config = AppConfig.parse({**WEB_CONFIG, "launch_template": f"{GROUP}-lt"})

    # When a release version is created from what the group uses, and the group is moved
    current = deps.launch_templates.current(config)
    version = deps.launch_templates.create_version(current, "#!/bin/sh\necho hi\n", "web release 1")
    deps.launch_templates.point_group(current, version)

    # Then version 3 copies version 2 (not 1) with the new user data, and the group names "3"
    assert (current.template_id, current.version) == (fleet.template_id, 2)
    assert version == 3
    data = ec2.describe_launch_template_versions(LaunchTemplateId=fleet.template_id, Versions=["3"])[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert data["InstanceType"] == "t3.small"
    assert "IamInstanceProfile" not in data
    assert base64.b64decode(data["UserData"]).decode() == "#!/bin/sh\necho hi\n"
    assert group_spec()["Version"] == "3"
    assert deps.launch_templates.user_data(fleet.template_id, 3) == "#!/bin/sh\necho hi\n"


def test_a_config_naming_another_template_is_refused_with_both_names(deps: Any, fleet: Any) -> None:
    # Given an app config naming a template the group does not use
    config = AppConfig.parse({**WEB_CONFIG, "launch_template": "lt-0000000000000000f"})

    # When the current template is resolved
    with pytest.raises(LaunchTemplateMismatch) as err:
        deps.launch_templates.current(config)

    # Then the error names the group's template and the configured one
    assert fleet.template_id in str(err.value)
    assert "lt-0000000000000000f" in str(err.value)


def test_a_swap_to_explicit_instances_targets_only_them(aws_calls: Any, deps: Any, fleet: Any) -> None:
    # Given the web app and one of the group's instances
    config = AppConfig.parse({**WEB_CONFIG, "launch_template": fleet.template_id})
    parameters = {"app": ["web"]}

    # When the swap is sent to that instance
    target = [fleet.instance_ids[0]]
    command_id = deps.fleet.send_swap_to_instances(config, target, parameters, "new instance")

    # Then the command targets it alone, through our document, with CloudWatch output
    # (moto does not keep CloudWatchOutputConfig: read it from the recorded request)
    ssm = boto3.client("ssm", region_name=REGION)
    command = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert command["InstanceIds"] == [fleet.instance_ids[0]]
    assert command["DocumentName"] == "SwapDocument"
    assert command["MaxConcurrency"] == "1"
    sent = next(c.params for c in aws_calls.calls if c.operation == "SendCommand")
    assert sent["CloudWatchOutputConfig"] == {
        "CloudWatchLogGroupName": "/deployer/test/swap",
        "CloudWatchOutputEnabled": True,
    }
