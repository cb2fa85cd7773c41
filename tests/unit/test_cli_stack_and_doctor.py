"""The CLI finds the stack by itself (`--stack`, DEPLOYER_STACK, default `deployer`: one
DescribeStacks, cached per endpoint, profile, region and stack; environment variables win), and
`deployer doctor`'s host-role check names what the role lacks."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import boto3
import pytest
from deployer import cli
from deployer.cli.context import CLI_CONFIG, Context
from deployer.cli.doctor import Doctor
from deployer.cli.stack import OUTPUT_ENV, resolved_environment

from tests.conftest import REGION, CallRecorder

pytestmark = pytest.mark.unit

OUTPUTS = {output: f"value-of-{output}" for output in OUTPUT_ENV}
OUTPUTS["ParameterPrefix"] = "/deployer"


def _stack(name: str = "deployer") -> None:
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in OUTPUTS.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )


def _args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(profile=None, region=REGION, endpoint_url=None, stack=None, **given)


def test_the_cli_reads_the_stacks_outputs_once_and_then_from_its_cache(
    aws: Any, aws_calls: CallRecorder, tmp_path: Any
) -> None:
    # Given the stack "deployer" and an environment with only credentials and the region
    _stack()
    environ = {"XDG_CACHE_HOME": str(tmp_path), "AWS_REGION": REGION}
    session = boto3.session.Session(region_name=REGION)

    # When two commands resolve their settings, and a third has APPS_TABLE set
    first = resolved_environment(_args(), environ, session, None, CLI_CONFIG)
    second = resolved_environment(_args(), environ, session, None, CLI_CONFIG)
    third = resolved_environment(_args(), {**environ, "APPS_TABLE": "mine"}, session, None, CLI_CONFIG)

    # Then each variable comes from its output, DescribeStacks was called once, and a variable
    # set in the environment wins
    assert {name: first[name] for name in OUTPUT_ENV.values()} == {
        name: OUTPUTS[output] for output, name in OUTPUT_ENV.items()
    }
    assert second == first
    assert third["APPS_TABLE"] == "mine"
    assert third["RELEASES_TABLE"] == OUTPUTS["ReleasesTableName"]
    assert [c.operation for c in aws_calls.calls if c.service == "cloudformation"] == [
        "CreateStack",
        "DescribeStacks",
    ]


def test_the_stack_is_named_by_option_then_environment_and_an_unknown_one_is_one_line(
    aws: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stack named "blue" only
    _stack("blue")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for name in OUTPUT_ENV.values():
        monkeypatch.delenv(name, raising=False)
    session = boto3.session.Session(region_name=REGION)

    # When the CLI looks for the default stack, then for DEPLOYER_STACK=blue
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["app", "list"], out=out, err=err)
    found = resolved_environment(_args(), {"DEPLOYER_STACK": "blue"}, session, None, CLI_CONFIG)

    # Then the default stack is refused in one line naming how to choose it, and blue is read
    assert code == 4
    assert err.getvalue().splitlines() == [
        "error: stack deployer not found: name it with --stack or DEPLOYER_STACK, or check the region"
    ]
    assert found["APPS_TABLE"] == OUTPUTS["AppsTableName"]


HOST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "ssm:GetDocument",
            "Resource": f"arn:aws:ssm:{REGION}:123456789012:document/Swap",
        },
        {"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
    ],
}


@pytest.fixture
def managed_policies(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """IAM with AWS's managed policies (before anything starts moto's IAM)."""
    from moto.iam.models import iam_backends  # noqa: PLC0415

    monkeypatch.setattr("moto.iam.models.load_iam_aws_managed_policies", lambda: True)
    iam_backends.reset()


def test_doctor_names_the_action_a_host_role_lacks_and_the_fix(managed_policies: None, fleet: Any) -> None:
    # Given the stack's host policy, and the hosts' role with everything but ssm:GetDocument
    # (AmazonSSMManagedInstanceCore, which also grants it on *, not attached)
    iam = boto3.client("iam", region_name=REGION)
    arn = iam.create_policy(PolicyName="HostPolicy", PolicyDocument=json.dumps(HOST_POLICY))["Policy"]["Arn"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam.create_role(RoleName="deployer-host", AssumeRolePolicyDocument=json.dumps(trust))
    lacking = {**HOST_POLICY, "Statement": HOST_POLICY["Statement"][1:]}
    iam.put_role_policy(RoleName="deployer-host", PolicyName="own", PolicyDocument=json.dumps(lacking))
    iam.create_instance_profile(InstanceProfileName="deployer-host")
    iam.add_role_to_instance_profile(InstanceProfileName="deployer-host", RoleName="deployer-host")
    doctor = Doctor.__new__(Doctor)
    doctor.clients = _Clients()
    doctor.outputs = {"HostPolicyArn": arn}
    doctor.described = {}

    # When the host role is checked, then with the policy attached
    before = doctor._host_role("app web", fleet.template_id, 1)
    iam.attach_role_policy(RoleName="deployer-host", PolicyArn=arn)
    iam.attach_role_policy(
        RoleName="deployer-host", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    )
    after = doctor._host_role("app web", fleet.template_id, 1)

    # Then it fails naming ssm:GetDocument on the document and the fix, and passes once attached
    assert before.status == "fail"
    assert f"lacks ssm:GetDocument on arn:aws:ssm:{REGION}:123456789012:document/Swap" in before.detail
    assert "AmazonSSMManagedInstanceCore is not attached" in before.detail
    assert before.fix.startswith(f"attach the stack's HostPolicy ({arn})")
    assert after.status == "ok"


class _Clients:
    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


__all__ = ["Context"]
