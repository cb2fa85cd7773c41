"""The hosts' AWS endpoint (localcloud.aws.host_gate): a host's AWS CLI call reaches moto only
when the hosts' role (as IAM holds it) allows it; otherwise the CLI gets AWS's own refusal.

Each test runs the real AWS CLI, as a host does, with a host's credentials and the gate as its
endpoint, against a moto server whose IAM holds the role."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud.aws import permissions
from localcloud.aws.host_gate import HostGate, customer_key_reads, secret_arns
from localcloud.aws.host_role import EC2_TRUST, HOST_ROLE, grant_host_secrets
from localcloud.aws.motoserver import ACCOUNT, REGION, MotoServer
from localcloud.hosts.hostexec import host_path

pytestmark = pytest.mark.unit

INSTANCE = "i-0abc1234def567890"
DOCUMENT_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/SwapDocument"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def gate(moto: MotoServer, tmp_path: Path) -> Iterator[HostGate]:
    iam = moto.client("iam")

    def role() -> permissions.RoleCheck | None:
        try:
            statements = permissions.role_statements(iam, HOST_ROLE)
        except iam.exceptions.NoSuchEntityException:
            return None
        return permissions.RoleCheck(HOST_ROLE, statements, REGION, ACCOUNT)

    secrets = moto.client("secretsmanager")
    implied = customer_key_reads(moto.client("ssm"), secrets, moto.client("kms"))
    log = tmp_path / "host-denied.log"
    g = HostGate(moto.endpoint, role, ACCOUNT, resolve=secret_arns(secrets), implied=implied, log=log).start()
    yield g
    g.stop()
    for policy in iam.list_attached_role_policies(RoleName=HOST_ROLE)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=HOST_ROLE, PolicyArn=policy["PolicyArn"])
        iam.delete_policy(PolicyArn=policy["PolicyArn"])
    for name in iam.list_role_policies(RoleName=HOST_ROLE)["PolicyNames"]:
        iam.delete_role_policy(RoleName=HOST_ROLE, PolicyName=name)
    iam.delete_role(RoleName=HOST_ROLE)


def host_role(moto: MotoServer, template: dict[str, Any], without: str | None = None) -> None:
    """The hosts' role with the stack's HostPolicy (as resolved for this account), less one action."""
    subs = permissions.substitutions(template, REGION, ACCOUNT)
    statements = []
    for s in template["Resources"]["HostPolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        actions = [a for a in permissions.as_list(s["Action"]) if a != without]
        if actions:
            resources = [permissions.resolve(r, subs) for r in permissions.as_list(s["Resource"])]
            condition = {"Condition": s["Condition"]} if "Condition" in s else {}
            statements.append({"Effect": "Allow", "Action": actions, "Resource": resources, **condition})
    iam = moto.client("iam")
    iam.create_role(RoleName=HOST_ROLE, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    policy = iam.create_policy(
        PolicyName="HostPolicy", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements})
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=HOST_ROLE, PolicyArn=policy)


def host_cli(gate: HostGate, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`aws ARGS` as the host INSTANCE runs it: its instance credentials, the gate as endpoint."""
    env = {
        "PATH": host_path(os.environ["PATH"]),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_DEFAULT_REGION": REGION,
        **gate.credentials(INSTANCE),
    }
    return subprocess.run(
        ["aws", *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_host_call_the_role_allows_passes_through_the_gate_unchanged(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the documented host role, and a pointer parameter with two versions
    host_role(moto, template)
    ssm = moto.client("ssm")
    ssm.put_parameter(Name="/deployer/web/release", Value='{"release": 1}', Type="String")
    ssm.put_parameter(Name="/deployer/web/release", Value='{"release": 2}', Type="String", Overwrite=True)

    # When the host reads version 1 of it (a selector IAM does not see)
    proc = host_cli(gate, tmp_path, "ssm", "get-parameter", "--name", "/deployer/web/release:1")

    # Then moto answered it as it stands: version 1's value, nothing refused
    assert proc.returncode == 0, proc.stderr
    parameter = json.loads(proc.stdout)["Parameter"]
    assert (parameter["Value"], parameter["Version"]) == ('{"release": 1}', 1)
    assert gate.denied == []
    assert gate.allowed == [f"host {INSTANCE}: ssm:GetParameter"]


def test_a_host_call_the_role_does_not_allow_gets_awss_access_denied_and_is_recorded(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the host role without ssm:GetDocument, and the swap document
    host_role(moto, template, without="ssm:GetDocument")
    ssm = moto.client("ssm")
    content = {"schemaVersion": "2.2", "description": "swap", "mainSteps": []}
    ssm.create_document(Name="SwapDocument", Content=json.dumps(content), DocumentType="Command")

    # When the host reads the agent from the document, as the boot script does
    proc = host_cli(gate, tmp_path, "ssm", "get-document", "--name", "SwapDocument")

    # Then the CLI gets AWS's refusal, naming the role session, the action and the document
    assert proc.returncode != 0
    assert (
        "An error occurred (AccessDeniedException) when calling the GetDocument operation: "
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{HOST_ROLE}/{INSTANCE} is not authorized to perform: "
        f"ssm:GetDocument on resource: {DOCUMENT_ARN} because no identity-based policy allows the "
        "ssm:GetDocument action"
    ) in proc.stderr
    assert gate.denied == [f"host {INSTANCE}: ssm:GetDocument on {DOCUMENT_ARN}"]
    assert gate.allowed == []
    assert (tmp_path / "host-denied.log").read_text().splitlines() == gate.denied


def test_a_hosts_metrics_pass_in_the_proxy_namespace_and_are_denied_in_any_other(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the documented host role
    host_role(moto, template)
    datum = "MetricName=Requests,Value=3,Unit=Count,Dimensions=[{Name=App,Value=web}]"

    # When the host sends a datum to Deployer/Proxy, as the meter does, and one to another namespace
    sent = host_cli(gate, tmp_path, "cloudwatch", "put-metric-data", "--namespace", "Deployer/Proxy",
                    "--metric-data", datum)
    other = host_cli(gate, tmp_path, "cloudwatch", "put-metric-data", "--namespace", "Billing/Fake",
                     "--metric-data", datum)

    # Then the first reaches CloudWatch; the second is refused (the grant's namespace condition)
    assert sent.returncode == 0, sent.stderr
    assert other.returncode != 0
    listed = moto.client("cloudwatch").list_metrics(MetricName="Requests")["Metrics"]
    assert [m["Namespace"] for m in listed] == ["Deployer/Proxy"]
    assert gate.allowed == [f"host {INSTANCE}: monitoring:PutMetricData"]
    assert gate.denied == [f"host {INSTANCE}: cloudwatch:PutMetricData on *"]


def test_a_host_call_no_mapping_knows_is_refused_in_the_query_protocols_shape(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the documented host role
    host_role(moto, template)

    # When the host makes a call the permission checks have no mapping for (a query protocol)
    proc = host_cli(gate, tmp_path, "sts", "get-caller-identity")

    # Then it is refused with the query protocol's AccessDenied, and the record names the gap
    assert proc.returncode != 0
    assert "An error occurred (AccessDenied) when calling the GetCallerIdentity operation" in proc.stderr
    assert len(gate.denied) == 1
    assert gate.denied[0].startswith(f"host {INSTANCE}: sts:GetCallerIdentity on (unmapped: ")


def test_a_pinned_secret_fetch_is_denied_without_the_grant_and_allowed_with_it(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the documented host role, an app's secret and SecureString parameter, and another secret
    host_role(moto, template)
    secrets = moto.client("secretsmanager")
    secret = secrets.create_secret(Name="web/db", SecretString="s3cret")
    other = secrets.create_secret(Name="web/other", SecretString="not-yours")
    ssm = moto.client("ssm")
    ssm.put_parameter(Name="/web/db-password", Value="p4ss", Type="SecureString")
    fetch_secret = ("secretsmanager", "get-secret-value", "--secret-id", "web/db", "--version-id")
    fetch_parameter = ("ssm", "get-parameter", "--name", "/web/db-password:1", "--with-decryption")

    # When the host fetches them by pinned version before and after the README's grant
    before = [
        host_cli(gate, tmp_path, *fetch_secret, secret["VersionId"]),
        host_cli(gate, tmp_path, *fetch_parameter),
    ]
    grant_host_secrets(moto.client("iam"), parameter_names=["/web/db-password"], secret_names=["web/db"])
    after = [
        host_cli(gate, tmp_path, *fetch_secret, secret["VersionId"]),
        host_cli(gate, tmp_path, *fetch_parameter),
    ]
    partial_arn = other["ARN"].rsplit("-", 1)[0]  # AWS takes a secret's ARN without its suffix
    not_granted = host_cli(gate, tmp_path, "secretsmanager", "get-secret-value", "--secret-id", partial_arn)

    # Then both were refused (on the secret's full ARN and the parameter's), and then answered
    assert [p.returncode != 0 and "(AccessDeniedException)" in p.stderr for p in before] == [True, True]
    assert gate.denied[:2] == [
        f"host {INSTANCE}: secretsmanager:GetSecretValue on {secret['ARN']}",
        f"host {INSTANCE}: ssm:GetParameter on arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/web/db-password",
    ]
    assert [p.returncode for p in after] == [0, 0], [p.stderr for p in after]
    assert json.loads(after[0].stdout)["SecretString"] == "s3cret"
    assert json.loads(after[1].stdout)["Parameter"]["Value"] == "p4ss"
    # and the grant names only the app's secret
    assert not_granted.returncode != 0
    assert gate.denied[2:] == [f"host {INSTANCE}: secretsmanager:GetSecretValue on {other['ARN']}"]


def test_a_secret_under_a_customer_managed_key_also_needs_kms_decrypt_on_that_key(
    moto: MotoServer, gate: HostGate, template: dict[str, Any], tmp_path: Path
) -> None:
    # Given the README's grant on an app's SecureString parameter and secret, both encrypted
    # with a customer-managed key
    host_role(moto, template)
    key = moto.client("kms").create_key(Description="app secrets")["KeyMetadata"]["Arn"]
    moto.client("ssm").put_parameter(Name="/keyed/token", Value="t0ken", Type="SecureString", KeyId=key)
    secret = moto.client("secretsmanager").create_secret(Name="keyed/db", SecretString="k3yed", KmsKeyId=key)
    iam = moto.client("iam")
    grant_host_secrets(iam, parameter_names=["/keyed/token"], secret_names=["keyed/db"])
    version = secret["VersionId"]
    reads = [
        ("ssm", "get-parameter", "--name", "/keyed/token:1", "--with-decryption"),
        ("secretsmanager", "get-secret-value", "--secret-id", "keyed/db", "--version-id", version),
    ]

    # When the host reads them, then again once the grant names the key
    before = [host_cli(gate, tmp_path, *read) for read in reads]
    grant_host_secrets(iam, parameter_names=["/keyed/token"], secret_names=["keyed/db"], key_arns=[key])
    after = [host_cli(gate, tmp_path, *read) for read in reads]

    # Then both were refused for kms:Decrypt on the key, and then answered
    assert [p.returncode != 0 for p in before] == [True, True]
    assert gate.denied == [f"host {INSTANCE}: kms:Decrypt on {key}"] * 2
    assert [p.returncode for p in after] == [0, 0], [p.stderr for p in after]
    assert json.loads(after[0].stdout)["Parameter"]["Value"] == "t0ken"
    assert json.loads(after[1].stdout)["SecretString"] == "k3yed"


def test_granting_host_secrets_refuses_a_wildcard_name_and_changes_nothing(
    moto: MotoServer, gate: HostGate, template: dict[str, Any]
) -> None:
    # Given the documented host role
    host_role(moto, template)
    iam = moto.client("iam")

    # When a secret name with a wildcard is granted
    with pytest.raises(ValueError, match="secret_names: 'web/\\*'") as refused:
        grant_host_secrets(iam, parameter_names=["/web/db-password"], secret_names=["web/*"])

    # Then the error names the field, and the role has no inline policy
    assert "no wildcards" in str(refused.value)
    assert iam.list_role_policies(RoleName=HOST_ROLE)["PolicyNames"] == []


def test_an_unsigned_request_is_refused_and_reaches_nothing(
    moto: MotoServer, gate: HostGate, template: dict[str, Any]
) -> None:
    # Given the documented host role
    host_role(moto, template)

    # When a request without a signature asks SSM to write a parameter
    body = json.dumps({"Name": "/unsigned/probe", "Value": "x", "Type": "String"}).encode()
    request = urllib.request.Request(
        gate.endpoint + "/",
        data=body,
        headers={"X-Amz-Target": "AmazonSSM.PutParameter", "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)

    # Then AWS's missing-authentication answer comes back, and moto holds no such parameter
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["__type"] == "MissingAuthenticationTokenException"
    assert gate.denied == ["unsigned request POST /"]
    ssm = moto.client("ssm")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="/unsigned/probe")
