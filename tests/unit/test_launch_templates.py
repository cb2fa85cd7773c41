"""Launch-template versions per release and the group on an explicit version number."""

from __future__ import annotations

import base64
from typing import Any

import boto3
import pytest
from deployer import controller
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


def _operator_version(fleet: Any, user_data: bytes) -> None:
    """The operator's version 2 (their own user data), the group on it."""
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_launch_template_version(
        LaunchTemplateId=fleet.template_id,
        SourceVersion="1",
        LaunchTemplateData={"UserData": base64.b64encode(user_data).decode()},
    )
    boto3.client("autoscaling", region_name=REGION).update_auto_scaling_group(
        AutoScalingGroupName=GROUP, LaunchTemplate={"LaunchTemplateId": fleet.template_id, "Version": "2"}
    )


def _parts(user_data: str) -> list[tuple[str, str | None, str]]:
    import email  # noqa: PLC0415

    message = email.message_from_string(user_data)
    assert message.get_content_type() == "multipart/mixed"
    return [
        (p.get_content_type(), p.get_filename(), str(p.get_payload()))
        for p in message.walk()
        if not p.is_multipart()
    ]


OPERATOR_USER_DATA = b"#!/bin/bash\napt-get install -y docker.io nginx nftables awscli\n"


def test_a_release_version_keeps_the_operators_user_data_and_adds_the_boot_part_after_it(
    registered_app: Any, deps: Any, fleet: Any, load_event: Any, aws: Any
) -> None:
    # Given the group on a version whose user data is the operator's install script
    _operator_version(fleet, OPERATOR_USER_DATA)

    # When a push deploys and succeeds, and a second push deploys after it
    assert push(deps, load_event) == ["started"]
    first = deps.launch_templates.user_data(fleet.template_id, int(group_spec()["Version"]))
    command_id = deps.releases.get("web", 1).command_id
    aws.command(command_id, "Success", completed=len(aws.targets(command_id)))
    controller.converge(deps, "web")
    event = load_event("ecr_image_push")
    event["id"] = "00000000-0000-4000-8000-000000000002"
    event["detail"]["image-digest"] = "sha256:" + "2" * 64
    assert accept_push(deps, parse_push_event(event)).results[0].action.value == "started"
    second = deps.launch_templates.user_data(fleet.template_id, int(group_spec()["Version"]))

    # Then the version the group boots runs the operator's script verbatim, then the boot part
    parts = _parts(first or "")
    assert parts[0] == ("text/plain", "operator-user-data", OPERATOR_USER_DATA.decode())
    assert parts[1][:2] == ("text/x-shellscript", "zz-deployer-boot.sh")
    assert "agent.py boot" in parts[1][2]
    assert "--release=1" in parts[1][2]
    # and the version made from that release's version carries the operator's part once
    again = _parts(second or "")
    assert len(again) == 2
    assert again[0] == parts[0]
    assert "--release=2" in again[1][2]


def test_a_group_whose_version_has_no_user_data_boots_the_boot_script_alone(
    registered_app: Any, deps: Any, fleet: Any, load_event: Any
) -> None:
    # Given the group on version 1, which has no user data
    # When a push deploys
    assert push(deps, load_event) == ["started"]

    # Then the new version's user data is the boot script itself, which checks its tools first
    user_data = deps.launch_templates.user_data(fleet.template_id, int(group_spec()["Version"])) or ""
    assert user_data.startswith("#!/bin/sh\n# deployer: web release 1 ")
    assert "mime-version" not in user_data.lower()
    assert "for c in aws python3; do command -v" in user_data


def test_user_data_over_ec2s_limit_fails_the_start_naming_the_sizes_and_leaves_the_group(
    registered_app: Any, deps: Any, fleet: Any, load_event: Any
) -> None:
    # Given operator user data that leaves no room for the boot part under EC2's 16 KB
    _operator_version(fleet, b"#!/bin/bash\n" + b"# padding\n" * 1630)

    # When a push deploys
    actions = push(deps, load_event)

    # Then the release fails, saying why, and the group stays on the operator's version
    assert actions == ["failed"]
    release = deps.releases.get("web", 1)
    assert release.status is ReleaseStatus.FAILED
    assert "EC2 allows 16384 before base64" in (release.status_reason or "")
    assert group_spec()["Version"] == "2"
    assert version_numbers(fleet.template_id) == [1, 2]


def test_the_boot_script_stops_with_one_line_naming_the_tools_the_host_lacks(tmp_path: Any) -> None:
    # Given a boot script, and a host whose PATH has python3 but no AWS CLI
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from deployer import builders  # noqa: PLC0415

    config = AppConfig.parse({**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0"})
    release = make_release(1)
    script = builders.user_data(config, release, "deployer-SwapDocument", "/deployer/web/release", REGION)
    (tmp_path / "python3").symlink_to(sys.executable)

    # When it runs
    done = subprocess.run(
        ["/bin/sh", "-c", script], env={"PATH": str(tmp_path)}, capture_output=True, text=True, check=False
    )

    # Then it fails before doing anything, with one line that names the AWS CLI
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "deployer boot: missing on this host: aws (bake it into the AMI or install it in the launch "
        "template's user data; README, What the hosts need)"
    ]
