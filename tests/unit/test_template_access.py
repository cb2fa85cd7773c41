"""Who may use what, read from the deployable template: the notifications key lets CloudWatch
alarms publish, and the functions pass only the hosts' roles, only to EC2."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ACCOUNT = "123456789012"


def _sub(value: Any, template: dict[str, Any], partition: str = "aws") -> str:
    """A `!Sub` string with the pseudo parameters and the parameters' defaults filled in."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    names = {"AWS::Partition": partition, "AWS::AccountId": ACCOUNT}
    names.update({k: str(p.get("Default", "")) for k, p in template["Parameters"].items()})
    return re.sub(r"\$\{([^}]+)\}", lambda m: names[m.group(1)], text)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _key_of_topic(template: dict[str, Any], topic: str) -> str:
    key = template["Resources"][topic]["Properties"]["KmsMasterKeyId"]
    assert isinstance(key, dict), f"{topic} is encrypted with {key!r}, not with a key of this stack"
    logical = key["Fn::GetAtt"][0] if "Fn::GetAtt" in key else key["Ref"]
    return str(logical)


def _statement(template: dict[str, Any], policy: str, sid: str) -> dict[str, Any]:
    document = template["Resources"][policy]["Properties"]["PolicyDocument"]
    found = [s for s in document["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1, f"{policy} has no single statement {sid}"
    return dict(found[0])


def _allows(patterns: list[str], value: str) -> bool:
    # IAM and key-policy wildcards: * and ? match any characters, "/" included (like fnmatch).
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def test_the_notifications_topic_is_encrypted_with_a_rotated_customer_managed_key(
        template: dict[str, Any]) -> None:
    # Given the topic every alarm and function notifies through
    key = _key_of_topic(template, "DeployNotificationsTopic")
    # Then its key is a KMS key of this stack (not the AWS-managed alias/aws/sns), rotated,
    resource = template["Resources"][key]
    assert resource["Type"] == "AWS::KMS::Key"
    assert resource["Properties"]["EnableKeyRotation"] is True
    # named by an alias, and administered by the account (so IAM policies can grant its use)
    aliases = [r for r in template["Resources"].values()
               if r["Type"] == "AWS::KMS::Alias" and r["Properties"]["TargetKeyId"] == {"Ref": key}]
    assert len(aliases) == 1
    admin = [s for s in resource["Properties"]["KeyPolicy"]["Statement"]
             if _sub(s["Principal"].get("AWS", ""), template) == f"arn:aws:iam::{ACCOUNT}:root"]
    assert len(admin) == 1
    assert admin[0]["Effect"] == "Allow"
    assert admin[0]["Action"] == "kms:*"


def test_the_notifications_key_lets_this_accounts_cloudwatch_alarms_publish(
        template: dict[str, Any]) -> None:
    # Given the key policy of the topic's key
    key = _key_of_topic(template, "DeployNotificationsTopic")
    statements = template["Resources"][key]["Properties"]["KeyPolicy"]["Statement"]
    # When the statements granted to the CloudWatch service principal are read
    granted = [s for s in statements if s["Effect"] == "Allow"
               and "cloudwatch.amazonaws.com" in _list(s["Principal"].get("Service", []))]
    # Then CloudWatch may make and open data keys, the two calls SNS makes for an alarm's publish,
    assert len(granted) == 1
    actions = [str(a) for a in _list(granted[0]["Action"])]
    for needed in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert _allows(actions, needed), needed
    assert not _allows(actions, "kms:Encrypt")
    assert not _allows(actions, "kms:PutKeyPolicy")
    # only on behalf of this account's alarms (no confused deputy)
    assert granted[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_the_functions_that_publish_may_use_the_notifications_key(template: dict[str, Any]) -> None:
    # Given the key and every function allowed to publish to the topic
    key = _key_of_topic(template, "DeployNotificationsTopic")
    resources = template["Resources"]
    publishers = [lid for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"
                  and {"Ref": "NotifyPolicy"} in r["Properties"].get("Policies", [])]
    assert publishers
    # Then the policy that lets them publish also lets them use that key, and no other
    statements = resources["NotifyPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    on_key = [s for s in statements if s["Resource"] == {"Fn::GetAtt": [key, "Arn"]}]
    assert len(on_key) == 1
    assert set(_list(on_key[0]["Action"])) == {"kms:GenerateDataKey", "kms:Decrypt"}


def test_host_roles_may_be_passed_to_ec2_under_either_of_its_service_principals(
        template: dict[str, Any]) -> None:
    # Given the statement that lets a rollout pass the hosts' role
    statement = _statement(template, "RolloutPolicy", "PassHostRole")
    # Then it is limited to EC2, whose principal has a .cn form in the China regions
    assert statement["Action"] == "iam:PassRole"
    services = set(_list(statement["Condition"]["StringEquals"]["iam:PassedToService"]))
    assert services == {"ec2.amazonaws.com", "ec2.amazonaws.com.cn"}
    assert list(statement["Condition"]) == ["StringEquals"]


@pytest.mark.parametrize("partition", ["aws", "aws-cn"])
@pytest.mark.parametrize(
    ("role", "passable"),
    [
        ("role/deployer-host", True),
        ("role/deployer-host-web", True),
        ("role/fleet/deployer-host-web", True),
        ("role/org/fleet/deployer-host-web", True),
        ("role/admin", False),
        ("role/fleet/admin", False),
        ("role/my-deployer-host-web", False),
        ("role/fleet/my-deployer-host-web", False),
        ("instance-profile/deployer-host-web", False),
    ],
)
def test_host_roles_are_passable_with_or_without_a_path_and_other_roles_are_not(
        template: dict[str, Any], partition: str, role: str, passable: bool) -> None:
    # Given the PassRole resources, resolved for the partition with the default HostRolePrefix
    statement = _statement(template, "RolloutPolicy", "PassHostRole")
    patterns = [_sub(r, template, partition) for r in _list(statement["Resource"])]
    assert template["Parameters"]["HostRolePrefix"]["Default"] == "deployer-host"
    # When an ARN in this account is matched against them
    arn = f"arn:{partition}:iam::{ACCOUNT}:{role}"
    # Then only roles named with the prefix match, whatever their path
    assert _allows(patterns, arn) is passable
    assert not _allows(patterns, f"arn:{partition}:iam::210987654321:{role}")
