"""Launch-template versions per release and the group on an explicit version number."""

from __future__ import annotations

import base64
from typing import Any

import boto3
import pytest
from deployer.admission import accept_push
from deployer.errors import LaunchTemplateMismatch
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseStatus
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.launch_templates import LaunchTemplates as LaunchTemplatesResponse

from tests.conftest import GROUP, REGION, SWAP_PARAMETERS, WEB_CONFIG, make_release

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
    parameters = SWAP_PARAMETERS

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


# ------------------------------------------------------------------ old versions are deleted
def version_numbers(template_id: str) -> list[int]:
    ec2 = boto3.client("ec2", region_name=REGION)
    described = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, MaxResults=200)
    return sorted(v["VersionNumber"] for v in described["LaunchTemplateVersions"])


def seed_versions(fleet: Any, count: int, by_hand: frozenset[int] = frozenset()) -> None:
    """Versions 2..count+1 as earlier releases of web made them (or an operator, for `by_hand`)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    for number in range(2, count + 2):
        described = "set by hand" if number in by_hand else f"web release {number} sha256:{number:064x}"
        ec2.create_launch_template_version(
            LaunchTemplateId=fleet.template_id,
            SourceVersion="1",
            LaunchTemplateData={"UserData": base64.b64encode(b"old").decode()},
            VersionDescription=described,
        )
    boto3.client("autoscaling", region_name=REGION).update_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateId": fleet.template_id, "Version": str(count + 1)},
    )


def push(deps: Any, load_event: Any) -> list[str]:
    """Deploy a push through the rollout; returns each app's action."""
    outcome = accept_push(deps, parse_push_event(load_event("ecr_image_push")))
    return [result.action.value for result in outcome.results]


def test_a_deploy_deletes_the_release_versions_nobody_needs(
    registered_app: Any, deps: Any, fleet: Any, load_event: Any
) -> None:
    # Given versions 2-16 made by earlier releases (4 by an operator), the group on 16, the
    # default still 1, and an old succeeded release that hosts retain, on version 3
    seed_versions(fleet, 15, by_hand=frozenset({4}))
    deps.releases.create(
        make_release(3, tag=None, status=ReleaseStatus.SUCCEEDED, launch_template_version=3)
    )

    # When a push deploys (version 17)
    actions = push(deps, load_event)

    # Then the deploy started, and of the versions up to 7 only the default, the retained
    # release's and the operator's are left; the newest 10 (8-17) all stay
    assert actions == ["started"]
    assert version_numbers(fleet.template_id) == [1, 3, 4, *range(8, 18)]


def test_a_failed_cleanup_leaves_the_versions_and_the_deploy_goes_on(
    registered_app: Any, deps: Any, fleet: Any, load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 15 old release versions, and EC2 refusing DeleteLaunchTemplateVersions
    seed_versions(fleet, 15)

    def refuse(self: Any) -> Any:
        raise EC2ClientError("UnauthorizedOperation", "You are not authorized to perform this operation.")

    monkeypatch.setattr(LaunchTemplatesResponse, "delete_launch_template_versions", refuse)

    # When a push deploys
    actions = push(deps, load_event)

    # Then the deploy started and the group is on the new version; nothing was deleted
    assert actions == ["started"]
    assert group_spec()["Version"] == "17"
    assert version_numbers(fleet.template_id) == list(range(1, 18))
