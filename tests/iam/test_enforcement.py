"""The local permission checks (localcloud.aws.permissions): a call made under a function's role
that the role does not allow is refused with the service's own error, and changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localcloud.aws import permissions
from tests.conftest import ACCOUNT, REGION

pytestmark = pytest.mark.unit


@pytest.fixture
def enforce(aws: Any, template: dict[str, Any]) -> Iterator[Any]:
    def install(changed: dict[str, Any] | None = None) -> permissions.Enforcer:
        return permissions.install(permissions.Enforcer(changed or template, REGION, ACCOUNT))

    yield install
    permissions.uninstall()


def test_a_call_the_role_does_not_allow_is_refused_as_aws_refuses_it(
    enforce: Any, template: dict[str, Any]
) -> None:
    # Given the push function's role without the notification grants, and the topic
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="DeployNotificationsTopic")["TopicArn"]
    stripped = copy.deepcopy(template)
    policies = stripped["Resources"]["OnImagePushFunction"]["Properties"]["Policies"]
    policies[:] = [p for p in policies if p != {"Ref": "NotifyPolicy"}]
    enforcer = enforce(stripped)

    # When it publishes, and the harness publishes outside any function
    with enforcer.acting_as("OnImagePushFunction"), pytest.raises(ClientError) as refused:
        sns.publish(TopicArn=topic, Message="started")
    sns.publish(TopicArn=topic, Message="from the harness")

    # Then SNS's own code refuses it, naming the action, the topic and the key it needed
    error = refused.value.response["Error"]
    assert error["Code"] == "AuthorizationError"
    assert f"sns:Publish on {topic}" in error["Message"]
    assert "kms:GenerateDataKey on arn:aws:kms:" in error["Message"]
    assert enforcer.denied


def test_a_call_the_role_allows_goes_through_and_another_functions_grant_does_not_count(
    enforce: Any, settings: Any
) -> None:
    # Given the enforcer with the template as it is
    enforcer = enforce()
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    item = {"app": {"S": "web"}, "release": {"N": "1"}}

    # When the push function writes a release, and the launch function scans the apps table
    with enforcer.acting_as("OnImagePushFunction"):
        dynamodb.put_item(TableName="ReleasesTable", Item=item)
        with pytest.raises(ClientError) as refused:
            dynamodb.scan(TableName="AppsTable")

    # Then the write is there, and the scan (granted to the launch function only) was refused
    assert dynamodb.get_item(TableName="ReleasesTable", Key=item)["Item"] == item
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "dynamodb:Scan on arn:aws:dynamodb:" in refused.value.response["Error"]["Message"]
