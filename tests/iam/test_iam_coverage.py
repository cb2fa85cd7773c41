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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from deployer.models.config import AppConfig

from functions.on_image_push.app import handler as on_image_push
from localcloud.aws import permissions
from localcloud.moto_gaps import MotoGaps
from tests.conftest import ACCOUNT, REGION, CallRecorder
from tests.lifecycle.iam_scenarios import (
    EXPECTED_OPERATIONS,
    LIFECYCLE_SCENARIOS,
    SETUP,
    FakeContext,
    lifecycle,
    push,
    push_event,
    put_image,
    run_failing,
    succeed,
)

pytestmark = pytest.mark.unit

PARTITION = permissions.PARTITION
STACK = "deployer"


@dataclass
class World:
    deps: Any
    config: AppConfig
    load_event: Callable[[str], dict[str, Any]]
    template: dict[str, Any]
    gaps: MotoGaps  # moto's gaps, filled by the `aws` fixture: scenarios drive SSM outcomes with it


def with_secrets(world: World) -> None:
    """Setup: the app names a Parameter Store parameter and a Secrets Manager secret (created
    through the unrecorded SETUP session), so each release pins their versions."""
    SETUP.client("ssm").put_parameter(Name="/web/db-password", Value="s3cret", Type="SecureString")
    SETUP.client("secretsmanager").create_secret(Name="web/api-key", SecretString="k3y")
    world.config = AppConfig.parse(
        {
            **world.config.to_document(),
            "secrets": {"DB_PASSWORD": "ssm:/web/db-password", "API_KEY": "secretsmanager:web/api-key"},
        }
    )
    world.deps.apps.put(world.config)


def drive_on_image_push(world: World) -> None:
    """Started deploy (its secrets' versions pinned, old release versions pruned, "started"
    notice published), duplicate
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
    with_secrets(world)
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


def _pinning(scenario: Callable[[World], None]) -> Callable[[World], None]:
    """A scenario run for an app that names secrets: its releases pin their versions."""

    def run(world: World) -> None:
        with_secrets(world)
        scenario(world)

    return run


SCENARIOS: dict[str, Callable[[World], None]] = {
    "OnImagePushFunction": drive_on_image_push,
    **LIFECYCLE_SCENARIOS,
    # An operator's promote by tag, and the reconciler's missed push, pin secret versions.
    "RollbackFunction": _pinning(LIFECYCLE_SCENARIOS["RollbackFunction"]),
    "ReconcilerFunction": _pinning(LIFECYCLE_SCENARIOS["ReconcilerFunction"]),
}


# ------------------------------------------------------------------ the evaluation
# One evaluation for every harness (localcloud.aws.permissions): the fault suite enforces it on
# every handler call; this test checks the scenarios' recorded calls with it.
def _substitutions(template: dict[str, Any]) -> dict[str, str]:
    return permissions.substitutions(template, REGION, ACCOUNT, STACK)


def _arn(service: str, resource: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return permissions.arn(service, resource, region, account)


def function_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return permissions.document_statements(
        permissions.function_documents(template, function), _substitutions(template)
    )


def policy_statements(template: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    """The statements of one in-stack managed policy (e.g. HostPolicy), resolved."""
    document = template["Resources"][policy]["Properties"]["PolicyDocument"]
    return permissions.document_statements([document], _substitutions(template))


def required(service: str, operation: str, params: dict[str, Any]) -> tuple[str, list[str]]:
    """The IAM action and resource ARNs one recorded operation needs."""
    return permissions.required(service, operation, params, REGION, ACCOUNT)


def requirements(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (IAM action, resource ARN) one recorded operation needs."""
    return permissions.requirements(service, operation, params, REGION, ACCOUNT)


def implied(
    template: dict[str, Any], service: str, operation: str, params: dict[str, Any]
) -> list[tuple[str, str]]:
    return permissions.implied(template, _substitutions(template), service, operation, params)


allowed = permissions.allowed


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
