"""IAM coverage: every AWS operation a function performs in its scenarios is allowed by that
function's policies in template.yaml, on the resource it touched.

Operations are recorded with a botocore event hook (`aws_calls` fixture), mapped to the IAM
action and resource ARN, and checked against the function's statements (its `Policies`:
in-stack managed policies by Ref, or inline statements). Conditions are not evaluated.

To cover a new function, add a row to SCENARIOS: logical id -> a callable that drives the
function through its paths (it receives the `World` fixture below).
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from deployer.models.config import AppConfig

from functions.on_image_push.app import handler as on_image_push
from localcloud.moto_gaps import MotoGaps
from tests.conftest import ACCOUNT, REGION, CallRecorder
from tests.lifecycle.iam_scenarios import (
    EXPECTED_OPERATIONS,
    LIFECYCLE_SCENARIOS,
    FakeContext,
    lifecycle,
    push,
    push_event,
    put_image,
    run_failing,
    succeed,
)

pytestmark = pytest.mark.unit

PARTITION = "aws"
STACK = "deployer"


@dataclass
class World:
    deps: Any
    config: AppConfig
    load_event: Callable[[str], dict[str, Any]]
    template: dict[str, Any]
    gaps: MotoGaps  # moto's gaps, filled by the `aws` fixture: scenarios drive SSM outcomes with it


def drive_on_image_push(world: World) -> None:
    """Started deploy (pruning old release versions, "started" notice published), duplicate
    delivery, unknown repository, bad input; then a redelivered push whose deploy's command has
    failed, so its converge ends that release (command counts, per-host StatusDetails, host
    outcomes for the notice) and rolls back (the target's image in ECR)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    for number in range(1, 13):
        ec2.create_launch_template_version(
            LaunchTemplateId=world.config.launch_template,
            SourceVersion="1",
            LaunchTemplateData={},
            VersionDescription=f"{world.config.app} release {number} sha256:{number:064x}",
        )
    with lifecycle(world) as shim:
        event = world.load_event("ecr_image_push")
        on_image_push(event, FakeContext())
        on_image_push(event, FakeContext())
        first = world.deps.releases.get(world.config.app, 1)
        put_image(world, first.digest, first.tag or "v1.4.2")
        succeed(world, shim, first)
        second = push(world, 2, "v2")
        run_failing(world, shim, second)
        # ECR redelivers release 2's push (its first delivery was admitted, then the
        # invocation died): the replay converges, and finds release 2's command failed
        on_image_push(push_event(world, 2, "v2"), FakeContext())
        other = copy.deepcopy(event)
        other["detail"]["repository-name"] = "team/other"
        on_image_push(other, FakeContext())
        on_image_push({"detail-type": "nope"}, FakeContext())


SCENARIOS: dict[str, Callable[[World], None]] = {
    "OnImagePushFunction": drive_on_image_push,
    **LIFECYCLE_SCENARIOS,
}


# ------------------------------------------------------------------ template → statements
def _substitutions(template: dict[str, Any]) -> dict[str, str]:
    subs = {
        "AWS::Partition": PARTITION,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": STACK,
    }
    for name, parameter in template.get("Parameters", {}).items():
        subs[name] = str(parameter.get("Default", name))
    for name, resource in template["Resources"].items():
        subs[name] = name  # tests name every physical resource after its logical id
        if resource["Type"] == "AWS::DynamoDB::Table":
            subs[f"{name}.Arn"] = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        if resource["Type"] == "AWS::SQS::Queue":
            subs[f"{name}.Arn"] = f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}"
        if resource["Type"] == "AWS::SNS::Topic":
            subs[name] = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}"
        if resource["Type"] == "AWS::KMS::Key":
            subs[f"{name}.Arn"] = _arn("kms", f"key/{name}")
        if resource["Type"] == "AWS::Logs::LogGroup":
            subs[f"{name}.Arn"] = _arn("logs", f"log-group:{name}:*")
    return subs


def _resolve(value: Any, subs: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return subs[value["Ref"]]
    if "Fn::GetAtt" in value:
        return subs[".".join(value["Fn::GetAtt"])]
    if "Fn::Sub" in value:
        text = value["Fn::Sub"]
        return re.sub(r"\$\{([^}]+)\}", lambda m: subs[m.group(1)], text)
    raise AssertionError(f"cannot resolve {value!r}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def function_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    resources = template["Resources"]
    documents = []
    for policy in resources[function]["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Ref" in policy:
            documents.append(resources[policy["Ref"]]["Properties"]["PolicyDocument"])
        elif isinstance(policy, dict) and "Statement" in policy:
            documents.append(policy)
        else:
            raise AssertionError(f"{function}: policy {policy!r} is not a statement list or in-stack policy")
    return document_statements(template, documents)


def policy_statements(template: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    """The statements of one in-stack managed policy (e.g. HostPolicy), resolved."""
    return document_statements(template, [template["Resources"][policy]["Properties"]["PolicyDocument"]])


def document_statements(template: dict[str, Any], documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    subs = _substitutions(template)
    statements: list[dict[str, Any]] = []
    for document in documents:
        for statement in document["Statement"]:
            actions = _as_list(statement["Action"])
            raw = _as_list(statement["Resource"])
            statements.append(
                {
                    "Effect": statement["Effect"],
                    "Action": actions,
                    "Resource": [_resolve(r, subs) for r in raw],
                }
            )
    return statements


# ------------------------------------------------------------------ operation → action, ARNs
def _arn(service: str, resource: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def required(service: str, operation: str, params: dict[str, Any]) -> tuple[str, list[str]]:
    """The IAM action and resource ARNs one recorded operation needs."""
    action = f"{service}:{operation}"
    if operation.startswith(("Describe", "List")) and service in {"ec2", "autoscaling", "ssm"}:
        return action, ["*"]
    if service == "dynamodb":
        table = _arn("dynamodb", f"table/{params['TableName']}")
        return action, [f"{table}/index/{params['IndexName']}" if "IndexName" in params else table]
    if service == "ssm" and operation in {
        "GetParameter",
        "PutParameter",
        "DeleteParameter",
        "GetParameterHistory",
    }:
        return action, [_arn("ssm", f"parameter/{params['Name'].lstrip('/')}")]
    if service == "ssm" and operation == "SendCommand":
        instances = [_arn("ec2", f"instance/{i}") for i in params.get("InstanceIds", [])] or [
            _arn("ec2", "instance/*")
        ]
        return action, [_arn("ssm", f"document/{params['DocumentName']}"), *instances]
    if service == "ec2" and operation in {"CreateLaunchTemplateVersion", "DeleteLaunchTemplateVersions"}:
        return action, [_arn("ec2", f"launch-template/{params['LaunchTemplateId']}")]
    if service == "ssm" and operation in {"GetCommandInvocation", "CancelCommand"}:
        # Neither has a resource type in the IAM service authorization reference.
        return action, ["*"]
    if service == "ecr" and operation == "DescribeImages":
        return action, [_arn("ecr", f"repository/{params['repositoryName']}")]
    if service == "sns" and operation == "Publish":
        return action, [params["TopicArn"]]
    if service == "sqs" and operation == "SendMessage":
        return action, [_arn("sqs", params["QueueUrl"].rsplit("/", 1)[-1])]
    if service == "autoscaling" and operation in {
        "UpdateAutoScalingGroup",
        "CompleteLifecycleAction",
        "RecordLifecycleActionHeartbeat",
    }:
        name = params["AutoScalingGroupName"]
        uuid = "00000000-0000-0000-0000-000000000000"
        return action, [_arn("autoscaling", f"autoScalingGroup:{uuid}:autoScalingGroupName/{name}")]
    raise AssertionError(f"no resource mapping for {action}: add one to tests/iam/test_iam_coverage.py")


# The item actions of a TransactWriteItems request and the IAM action each is authorized as
# (DynamoDB developer guide, "Using IAM with DynamoDB transactions"): there is no permission for
# the transaction itself, only for every action it contains, on that action's table.
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def requirements(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (IAM action, resource ARN) one recorded operation needs."""
    if service == "dynamodb" and operation == "TransactWriteItems":
        needed = []
        for item in params["TransactItems"]:
            for kind, request in item.items():
                table = _arn("dynamodb", f"table/{request['TableName']}")
                needed.append((f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table))
        return needed
    action, resources = required(service, operation, params)
    return [(action, resource) for resource in resources]


def implied(
    template: dict[str, Any], service: str, operation: str, params: dict[str, Any]
) -> list[tuple[str, str]]:
    """What AWS also authorises as the caller of one operation: publishing to a topic encrypted
    with a customer-managed key makes SNS generate and decrypt a data key with the caller's
    permissions (moto does not model this, so the template says which key)."""
    if service != "sns" or operation != "Publish":
        return []
    topic = template["Resources"].get(params["TopicArn"].rsplit(":", 1)[-1], {})
    key = topic.get("Properties", {}).get("KmsMasterKeyId")
    if key is None:
        return []
    if isinstance(key, str):
        # alias/aws/sns: the AWS-managed key's own policy admits the account's principals
        assert key.startswith("alias/aws/"), f"topic key {key!r} is neither managed nor in the stack"
        return []
    arn = _resolve(key, _substitutions(template))
    return [("kms:GenerateDataKey", arn), ("kms:Decrypt", arn)]


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    return any(
        s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in s["Action"])
        and any(r == "*" or fnmatch.fnmatchcase(resource, r) for r in s["Resource"])
        for s in statements
    )


# ------------------------------------------------------------------ the test
@pytest.mark.parametrize("function", sorted(SCENARIOS))
def test_every_aws_operation_of_the_function_is_allowed_by_its_policy(
    function: str,
    template: dict[str, Any],
    lambda_env: Any,
    deps: Any,
    registered_app: Any,
    load_event: Any,
    aws_calls: CallRecorder,
    aws: MotoGaps,
) -> None:
    # Given the function's statements in template.yaml
    statements = function_statements(template, function)

    # When its scenarios run, with every AWS operation recorded
    SCENARIOS[function](World(deps, registered_app, load_event, template, aws))

    # Then operations were made, and each is allowed on the resource it touched
    expected = EXPECTED_OPERATIONS.get(
        function, {"SendCommand", "CreateLaunchTemplateVersion", "DeleteLaunchTemplateVersions", "PutItem"}
    )
    assert expected <= {c.operation for c in aws_calls.calls}
    denied = []
    for call in aws_calls.calls:
        needed = requirements(call.service, call.operation, call.params)
        denied += [f"{action} on {r}" for action, r in needed if not allowed(statements, action, r)]
        for action, resource in implied(template, call.service, call.operation, call.params):
            denied += [] if allowed(statements, action, resource) else [f"{action} on {resource}"]
    assert denied == [], f"{function} would get AccessDenied for: {sorted(set(denied))}"


def test_the_checker_reports_an_operation_the_policy_does_not_allow(template: dict[str, Any]) -> None:
    # Given the push function's statements
    statements = function_statements(template, "OnImagePushFunction")

    # Then deleting a table, or writing a parameter outside the prefix, is not allowed
    action, resources = required("dynamodb", "DeleteTable", {"TableName": "ReleasesTable"})
    assert not allowed(statements, action, resources[0])
    action, resources = required("ssm", "PutParameter", {"Name": "/other/web/release"})
    assert not allowed(statements, action, resources[0])
    action, resources = required("ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript"})
    assert not allowed(statements, action, resources[0])
    # and a transaction is authorized per contained action, on that action's own table
    transaction = {
        "TransactItems": [
            {"Put": {"TableName": "ReleasesTable", "Item": {}}},
            {"Update": {"TableName": "AppsTable", "Key": {}, "UpdateExpression": "SET a = :a"}},
        ]
    }
    needed = requirements("dynamodb", "TransactWriteItems", transaction)
    assert needed == [
        ("dynamodb:PutItem", f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/ReleasesTable"),
        ("dynamodb:UpdateItem", f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/AppsTable"),
    ]
    assert allowed(statements, *needed[0])
    assert not allowed(statements, *needed[1])


def test_the_checker_requires_the_topic_key_for_a_publish_to_the_encrypted_topic(
    template: dict[str, Any],
) -> None:
    # Given the status function's statements, and the same without the notification key's statement
    full = function_statements(template, "OnCommandStatusFunction")
    stripped = copy.deepcopy(template)
    document = stripped["Resources"]["NotifyPolicy"]["Properties"]["PolicyDocument"]
    document["Statement"] = [s for s in document["Statement"] if "kms:" not in str(s["Action"])]
    without_key = function_statements(stripped, "OnCommandStatusFunction")

    # When a publish to the topic is checked
    topic = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:DeployNotificationsTopic"
    needs = implied(template, "sns", "Publish", {"TopicArn": topic})

    # Then it needs the key, which the full policy grants and the stripped one does not
    assert {action for action, _ in needs} == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert all(allowed(full, action, resource) for action, resource in needs)
    assert not any(allowed(without_key, action, resource) for action, resource in needs)
