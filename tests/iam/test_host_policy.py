"""The hosts' role: the stack's HostPolicy (output HostPolicyArn) grants what a host does, and the
README lists the same. Operators attach it with AmazonSSMManagedInstanceCore."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from localcloud.aws import permissions
from localcloud.aws.host_role import host_secrets_policy
from tests.iam.test_iam_coverage import _arn, allowed, policy_statements

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"
LOG_GROUP = "CommandLogGroup"  # tests name every physical resource after its logical id

# What the SSM agent does to send a command's output to CloudWatch Logs (amazon-ssm-agent's
# CloudWatch publisher: the group must exist, then the stream is found or created, then written),
# and what the boot script and the agent do with the instance role.
HOST_CALLS = [
    ("logs:DescribeLogGroups", "*"),
    ("logs:DescribeLogStreams", _arn("logs", f"log-group:{LOG_GROUP}:*")),
    ("logs:CreateLogStream", _arn("logs", f"log-group:{LOG_GROUP}:log-stream:c-1/i-1/swap/stdout")),
    ("logs:PutLogEvents", _arn("logs", f"log-group:{LOG_GROUP}:log-stream:c-1/i-1/swap/stdout")),
    ("ssm:GetDocument", _arn("ssm", "document/SwapDocument")),
    ("ssm:GetParameter", _arn("ssm", "parameter/deployer/web/release")),
    ("ecr:GetAuthorizationToken", "*"),
    ("ecr:BatchGetImage", _arn("ecr", "repository/team/web")),
    ("ecr:GetDownloadUrlForLayer", _arn("ecr", "repository/team/web")),
    ("cloudwatch:PutMetricData", "*"),
]


def test_the_host_policy_allows_the_ssm_agents_command_output_and_the_boot(template: dict[str, Any]) -> None:
    # Given the stack's host policy
    statements = policy_statements(template, "HostPolicy")

    # Then every call a host makes is allowed, on the stack's resources only
    denied = [f"{action} on {r}" for action, r in HOST_CALLS if not allowed(statements, action, r)]
    assert denied == []
    assert not allowed(statements, "logs:PutLogEvents", _arn("logs", "log-group:/other:log-stream:s"))
    assert not allowed(statements, "logs:CreateLogGroup", _arn("logs", f"log-group:{LOG_GROUP}:*"))
    assert not allowed(statements, "ssm:GetParameter", _arn("ssm", "parameter/other/web/release"))
    # and metrics only in the proxy's namespace
    assert allowed(statements, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Deployer/Proxy"})
    assert not allowed(statements, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "AWS/EC2"})


def test_the_readme_lists_every_action_of_the_host_policy(template: dict[str, Any]) -> None:
    # Given the README's host requirements and the host policy's actions
    text = README.read_text()
    section = text[text.index("What the hosts need"):text.index("The stack's outputs name")]
    actions = {a for s in policy_statements(template, "HostPolicy") for a in s["Action"]}

    # Then the README names each of them, and the policy's output
    missing = sorted(a for a in actions if not re.search(re.escape(a.split(":")[1]), section))
    assert missing == []
    assert "HostPolicyArn" in section


def test_the_readmes_secrets_grant_is_the_one_the_local_cloud_attaches() -> None:
    # Given the README's example policy for an app's pinned parameter and secret
    text = README.read_text()
    section = text[text.index("What the hosts need"):text.index("The stack's outputs name")]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]

    # When the local cloud's helper builds the grant for the same names
    built = host_secrets_policy("REGION", "ACCOUNT", ["/web/db-password"], ["web/db"])

    # Then both grant the same actions on the same resources
    def grants(document: dict[str, Any]) -> list[tuple[str, list[str]]]:
        return [(s["Action"], permissions.as_list(s["Resource"])) for s in document["Statement"]]

    assert grants(example) == grants(built)
