"""The one harness's building blocks, and the shared fixtures built from them.

Building blocks (every world is built from these; `tests/lifecycle/conftest.py`'s `build_world`
adds ECR, the launch hook, the topic and the simulated hosts on top, and the fault suite and the
benchmarks reuse that): the deployable template (template.yaml rendered with the agent,
`tools.render_template.ensure_built`), events from `events/`, the fake AWS environment, and in
moto, with its gaps filled (`localcloud.moto_gaps`): every table the template defines, the swap
document the template defines, a fleet (launch template + Auto Scaling group). Table schemas
and documents are read from the template, never restated here.

Fixtures: moto-backed AWS (`aws`), settings and the core's adapters, an app config, and a
recorder of every AWS operation (for the IAM coverage test). Records: `make_release`, the one
way a test builds a `Release`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

import boto3
import botocore.handlers
import pytest
import yaml
from deployer import runtime
from deployer.models.config import AppConfig
from deployer.models.records import Release
from deployer.settings import ENV_NAMES, Settings
from deployer.wiring import Adapters as Deps
from hypothesis import settings as hypothesis_settings
from moto import mock_aws

from localcloud import moto_gaps
from tools.render_template import ensure_built

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLES = ("AppsTable", "AppStateTable", "ReleasesTable", "HostOutcomesTable", "IdempotencyTable")
DOCUMENT_NAME = "SwapDocument"
TASK_DOCUMENT_NAME = "TaskDocument"
COMMAND_LOG_GROUP = "/deployer/test/swap"
GROUP = "web-asg"

# Property tests try the same examples on every run, on every machine (CI included): each test's
# examples are seeded from the test itself and no example database is read, so a failure
# `make test` shows is the failure CI shows, and a pass is not luck. New examples are explored by
# hand with `--hypothesis-profile=random` (README, "Tests"), which prints how to replay a failure.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("random", print_blob=True)


def pytest_configure(config: pytest.Config) -> None:
    # Here, not at import: test modules import this file again as `tests.conftest`.
    if not config.getoption("--hypothesis-profile", None):
        hypothesis_settings.load_profile("ci")


# ------------------------------------------------------------------ template and events
class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags as their long form."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@functools.cache
def read_template() -> dict[str, Any]:
    """The deployable template, parsed once per process (callers that change it copy it first)."""
    data: dict[str, Any] = yaml.load(ensure_built().read_text(), Loader=_CfnLoader)
    return data


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """The deployable template, parsed (intrinsics as {"Ref": ...} / {"Fn::Sub": ...})."""
    return read_template()


def read_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture
def load_event() -> Callable[[str], dict[str, Any]]:
    """The one loader of `events/*.json` (real AWS shapes)."""
    return read_event


# ------------------------------------------------------------------ records
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def digest_of(number: int) -> str:
    """A valid image digest of its own for each number."""
    return "sha256:" + f"{number:064x}"


def make_release(
    number: int = 7,
    *,
    app: str = "web",
    repository: str = "team/web",
    digest: str | None = None,
    image: str | None = None,
    tag: str | EllipsisType | None = ...,
    pushed_at: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    **fields: Any,
) -> Release:
    """Release `number` of `app`: by default its own digest (`digest_of`) in the account's ECR,
    tagged `v<number>` unless `tag` is given (None: untagged), PENDING; any other field of the
    record by keyword."""
    digest = digest or digest_of(number)
    return Release(
        app=app,
        release=number,
        repository=repository,
        image=image or f"{REGISTRY}/{repository}@{digest}",
        digest=digest,
        tag=f"v{number}" if tag is ... else tag,
        pushed_at=pushed_at,
        **fields,
    )


# ------------------------------------------------------------------ moto-backed AWS
Clients = Callable[[str], Any]  # service name -> boto3 client


def _default_clients(region: str) -> Clients:
    return lambda service: boto3.client(service, region_name=region)  # type: ignore[call-overload]


def fake_aws_environment(monkeypatch: pytest.MonkeyPatch, region: str = REGION) -> None:
    """Fake credentials and one region for every client; no profile."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        # moto's AMI catalogue takes seconds to load per test and no test needs it
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[moto_gaps.MotoGaps]:
    """moto for every AWS call, with its gaps filled (`localcloud.moto_gaps`, whose state this
    yields); fake credentials, one region."""
    fake_aws_environment(monkeypatch)
    with mock_aws():
        yield moto_gaps.install(monkeypatch)


def create_tables(
    template: dict[str, Any], region: str = REGION, clients: Clients | None = None
) -> dict[str, str]:
    """Create every DynamoDB table the template defines (keys, indexes, billing, TTL), named
    after its logical id."""
    client = (clients or _default_clients(region))("dynamodb")
    names: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        kwargs: dict[str, Any] = {
            "TableName": logical_id,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        client.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=logical_id, TimeToLiveSpecification=ttl)
        names[logical_id] = logical_id
    return names


def create_swap_document(
    template: dict[str, Any], region: str = REGION, name: str = DOCUMENT_NAME, clients: Clients | None = None
) -> str:
    """The template's swap document, as `name` (SendCommand checks its parameters against it)."""
    content = template["Resources"]["SwapDocument"]["Properties"]["Content"]
    (clients or _default_clients(region))("ssm").create_document(
        Name=name, Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
    )
    return name


def create_task_document(
    template: dict[str, Any],
    region: str = REGION,
    name: str = TASK_DOCUMENT_NAME,
    clients: Clients | None = None,
) -> str:
    """The template's release-task document, as `name` (SendCommand checks its parameters)."""
    content = template["Resources"]["TaskDocument"]["Properties"]["Content"]
    (clients or _default_clients(region))("ssm").create_document(
        Name=name, Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
    )
    return name


# Parameters the swap document accepts (SendCommand checks them against it, as SSM does), for
# tests about where and how a swap is sent rather than what it carries.
SWAP_PARAMETERS: dict[str, list[str]] = {
    "app": ["web"],
    "image": [f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/web@sha256:{'1' * 64}"],
    "release": ["1"],
    "containerPort": ["8080"],
}


def commands_succeed() -> int:
    """SSM's side of a swap every host ran: each command still Pending ends Success on every
    target (`localcloud.moto_gaps` starts commands Pending, as SSM does). Returns how many."""
    pending = [c for c in moto_gaps.commands() if c.status == "Pending"]
    for command in pending:
        for instance_id in command.instance_ids:
            moto_gaps.record_invocation(command, instance_id, status="Success", response_code=0)
        moto_gaps.record_command(command, "Success", completed=len(command.instance_ids), errors=0)
    return len(pending)


@dataclass
class Fleet:
    group: str
    template_id: str
    initial_version: int
    instance_ids: list[str] = field(default_factory=list)


def create_fleet(
    size: int = 2,
    group: str = GROUP,
    region: str = REGION,
    *,
    launch_template: str | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    clients: Clients | None = None,
) -> Fleet:
    """A launch template (`launch_template`, default `<group>-lt`; no user data yet) and an Auto
    Scaling group of `size` instances on its version 1 (MinSize `size`, MaxSize `size + 4`
    unless given)."""
    clients = clients or _default_clients(region)
    ec2 = clients("ec2")
    image = "ami-0123456789abcdef0"  # moto does not validate AMI ids; listing its catalogue is slow
    template_id = ec2.create_launch_template(
        LaunchTemplateName=launch_template or f"{group}-lt",
        LaunchTemplateData={
            "ImageId": image,
            "InstanceType": "t3.micro",
            "IamInstanceProfile": {"Name": "deployer-host"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "web"}]}],
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling = clients("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "1"},
        MinSize=size if min_size is None else min_size,
        MaxSize=size + 4 if max_size is None else max_size,
        DesiredCapacity=size,
        AvailabilityZones=[f"{region}a"],
    )
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    instances = described["AutoScalingGroups"][0]["Instances"]
    return Fleet(group, template_id, 1, sorted(i["InstanceId"] for i in instances))


@pytest.fixture
def settings(aws: None, template: dict[str, Any]) -> Any:
    """Settings for tables and a document created from the template in moto."""
    create_tables(template)
    create_swap_document(template)
    create_task_document(template)
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=COMMAND_LOG_GROUP)
    return Settings(
        apps_table="AppsTable",
        app_state_table="AppStateTable",
        releases_table="ReleasesTable",
        host_outcomes_table="HostOutcomesTable",
        idempotency_table="IdempotencyTable",
        parameter_prefix="/deployer",
        swap_document_name=DOCUMENT_NAME,
        task_document_name=TASK_DOCUMENT_NAME,
        command_log_group=COMMAND_LOG_GROUP,
        region=REGION,
    )


@pytest.fixture
def lambda_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The environment the template gives every function, for handler tests."""
    for field_name, env_name in ENV_NAMES.items():
        value = getattr(settings, field_name)
        monkeypatch.setenv(env_name, "" if value is None else str(value))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Deployer")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    runtime.reset()
    yield settings
    runtime.reset()


@pytest.fixture
def fleet(aws: None) -> Fleet:
    return create_fleet()


@pytest.fixture
def deps(settings: Any) -> Any:
    return Deps.from_settings(settings)


WEB_CONFIG: dict[str, Any] = {
    "app": "web",
    "repository": "team/web",
    "auto_scaling_group": GROUP,
    "launch_template": "",  # filled with the fleet's template id
    "container": {
        "port": 8080,
        "health_path": "/health",
        "health_timeout": 30,
        "docker_options": ["--memory=256m", "--pids-limit=200"],
        "log_driver": "json-file",
        "log_options": {"max-size": "10m", "max-file": "3"},
    },
    "rollout": {"max_concurrency": "50%", "max_errors": "1", "command_timeout": 300},
    "auto_rollback": True,
    "retain": 3,
}


@pytest.fixture
def web_config(fleet: Fleet) -> dict[str, Any]:
    """A valid app config document for the `team/web` repository and the test fleet."""
    return {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": fleet.template_id}


@pytest.fixture
def registered_app(deps: Any, web_config: dict[str, Any]) -> Any:
    config = AppConfig.parse(web_config)
    deps.apps.put(config)
    return config


# ------------------------------------------------------------------ AWS operation recorder
@dataclass(frozen=True)
class AwsCall:
    service: str  # botocore signing name (IAM prefix), e.g. dynamodb, ssm, ec2, autoscaling
    operation: str  # API operation name = IAM action name, e.g. PutItem
    params: dict[str, Any]


class CallRecorder:
    """Records every AWS operation made by any botocore client while active (event hook)."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        self.calls.append(AwsCall(service, model.name, dict(params)))

    def operations(self) -> set[tuple[str, str]]:
        return {(c.service, c.operation) for c in self.calls}


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> CallRecorder:
    """Record AWS operations of every client created from now on (botocore `before-parameter-build`)."""
    recorder = CallRecorder()
    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [*botocore.handlers.BUILTIN_HANDLERS, ("before-parameter-build.*.*", recorder)],
    )
    return recorder
