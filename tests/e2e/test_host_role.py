"""The hosts' own AWS calls in the local cloud run under the hosts' role as the README documents
it (`localcloud.aws.host_gate`): the boot script's and the agent's AWS CLI calls reach moto only
when the role allows them, and a host whose role lacks a grant fails as it would on AWS."""

from __future__ import annotations

import datetime
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud.aws.host_role import HOST_ROLE
from localcloud.cloud import LocalCloud
from tests.e2e.conftest import boot_fleet

pytestmark = pytest.mark.e2e

APP = "roles"


@pytest.fixture(scope="module")
def booted(cloud: LocalCloud) -> list[str]:
    """One host booted on v1 of the app under the documented role; its instance ids."""
    boot_fleet(cloud, APP, 1, max_concurrency="100%", max_errors="0")
    assert cloud.fleet is not None
    return [h.instance_id for h in cloud.fleet.live(f"{APP}-asg")]


@pytest.fixture
def without_get_document(cloud: LocalCloud) -> Iterator[None]:
    """The hosts' role with the stack's HostPolicy but ssm:GetDocument, and without
    AmazonSSMManagedInstanceCore (which grants it on *); restored afterwards."""
    iam = cloud.moto.client("iam")
    policies = iam.list_attached_role_policies(RoleName=HOST_ROLE)["AttachedPolicies"]
    attached = [p["PolicyArn"] for p in policies]
    host_policy = next(a for a in attached if "HostPolicy" in a)
    version = iam.get_policy(PolicyArn=host_policy)["Policy"]["DefaultVersionId"]
    held: Any = iam.get_policy_version(PolicyArn=host_policy, VersionId=version)["PolicyVersion"]["Document"]
    document = held if isinstance(held, dict) else json.loads(urllib.parse.unquote(held))
    kept = [s for s in document["Statement"] if s["Action"] != "ssm:GetDocument"]
    for arn in attached:
        iam.detach_role_policy(RoleName=HOST_ROLE, PolicyArn=arn)
    lacking = json.dumps({**document, "Statement": kept})
    iam.put_role_policy(RoleName=HOST_ROLE, PolicyName="no-get-document", PolicyDocument=lacking)
    try:
        yield
    finally:
        iam.delete_role_policy(RoleName=HOST_ROLE, PolicyName="no-get-document")
        for arn in attached:
            iam.attach_role_policy(RoleName=HOST_ROLE, PolicyArn=arn)


def test_a_host_boots_through_the_gate_and_its_role_allows_every_call(
    cloud: LocalCloud, booted: list[str]
) -> None:
    # Given a host booted on the app's first release, under the documented role
    [instance] = booted
    assert cloud.gate is not None

    # Then its boot read the agent and the pointer through the gate, each call allowed
    calls = [line for line in cloud.gate.allowed if line.startswith(f"host {instance}: ")]
    assert {"ssm:GetDocument", "ssm:GetParameter"} <= {line.split(": ", 1)[1] for line in calls}
    assert [line for line in cloud.denied() if instance in line] == []
    # and it runs the release (the reads were answered as moto holds them)
    assert cloud.host_releases(APP) == {instance: 1}


def test_a_booted_hosts_meter_sends_its_proxy_metrics_through_the_gate(
    cloud: LocalCloud, booted: list[str]
) -> None:
    # Given a host booted on the app's first release (its boot started the app's meter)
    [instance] = booted
    assert cloud.fleet is not None
    assert cloud.gate is not None
    sandbox = cloud.fleet.host_for(instance)
    assert sandbox is not None

    # When its proxy answers 7 requests
    for _ in range(7):
        assert sandbox.get("/")[0] == 200

    # Then CloudWatch gets them under release 1 from the meter, under the hosts' role
    cloudwatch = cloud.moto.client("cloudwatch")
    dims = [{"Name": "App", "Value": APP}, {"Name": "Release", "Value": "1"}]
    now = datetime.datetime.now(datetime.UTC)
    minutes = datetime.timedelta(minutes=5)
    window = {"StartTime": now - minutes, "EndTime": now + minutes}

    def requests() -> float:
        answer = cloudwatch.get_metric_statistics(
            Namespace="Deployer/Proxy", MetricName="Requests", Dimensions=dims, Statistics=["Sum"],
            Period=60, **window)
        return float(sum(p["Sum"] for p in answer["Datapoints"]))

    cloud.wait_for(lambda: requests() >= 7, 30, "the meter's Requests")
    assert requests() == 7, sandbox.meter_log(APP)
    assert f"host {instance}: monitoring:PutMetricData" in cloud.gate.allowed
    assert [line for line in cloud.denied() if instance in line] == []


def test_a_host_whose_role_lacks_get_document_fails_its_boot_with_access_denied(
    cloud: LocalCloud, booted: list[str], without_get_document: None
) -> None:
    # Given the app's fleet, and the hosts' role without ssm:GetDocument
    assert cloud.gate is not None
    assert cloud.stack is not None
    document = cloud.stack.outputs["SwapDocumentName"]

    # When the group scales out by one host
    [host] = cloud.scale(APP, len(booted) + 1)
    assert host.booted.wait(300), "the new host's boot did not finish"

    # Then its boot script stops, and its boot log holds AWS's refusal of the document read
    assert host.boot is not None
    assert host.boot.exit_code != 0
    assert "(AccessDeniedException) when calling the GetDocument operation" in host.boot.stderr
    assert f"assumed-role/{HOST_ROLE}/{host.instance_id} is not authorized to perform: ssm:GetDocument" in (
        host.boot.stderr
    )
    # and the local cloud recorded the denial for that host
    denied = f"host {host.instance_id}: ssm:GetDocument on arn:aws:ssm:"
    assert any(line.startswith(denied) and line.endswith(f"document/{document}") for line in cloud.denied())
