"""Least privilege, proven on what gets deployed: the deployable template (build/template.yaml)
expanded by the SAM translator, so the roles SAM generates (its inline policies for destinations
and event sources, the AWS-managed policies it attaches) are checked with ours.

Beside tests/iam/test_iam_coverage.py (every operation performed is granted), these show that
nothing more is granted:
- no `*` action and no service-wide wildcard (`ssm:*`);
- no `Resource: "*"` except for the actions in RESOURCE_STAR, each with its reason (AWS's
  Service Authorization Reference lists no resource type for them);
- ssm:SendCommand only on the swap document and on instances carrying an Auto Scaling group tag;
- iam:PassRole only on the hosts' roles and only to EC2.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from samtranslator.translator.transform import transform

from tests.conftest import read_template

pytestmark = pytest.mark.unit

SAR = "https://docs.aws.amazon.com/service-authorization/latest/reference/"
# Actions that may be granted on "*": AWS defines no resource type for them, so no narrower
# Resource exists (Service Authorization Reference, "Resource types" column empty).
RESOURCE_STAR: dict[str, str] = {
    "ec2:DescribeLaunchTemplates": f"EC2 Describe* actions take no resource ({SAR}list_amazonec2.html)",
    "ec2:DescribeLaunchTemplateVersions":
        f"EC2 Describe* actions take no resource ({SAR}list_amazonec2.html)",
    "autoscaling:DescribeAutoScalingGroups": f"no resource type ({SAR}list_amazonec2autoscaling.html)",
    "ssm:GetCommandInvocation": f"no resource type ({SAR}list_awssystemsmanager.html)",
    "ssm:ListCommands": f"no resource type ({SAR}list_awssystemsmanager.html)",
    "ssm:ListCommandInvocations": f"no resource type ({SAR}list_awssystemsmanager.html)",
    "ssm:DescribeInstanceInformation": f"no resource type ({SAR}list_awssystemsmanager.html)",
    "ssm:CancelCommand":
        f"no resource type; held by the rollback function only ({SAR}list_awssystemsmanager.html)",
    "logs:DescribeLogGroups": "the hosts' SSM agent checks the command log group exists; Run Command's "
        "CloudWatch Logs setup grants it on * (Systems Manager user guide, sysman-rc-setting-up-cwlogs)",
    "ssm:DescribeParameters":
        f"pins a secret's version without its value; no resource type ({SAR}list_awssystemsmanager.html)",
    "cloudwatch:GetMetricData": "the canary analysis reads the hosts' proxy metrics; no resource type "
        f"({SAR}list_amazoncloudwatch.html)",
    "ecr:GetAuthorizationToken":
        f"the hosts' registry login; no resource type ({SAR}list_amazonelasticcontainerregistry.html)",
    "cloudwatch:PutMetricData":
        f"the hosts' proxy metrics; no resource type, held to the namespace Deployer/Proxy by the "
        f"cloudwatch:namespace condition ({SAR}list_amazoncloudwatch.html)",
    "cloudwatch:DescribeAlarms": "the alarm gates read composite alarms too, which DescribeAlarms "
        "returns only to a permission scoped to * (CloudWatch API reference, DescribeAlarms)",
}
# AWS-managed policies SAM attaches to every function role; their text is AWS's, not ours.
AWS_MANAGED: dict[str, str] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole":
        "logs:CreateLogGroup/CreateLogStream/PutLogEvents, how Lambda writes each function's log group",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess":
        "X-Ray trace upload (Tracing: Active); X-Ray actions take no resource "
        f"({SAR}list_awsx-ray.html)",
}
HOST_ROLE_PATTERNS = ("role/${HostRolePrefix}*", "role/*/${HostRolePrefix}*")
EC2_PRINCIPALS = {"ec2.amazonaws.com", "ec2.amazonaws.com.cn"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """A resource ARN as written: the `!Sub` text, or the intrinsic's target in a readable form."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    if "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return "${" + (".".join(target) if isinstance(target, list) else str(target)) + "}"
    if "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    raise AssertionError(f"unexpected resource expression {value!r}")


def deployed_template() -> dict[str, Any]:
    """build/template.yaml as CloudFormation sees it after the SAM transform."""
    template = copy.deepcopy(read_template())
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = "s3://bucket/key"  # what `sam package` puts there

    class _NoManagedPolicyLookups:
        def load(self) -> dict[str, str]:
            return {}

    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        return dict(transform(template, {}, _NoManagedPolicyLookups()))
    finally:
        if saved is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    return deployed_template()


def identity_statements(deployed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, statement) of every identity policy a role of the stack holds."""
    resources = deployed["Resources"]
    for lid, resource in resources.items():
        properties = resource.get("Properties") or {}
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            for statement in properties["PolicyDocument"]["Statement"]:
                yield lid, statement
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies") or []:
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield f"{lid}/{policy['PolicyName']}", statement


def test_the_transform_yields_every_function_role_and_our_policies(deployed: dict[str, Any]) -> None:
    # Guards the other tests from passing on an empty reading
    roles = [lid for lid, r in deployed["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 5, roles
    assert sum(1 for _ in identity_statements(deployed)) >= 20


def test_no_statement_grants_every_action_or_every_action_of_a_service(deployed: dict[str, Any]) -> None:
    # Given every statement of every identity policy in the deployed stack
    # Then no action is "*" or "<service>:*"
    wide = [(where, action) for where, statement in identity_statements(deployed)
            for action in _list(statement.get("Action", []))
            if action == "*" or re.fullmatch(r"[a-z0-9-]+:\*", str(action))]
    assert not wide, wide
    assert all("NotAction" not in s and "NotResource" not in s for _, s in identity_statements(deployed))


def test_only_actions_without_resource_level_permissions_are_granted_on_every_resource(
        deployed: dict[str, Any]) -> None:
    # Given the statements whose Resource is "*"
    on_star = [(where, action) for where, statement in identity_statements(deployed)
               if "*" in _list(statement["Resource"]) for action in _list(statement["Action"])]
    # Then each of their actions is one AWS cannot scope, listed with its reason
    assert on_star, "the template grants no Describe/List action: update RESOURCE_STAR"
    unlisted = [(where, action) for where, action in on_star if action not in RESOURCE_STAR]
    assert not unlisted, f"granted on Resource '*' without a reason in RESOURCE_STAR: {unlisted}"
    # and the allow-list holds nothing the template no longer needs
    assert {action for _, action in on_star} == set(RESOURCE_STAR)


def test_every_aws_managed_policy_on_a_function_role_is_listed_with_its_reason(
        deployed: dict[str, Any]) -> None:
    # Given the managed policies on each role that are not policies of this stack
    attached = {(lid, arn) for lid, r in deployed["Resources"].items() if r["Type"] == "AWS::IAM::Role"
                for arn in r["Properties"].get("ManagedPolicyArns", []) if isinstance(arn, str)}
    # Then each is one AWS_MANAGED explains (SAM attaches them; their text is AWS's)
    unlisted = sorted({arn for _, arn in attached} - set(AWS_MANAGED))
    assert not unlisted, f"AWS-managed policies without a reason: {unlisted}"


def _sendcommand_statements(deployed: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(where, s) for where, s in identity_statements(deployed)
            if any(fnmatch.fnmatchcase("ssm:SendCommand", str(a)) for a in _list(s["Action"]))]


def test_send_command_reaches_only_the_swap_and_task_documents_and_auto_scaling_instances(
        deployed: dict[str, Any]) -> None:
    # Given every statement that grants ssm:SendCommand
    statements = _sendcommand_statements(deployed)
    assert statements
    documents, instances = [], []
    for where, statement in statements:
        assert statement["Effect"] == "Allow"
        for resource in _list(statement["Resource"]):
            text = _text(resource)
            if ":document/" in text:
                documents.append(text)
                # Then the only documents are the stack's swap and release-task documents (no
                # wildcard, no other name)
                ours = (":document/${SwapDocument}", ":document/${TaskDocument}")
                assert text.endswith(ours), (where, text)
                assert "Condition" not in statement or statement["Condition"] == {}, where
            elif ":instance/" in text:
                instances.append(text)
                # and instances only when they carry an Auto Scaling group's tag
                condition = statement.get("Condition") or {}
                keys = {key for test in condition.values() for key in test}
                assert "ssm:resourceTag/aws:autoscaling:groupName" in keys, (where, condition)
            else:
                raise AssertionError(f"{where}: ssm:SendCommand on {text!r}, neither document nor instance")
    assert documents
    assert instances
    # and the two never share a statement, so the tag condition cannot silently cover documents
    for _, statement in statements:
        kinds = {":document/" in _text(r) for r in _list(statement["Resource"])}
        assert len(kinds) == 1


def test_pass_role_is_limited_to_the_hosts_roles_and_to_ec2(deployed: dict[str, Any]) -> None:
    # Given every statement that lets a role be passed
    statements = [(where, s) for where, s in identity_statements(deployed)
                  if any(fnmatch.fnmatchcase("iam:PassRole", str(a)) for a in _list(s["Action"]))]
    assert statements
    for where, statement in statements:
        # Then it names only iam:PassRole,
        assert _list(statement["Action"]) == ["iam:PassRole"], where
        # only roles by the hosts' name prefix,
        for resource in _list(statement["Resource"]):
            text = _text(resource)
            prefix = "arn:${AWS::Partition}:iam::${AWS::AccountId}:"
            assert text.startswith(prefix), (where, text)
            assert text.removeprefix(prefix) in HOST_ROLE_PATTERNS, (where, text)
        # and only to EC2
        condition = statement.get("Condition") or {}
        services = set(_list(condition.get("StringEquals", {}).get("iam:PassedToService", [])))
        assert services, (where, condition)
        assert services <= EC2_PRINCIPALS, (where, condition)


def test_key_policies_grant_kms_star_only_to_the_account_itself(deployed: dict[str, Any]) -> None:
    # A key policy's Resource "*" is the key itself. AWS's default statement gives the account
    # root kms:* so that IAM policies decide; any other principal gets named actions only.
    keys = {lid: r for lid, r in deployed["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    assert keys
    for lid, key in keys.items():
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            actions = _list(statement["Action"])
            principal = statement["Principal"]
            if "kms:*" in actions or "*" in actions:
                root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                assert principal == {"AWS": root}, lid
            else:
                assert "AWS" not in principal or principal["AWS"] != "*", lid
                # a service principal only with a condition that binds it to this account's use
                if "Service" in principal:
                    assert statement.get("Condition"), (lid, statement.get("Sid"))
