"""Contracts with AWS's own artifacts, not with moto.

Each adapter that builds requests is driven by botocore's `Stubber`, fed answers AWS documents:
the API reference examples botocore ships (`examples-1.json`), or answers built from the
service model's *output* shape with every member present, response-only ones included
(`MetadataOptions.State`, `Operator.Managed`, ...). Every request the adapter sends then goes
through botocore's request validation (the client validates before the stub answers, and
`validate_parameters` checks the recorded request again) and is compared with the request
we mean to send, so a member we did not choose to send fails the test.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.stub import ANY, Stubber
from botocore.validate import validate_parameters
from deployer.adapters import to_attributes
from deployer.adapters.admissions import Admissions
from deployer.adapters.app_state import AppState, StateChange
from deployer.adapters.apps import AppsStore
from deployer.adapters.command_results import CommandResults
from deployer.adapters.fleet import Fleet
from deployer.adapters.host_outcomes import HostOutcomesStore
from deployer.adapters.images import Images
from deployer.adapters.launch_templates import GroupTemplate, LaunchTemplates
from deployer.adapters.lifecycle_hooks import LifecycleHooks, LifecycleResult, ManagedInstances
from deployer.adapters.pointer import PointerStore
from deployer.adapters.proxy_metrics import ProxyMetrics
from deployer.adapters.releases import ReleasesStore
from deployer.adapters.transactions import Transaction
from deployer.models.config import AppConfig
from deployer.models.records import HostOutcome, Pointer, Release, ReleaseSource, ReleaseStatus
from deployer.notify import DeployNotice, NoticeKind, Notifier

from tests.conftest import WEB_CONFIG, make_release

pytestmark = pytest.mark.unit

REGION = "us-east-1"
OUR_TEMPLATE = "lt-068f72b72934aff71"  # the id in EC2's DescribeLaunchTemplateVersions example
OUR_TEMPLATE_NAME = "Webservers"
OTHER_TEMPLATE = "lt-0abcd290751193123"
GROUP_NAME = "web-asg"
DIGEST = "sha256:" + "ab" * 32
SCRIPT = "#!/bin/sh\necho release 8\n"


# ------------------------------------------------------------------ AWS's artifacts
def example_output(service: str, operation: str) -> dict[str, Any]:
    """The output of the first example of `operation` in botocore's examples-1.json."""
    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version(service, "examples-1")
    examples = loader.load_service_model(service, "examples-1", version)["examples"][operation]
    return copy.deepcopy(examples[0]["output"])


def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def sample(shape: Shape, _stack: tuple[str, ...] = ()) -> Any:
    """A value of `shape` with every member present (recursive shapes stop at their first repeat)."""
    if isinstance(shape, StructureShape):
        return {
            name: sample(member, (*_stack, shape.name))
            for name, member in shape.members.items()
            if member.name not in _stack
            and not (isinstance(member, ListShape) and member.member.name in _stack)
        }
    if isinstance(shape, ListShape):
        return [sample(shape.member, _stack)]
    if isinstance(shape, MapShape):
        return {"key": sample(shape.value, _stack)}
    kind = shape.type_name
    if kind == "string":
        enum = shape.enum
        return enum[0] if enum else "x" * max(1, int(shape.metadata.get("min", 1)))
    if kind in ("integer", "long"):
        return max(1, int(shape.metadata.get("min", 1)))
    if kind in ("double", "float"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return datetime(2026, 1, 1, tzinfo=UTC)
    if kind == "blob":
        return b"x"
    raise AssertionError(f"no sample for {shape.name} ({kind})")


def member_paths(shape: Shape, prefix: str = "", _stack: tuple[str, ...] = ()) -> set[str]:
    """Every member path of a shape (`A.B[].C`)."""
    paths: set[str] = set()
    if isinstance(shape, StructureShape) and shape.name not in _stack:
        for name, member in shape.members.items():
            path = f"{prefix}.{name}" if prefix else name
            paths.add(path)
            paths |= member_paths(member, path, (*_stack, shape.name))
    elif isinstance(shape, ListShape):
        paths |= member_paths(shape.member, f"{prefix}[]", _stack)
    return paths


def paths_of(value: Any, prefix: str = "") -> set[str]:
    """Every member path present in a request or response value."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for name, member in value.items():
            path = f"{prefix}.{name}" if prefix else name
            paths.add(path)
            paths |= paths_of(member, path)
    elif isinstance(value, list):
        for item in value:
            paths |= paths_of(item, f"{prefix}[]")
    return paths


# ------------------------------------------------------------------ stubbed clients
@dataclass
class Sent:
    operation: str
    params: dict[str, Any]


@dataclass
class Contract:
    """Stubbed clients; every request they send is recorded and validated against its model."""

    sent: list[Sent] = field(default_factory=list)
    _stubbers: list[Stubber] = field(default_factory=list)

    def client(self, service: str) -> tuple[Any, Stubber]:
        client = boto3.client(
            service, region_name=REGION, aws_access_key_id="contract", aws_secret_access_key="contract"
        )

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.sent.append(Sent(model.name, copy.deepcopy(params)))
            # botocore validates too; this raises on any member the input shape lacks.
            validate_parameters(params, model.input_shape)

        client.meta.events.register("before-parameter-build.*.*", record)
        stubber = Stubber(client)
        stubber.activate()
        self._stubbers.append(stubber)
        return client, stubber

    def requests(self, operation: str) -> list[dict[str, Any]]:
        return [s.params for s in self.sent if s.operation == operation]

    def done(self) -> None:
        for stubber in self._stubbers:
            stubber.assert_no_pending_responses()


@pytest.fixture
def contract() -> Iterator[Contract]:
    found = Contract()
    yield found
    for stubber in found._stubbers:
        stubber.deactivate()


def config(**changes: Any) -> AppConfig:
    return AppConfig.parse(
        {**WEB_CONFIG, "auto_scaling_group": GROUP_NAME, "launch_template": OUR_TEMPLATE, **changes}
    )


# ------------------------------------------------------------------ launch templates: new version
def described_version(number: int, data: dict[str, Any]) -> dict[str, Any]:
    """EC2's documented DescribeLaunchTemplateVersions answer, narrowed to one version."""
    answer = example_output("ec2", "DescribeLaunchTemplateVersions")
    version = answer["LaunchTemplateVersions"][0]
    version.update(VersionNumber=number, LaunchTemplateData=data)
    return {"LaunchTemplateVersions": [version]}


def group_on_template(version: str) -> dict[str, Any]:
    """Auto Scaling's documented DescribeAutoScalingGroups answer, on our launch template."""
    answer = example_output("autoscaling", "DescribeAutoScalingGroups")
    group = answer["AutoScalingGroups"][0]
    group.pop("LaunchConfigurationName")
    for instance in group["Instances"]:
        instance.pop("LaunchConfigurationName")
    group["AutoScalingGroupName"] = GROUP_NAME
    # Auto Scaling answers with both the id and the name of the template.
    group["LaunchTemplate"] = {
        "LaunchTemplateId": OUR_TEMPLATE,
        "LaunchTemplateName": OUR_TEMPLATE_NAME,
        "Version": version,
    }
    return answer


def created(number: int) -> dict[str, Any]:
    answer = example_output("ec2", "CreateLaunchTemplateVersion")
    answer["LaunchTemplateVersion"].update(LaunchTemplateId=OUR_TEMPLATE, VersionNumber=number)
    return answer


def test_response_only_members_of_launch_template_data_are_the_ones_this_file_feeds_back() -> None:
    # Given botocore's EC2 model: members the answer has and the request does not
    response = member_paths(_model("ec2").shape_for("ResponseLaunchTemplateData"))
    request = member_paths(_model("ec2").shape_for("RequestLaunchTemplateData"))

    # Then they include the members of the documented failure (the answers below carry them)
    assert {
        "MetadataOptions.State",
        "NetworkInterfaces[].Ipv6Addresses[].IsPrimaryIpv6",
        "Operator.Managed",
    } <= response - request


def test_a_new_version_states_only_the_user_data_on_top_of_the_groups_version(contract: Contract) -> None:
    # Given a group on version 7, whose data as EC2 describes it carries response-only members
    ec2, ec2_stub = contract.client("ec2")
    autoscaling, asg_stub = contract.client("autoscaling")
    data = described_version(7, {})["LaunchTemplateVersions"][0]
    data["LaunchTemplateData"] = example_output("ec2", "DescribeLaunchTemplateVersions")[
        "LaunchTemplateVersions"
    ][1]["LaunchTemplateData"]
    data["LaunchTemplateData"]["MetadataOptions"] = {
        "State": "applied",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 2,
        "HttpEndpoint": "enabled",
    }
    data["LaunchTemplateData"]["Operator"] = {"Managed": False}
    data["LaunchTemplateData"]["NetworkInterfaces"][0]["Ipv6Addresses"] = [
        {"Ipv6Address": "2001:db8:1234:1a00::123", "IsPrimaryIpv6": True}
    ]
    asg_stub.add_response("describe_auto_scaling_groups", group_on_template("7"))
    ec2_stub.add_response("describe_launch_template_versions", {"LaunchTemplateVersions": [data]})
    ec2_stub.add_response("create_launch_template_version", created(8))
    templates = LaunchTemplates(ec2, autoscaling)

    # When a release version is created from what the group uses
    current = templates.current(config())
    number = templates.create_version(current, SCRIPT, f"web release 8 {DIGEST}")

    # Then the request is based on version 7 and states only the new user data
    contract.done()
    assert number == 8
    [request] = contract.requests("CreateLaunchTemplateVersion")
    assert request["SourceVersion"] == "7"
    assert request["LaunchTemplateId"] == OUR_TEMPLATE
    assert request["VersionDescription"] == f"web release 8 {DIGEST}"
    assert set(request) == {"LaunchTemplateId", "SourceVersion", "LaunchTemplateData", "VersionDescription"}
    assert set(request["LaunchTemplateData"]) == {"UserData"}
    assert base64.b64decode(request["LaunchTemplateData"]["UserData"]).decode() == SCRIPT


def test_a_version_with_every_response_member_yields_a_valid_request(contract: Contract) -> None:
    # Given a version whose data has every member of EC2's response shape (snapshots included)
    ec2, ec2_stub = contract.client("ec2")
    autoscaling, _ = contract.client("autoscaling")
    full = sample(_model("ec2").shape_for("ResponseLaunchTemplateData"))
    assert paths_of(full) >= {"MetadataOptions.State", "Operator.Managed"}
    full["UserData"] = base64.b64encode(b"#cloud-config\npackages: [docker]\n").decode()  # EC2 answers base64
    ec2_stub.add_response("describe_launch_template_versions", described_version(7, full))
    ec2_stub.add_response("create_launch_template_version", created(8))
    current = GroupTemplate(GROUP_NAME, OUR_TEMPLATE, OUR_TEMPLATE_NAME, 7, mixed_instances=False)

    # When a release version is created from it
    LaunchTemplates(ec2, autoscaling).create_version(current, SCRIPT, "web release 8")

    # Then the request passed validation, and restates only the block devices (EC2 does not
    # carry their snapshots over from the source version) besides the user data
    [request] = contract.requests("CreateLaunchTemplateVersion")
    assert set(request["LaunchTemplateData"]) == {"UserData", "BlockDeviceMappings"}
    assert request["LaunchTemplateData"]["BlockDeviceMappings"] == full["BlockDeviceMappings"]
    # and the source's own user data is kept, before the boot script
    user_data = base64.b64decode(request["LaunchTemplateData"]["UserData"]).decode()
    assert user_data.index("#cloud-config\npackages: [docker]\n") < user_data.index(SCRIPT)
    request_shape = _model("ec2").shape_for("RequestLaunchTemplateData")
    assert paths_of(request["LaunchTemplateData"]) <= member_paths(request_shape)


# ------------------------------------------------------------------ launch templates: the group
def mixed_group(version: str) -> dict[str, Any]:
    """A documented group answer with a mixed instances policy: overrides with their own templates."""
    answer = group_on_template(version)
    group = answer["AutoScalingGroups"][0]
    spec = group.pop("LaunchTemplate")
    group["MixedInstancesPolicy"] = {
        "LaunchTemplate": {
            "LaunchTemplateSpecification": spec,
            "Overrides": [
                {"InstanceType": "c5.large", "WeightedCapacity": "2"},
                {
                    "InstanceType": "c5.xlarge",
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": OUR_TEMPLATE,
                        "LaunchTemplateName": OUR_TEMPLATE_NAME,
                        "Version": version,
                    },
                },
                {
                    "InstanceType": "c6g.large",
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": OTHER_TEMPLATE,
                        "LaunchTemplateName": "arm-servers",
                        "Version": "3",
                    },
                },
            ],
        },
        "InstancesDistribution": {
            "OnDemandAllocationStrategy": "prioritized",
            "OnDemandBaseCapacity": 1,
            "OnDemandPercentageAboveBaseCapacity": 50,
            "SpotAllocationStrategy": "price-capacity-optimized",
        },
    }
    return answer


def test_a_mixed_group_moves_its_template_and_every_override_that_names_it(contract: Contract) -> None:
    # Given a group with a mixed instances policy on version 7, one override naming our
    # template itself and one naming another template
    ec2, _ = contract.client("ec2")
    autoscaling, asg_stub = contract.client("autoscaling")
    asg_stub.add_response("describe_auto_scaling_groups", mixed_group("7"))
    asg_stub.add_response("update_auto_scaling_group", {})
    templates = LaunchTemplates(ec2, autoscaling)

    # When the group is moved to version 8
    current = templates.current(config())
    templates.point_group(current, 8)

    # Then the launch template goes back whole: top level and our override on "8", the other
    # template's override untouched, each naming its template once; the distribution is not restated
    contract.done()
    [request] = contract.requests("UpdateAutoScalingGroup")
    assert request == {
        "AutoScalingGroupName": GROUP_NAME,
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": OUR_TEMPLATE, "Version": "8"},
                "Overrides": [
                    {"InstanceType": "c5.large", "WeightedCapacity": "2"},
                    {
                        "InstanceType": "c5.xlarge",
                        "LaunchTemplateSpecification": {"LaunchTemplateId": OUR_TEMPLATE, "Version": "8"},
                    },
                    {
                        "InstanceType": "c6g.large",
                        "LaunchTemplateSpecification": {"LaunchTemplateId": OTHER_TEMPLATE, "Version": "3"},
                    },
                ],
            }
        },
    }


def test_a_mixed_group_with_every_response_member_yields_a_valid_update(contract: Contract) -> None:
    # Given a mixed instances policy with every member Auto Scaling's answer shape has
    ec2, _ = contract.client("ec2")
    autoscaling, asg_stub = contract.client("autoscaling")
    answer = mixed_group("7")
    policy = sample(_model("autoscaling").shape_for("MixedInstancesPolicy"))
    override = policy["LaunchTemplate"]["Overrides"][0]
    override["LaunchTemplateSpecification"] = {
        "LaunchTemplateId": OUR_TEMPLATE,
        "LaunchTemplateName": OUR_TEMPLATE_NAME,
        "Version": "7",
    }
    policy["LaunchTemplate"]["LaunchTemplateSpecification"] = override["LaunchTemplateSpecification"]
    answer["AutoScalingGroups"][0]["MixedInstancesPolicy"] = policy
    asg_stub.add_response("describe_auto_scaling_groups", answer)
    asg_stub.add_response("update_auto_scaling_group", {})
    templates = LaunchTemplates(ec2, autoscaling)

    # When the group is moved to version 8
    templates.point_group(templates.current(config()), 8)

    # Then the update passed validation and kept every documented member of the override
    [request] = contract.requests("UpdateAutoScalingGroup")
    [sent] = request["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert sent["LaunchTemplateSpecification"] == {"LaunchTemplateId": OUR_TEMPLATE, "Version": "8"}
    assert sent["InstanceRequirements"] == override["InstanceRequirements"]
    assert set(sent) == set(override)


def test_a_plain_group_names_its_template_once_on_the_new_version(contract: Contract) -> None:
    # Given a group on version 7 of our template (answered with both id and name)
    ec2, _ = contract.client("ec2")
    autoscaling, asg_stub = contract.client("autoscaling")
    asg_stub.add_response("describe_auto_scaling_groups", group_on_template("7"))
    asg_stub.add_response(
        "update_auto_scaling_group",
        {},
        {
            "AutoScalingGroupName": GROUP_NAME,
            "LaunchTemplate": {"LaunchTemplateId": OUR_TEMPLATE, "Version": "8"},
        },
    )
    templates = LaunchTemplates(ec2, autoscaling)

    # When the group is moved to version 8
    templates.point_group(templates.current(config()), 8)

    # Then the stub saw exactly the request above
    contract.done()


# ------------------------------------------------------------------ launch templates: pruning
def listed(numbers: range, default: int = 1, foreign: frozenset[int] = frozenset()) -> dict[str, Any]:
    """A DescribeLaunchTemplateVersions answer listing `numbers` (EC2's documented entry shape)."""
    entry = example_output("ec2", "DescribeLaunchTemplateVersions")["LaunchTemplateVersions"][0]
    versions = []
    for number in numbers:
        version = copy.deepcopy(entry)
        version.update(
            VersionNumber=number,
            DefaultVersion=number == default,
            VersionDescription="set by hand" if number in foreign else f"web release {number} {DIGEST}",
        )
        versions.append(version)
    return {"LaunchTemplateVersions": versions}


def test_pruning_deletes_only_the_apps_release_versions_outside_the_kept_set(contract: Contract) -> None:
    # Given versions 1-30: 1 is the default, 5 set by hand, 12 a retained release's,
    # 14 named by a group override; the newest is 30
    ec2, ec2_stub = contract.client("ec2")
    autoscaling, _ = contract.client("autoscaling")
    ec2_stub.add_response(
        "describe_launch_template_versions",
        listed(range(1, 21), foreign=frozenset({5})),
        {"LaunchTemplateId": OUR_TEMPLATE, "MaxVersion": "20", "MaxResults": 200},
    )
    ec2_stub.add_response(
        "delete_launch_template_versions", example_output("ec2", "DeleteLaunchTemplateVersions")
    )
    current = GroupTemplate(
        GROUP_NAME, OUR_TEMPLATE, OUR_TEMPLATE_NAME, 29, True, versions=frozenset({29, 14})
    )

    # When the versions beyond the newest 10 are pruned, keeping release version 12
    LaunchTemplates(ec2, autoscaling).prune(current, "web", latest=30, newest=10, keep=[12])

    # Then one delete names the app's other versions up to 20, as strings
    contract.done()
    [request] = contract.requests("DeleteLaunchTemplateVersions")
    assert request == {
        "LaunchTemplateId": OUR_TEMPLATE,
        "Versions": ["2", "3", "4", "6", "7", "8", "9", "10", "11", "13", "15", "16", "17", "18", "19", "20"],
    }


def test_pruning_a_long_history_deletes_one_batch_of_200_per_call(contract: Contract) -> None:
    # Given 500 old release versions, listed in pages of 200
    ec2, ec2_stub = contract.client("ec2")
    autoscaling, _ = contract.client("autoscaling")
    first = listed(range(1, 201))
    first["NextToken"] = "page-2"
    second = listed(range(201, 401))
    ec2_stub.add_response("describe_launch_template_versions", first)
    ec2_stub.add_response(
        "describe_launch_template_versions",
        second,
        {"LaunchTemplateId": OUR_TEMPLATE, "MaxVersion": "490", "MaxResults": 200, "NextToken": "page-2"},
    )
    gone = {
        "SuccessfullyDeletedLaunchTemplateVersions": [],
        "UnsuccessfullyDeletedLaunchTemplateVersions": [
            {
                "LaunchTemplateId": OUR_TEMPLATE,
                "VersionNumber": 2,
                "ResponseError": {"Code": "launchTemplateVersionDoesNotExist", "Message": "gone"},
            }
        ],
    }
    ec2_stub.add_response("delete_launch_template_versions", gone)
    current = GroupTemplate(
        GROUP_NAME, OUR_TEMPLATE, OUR_TEMPLATE_NAME, 499, False, versions=frozenset({499})
    )

    # When pruned
    deleted = LaunchTemplates(ec2, autoscaling).prune(current, "web", latest=500, newest=10, keep=[])

    # Then one request of 200 versions went out (the default, 1, is never named), and a version
    # already gone counts as deleted
    contract.done()
    [request] = contract.requests("DeleteLaunchTemplateVersions")
    assert len(request["Versions"]) == 200
    assert request["Versions"][0] == "2"
    assert "1" not in request["Versions"]
    assert len(deleted) == 200


# ------------------------------------------------------------------ the other adapters
def test_the_swap_command_request_is_valid_and_names_only_what_we_set(contract: Contract) -> None:
    # Given SSM answering SendCommand with a documented Command
    ssm, stub = contract.client("ssm")
    answer = {"Command": sample(_model("ssm").shape_for("Command"))}
    answer["Command"]["CommandId"] = "0b0b0b0b-1111-2222-3333-444444444444"
    stub.add_response("send_command", answer)
    stub.add_response("send_command", answer)
    fleet = Fleet(ssm, "SwapDocument", "/deployer/swap")

    # When the swap goes to the group, then to one instance
    fleet.send_swap(config(), {"app": ["web"], "release": ["8"]}, "deployer web release 8", hosts=4)
    fleet.send_swap_to_instances(config(), ["i-05b4f7d5be44822a6"], {"app": ["web"]}, "new instance")

    # Then both requests passed validation and carry only these members
    group, single = contract.requests("SendCommand")
    common = {"DocumentName", "Parameters", "TimeoutSeconds", "Comment", "CloudWatchOutputConfig"}
    common |= {"MaxConcurrency", "MaxErrors"}
    assert set(group) == common | {"Targets"}
    assert group["Targets"] == [{"Key": "tag:aws:autoscaling:groupName", "Values": [GROUP_NAME]}]
    assert set(single) == common | {"InstanceIds"}


def test_pointer_requests_are_valid(contract: Contract) -> None:
    # Given SSM's parameter answers built from its output shapes
    ssm, stub = contract.client("ssm")
    pointer = Pointer(
        app="web",
        release=8,
        image=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/team/web@{DIGEST}",
        digest=DIGEST,
        tag="v8",
        source=ReleaseSource.PUSH,
    )
    stub.add_response("put_parameter", {"Version": 3, "Tier": "Standard"})
    parameter = sample(_model("ssm").shape_for("Parameter"))
    parameter["Value"] = pointer.model_dump_json()
    stub.add_response("get_parameter", {"Parameter": parameter})
    stub.add_response("get_parameter", {"Parameter": parameter})
    stub.add_response("delete_parameter", {})
    store = PointerStore(ssm, "/deployer")

    # When the pointer is moved, read, read at a version, and removed
    assert store.put(pointer) == 3
    assert store.get("web") == pointer
    assert store.version("web", 2) == pointer
    store.delete("web")

    # Then each request passed validation, on the app's parameter
    contract.done()
    assert [s.operation for s in contract.sent] == [
        "PutParameter",
        "GetParameter",
        "GetParameter",
        "DeleteParameter",
    ]
    assert set(contract.requests("PutParameter")[0]) == {"Name", "Value", "Type", "Overwrite", "Description"}
    assert contract.requests("GetParameter")[1] == {"Name": "/deployer/web/release:2"}


def release(number: int = 8, status: ReleaseStatus = ReleaseStatus.DEPLOYING) -> Release:
    return make_release(number, digest=DIGEST, tag="v8", status=status)


def test_release_and_app_state_requests_are_valid(contract: Contract) -> None:
    # Given DynamoDB answering with the items our stores write
    dynamodb, stub = contract.client("dynamodb")
    releases = ReleasesStore(dynamodb, "ReleasesTable")
    state = AppState(dynamodb, "AppStateTable", clock=lambda: 1_767_225_600.0)
    admissions = Admissions(dynamodb, "IdempotencyTable", clock=lambda: 1_767_225_600.0)
    item = to_attributes(release().to_item())
    stub.add_response("put_item", {})
    stub.add_response("get_item", {"Item": item})
    stub.add_response("query", {"Items": [item], "Count": 1, "ScannedCount": 1})
    stub.add_response("get_item", {"Item": {"app": {"S": "web"}, "last_release": {"N": "8"}}})
    stub.add_response("transact_write_items", {})
    stub.add_response("transact_write_items", {})
    stub.add_response("update_item", {"Attributes": item})
    stub.add_response("update_item", {})

    # When a release is recorded, read and listed, the app's state read, and two decisions
    # committed (an admission that starts release 9 and supersedes 8; release 9 failing to start)
    releases.create(release())
    assert releases.get("web", 8).release == 8
    assert [r.release for r in releases.list_recent("web", limit=5)] == [8]
    assert state.get("web").last_release == 8
    admit = StateChange(
        "web",
        expect_owner=None,
        expect_last=8,
        last_release=9,
        owner="web#9",
        desired=9,
        add_outbox=["9:started"],
        refuse_if_refused=DIGEST,
        require_unpaused=True,
        last_pushed_at=1_767_225_000,
    )
    Transaction().add(
        "admission", admissions.create_item("deployer-admission#web#team/web#x#v9", "web", 9)
    ).add("state", state.change_item(admit)).add("release", releases.create_item(release(9))).add(
        "supersede 8",
        releases.transition_item(
            "web", 8, ReleaseStatus.SUPERSEDED, "superseded", allowed_from=frozenset({ReleaseStatus.PENDING})
        ),
    ).commit(dynamodb, "admitting release 9")
    failed = StateChange(
        "web", expect_owner="web#9", clear_owner=True, desired=8, realign=True, refuse=DIGEST
    )
    Transaction().add(
        "release", releases.transition_item("web", 9, ReleaseStatus.FAILED, "could not start")
    ).add("state", state.change_item(failed)).commit(dynamodb, "failing release 9")
    # and a command's send claimed, and a notice struck off the outbox
    assert releases.claim_send("web", 8, "token", 1_767_225_600, 90) is not None
    state.outbox_done("web", "9:failed")

    # Then every request passed validation, and every state and release write is conditional
    contract.done()
    assert [s.operation for s in contract.sent] == [
        "PutItem",
        "GetItem",
        "Query",
        "GetItem",
        "TransactWriteItems",
        "TransactWriteItems",
        "UpdateItem",
        "UpdateItem",
    ]
    for request in contract.requests("TransactWriteItems"):
        for entry in request["TransactItems"]:
            write = entry.get("Update") or entry.get("Put")
            assert write["ConditionExpression"], entry


def test_image_lookups_are_valid_against_ecrs_documented_answer(contract: Contract) -> None:
    # Given ECR answering DescribeImages with its output shape
    ecr, stub = contract.client("ecr")
    detail = sample(_model("ecr").shape_for("ImageDetail"))
    detail.update(imageDigest=DIGEST, imageTags=["v8"], repositoryName="team/web")
    stub.add_response("describe_images", {"imageDetails": [detail]})
    stub.add_response("describe_images", {"imageDetails": [detail]})
    images = Images(ecr)

    # When an image is looked up by digest and by tag
    assert images.by_digest("team/web", DIGEST).digest == DIGEST
    assert images.by_tag("team/web", "v8").tags == ("v8",)

    # Then each request names one image id
    contract.done()
    assert [r["imageIds"] for r in contract.requests("DescribeImages")] == [
        [{"imageDigest": DIGEST}],
        [{"imageTag": "v8"}],
    ]


def test_lifecycle_requests_are_valid(contract: Contract) -> None:
    # Given Auto Scaling's documented group answer (one instance still Pending:Wait) and SSM's
    # instance information
    autoscaling, asg_stub = contract.client("autoscaling")
    ssm, ssm_stub = contract.client("ssm")
    answer = group_on_template("8")
    answer["AutoScalingGroups"][0]["Instances"][1]["LifecycleState"] = "Pending:Wait"
    asg_stub.add_response("complete_lifecycle_action", {})
    asg_stub.add_response("record_lifecycle_action_heartbeat", {})
    asg_stub.add_response("describe_auto_scaling_groups", answer)
    info = sample(_model("ssm").shape_for("InstanceInformation"))
    info.update(InstanceId="i-05b4f7d5be44822a6", PingStatus="Online")
    ssm_stub.add_response("describe_instance_information", {"InstanceInformationList": [info]})
    hooks = LifecycleHooks(autoscaling)
    token = "bcd2f1b8-9a78-44d3-8a7a-4dd07d7cf635"

    # When an action is completed and heartbeated, InService instances listed, an instance checked
    assert hooks.complete(
        group=GROUP_NAME,
        hook="launch",
        token=token,
        instance_id="i-05b4f7d5be44822a6",
        result=LifecycleResult.CONTINUE,
    )
    assert hooks.heartbeat(group=GROUP_NAME, hook="launch", token=token, instance_id="i-05b4f7d5be44822a6")
    assert hooks.in_service(GROUP_NAME) == ["i-05b4f7d5be44822a6"]
    assert ManagedInstances(ssm).online("i-05b4f7d5be44822a6")

    # Then every request passed validation
    contract.done()
    assert contract.requests("CompleteLifecycleAction")[0]["LifecycleActionResult"] == "CONTINUE"


def test_the_notification_request_is_valid(contract: Contract) -> None:
    # Given SNS answering Publish
    sns, stub = contract.client("sns")
    stub.add_response(
        "publish",
        {"MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e"},
        {
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:deploys",
            "Subject": ANY,
            "Message": ANY,
            "MessageAttributes": ANY,
        },
    )
    notice = DeployNotice(kind=NoticeKind.SUCCEEDED, app="web", release=8, digest=DIGEST)

    # When a notice is published
    message_id = Notifier("arn:aws:sns:us-east-1:123456789012:deploys", sns).publish(notice)

    # Then the request passed validation with exactly these members
    contract.done()
    assert message_id == "95df01b4-ee98-5cb9-9903-4c221d41eb5e"


def test_command_result_reads_are_valid_against_ssms_answer_shapes(contract: Contract) -> None:
    # Given SSM answering with its output shapes (every member present)
    ssm, stub = contract.client("ssm")
    invocation = sample(_model("ssm").operation_model("GetCommandInvocation").output_shape)
    invocation.update(Status="Success", StatusDetails="Success", ResponseCode=0)
    stub.add_response("get_command_invocation", invocation)
    stub.add_response("list_commands", {"Commands": [sample(_model("ssm").shape_for("Command"))]})
    listed_invocations = sample(_model("ssm").operation_model("ListCommandInvocations").output_shape)
    listed_invocations.pop("NextToken")
    stub.add_response("list_command_invocations", listed_invocations)
    results = CommandResults(ssm)
    command_id = "0b0b0b0b-1111-2222-3333-444444444444"

    # When one invocation, the command's counts and the invocations' tally are read
    assert results.invocation(command_id, "i-05b4f7d5be44822a6") is not None
    assert results.counts(command_id) is not None
    results.tally(command_id)

    # Then every request passed validation and names the command
    contract.done()
    assert contract.requests("ListCommandInvocations") == [{"CommandId": command_id, "MaxResults": 50}]


def test_a_group_command_without_targets_counts_the_groups_instances_with_a_valid_request(
    contract: Contract,
) -> None:
    # Given SSM listing a group-tag command that targeted no instance, and Auto Scaling's
    # documented answer for the group (one instance InService)
    ssm, ssm_stub = contract.client("ssm")
    autoscaling, asg_stub = contract.client("autoscaling")
    command = sample(_model("ssm").shape_for("Command"))
    command.update(
        TargetCount=0,
        StatusDetails="No Instances In Tag",
        Targets=[{"Key": "tag:aws:autoscaling:groupName", "Values": [GROUP_NAME]}],
    )
    ssm_stub.add_response("list_commands", {"Commands": [command]})
    asg_stub.add_response("describe_auto_scaling_groups", group_on_template("3"))

    # When the command's counts are read
    counts = CommandResults(ssm, autoscaling).counts("0b0b0b0b-1111-2222-3333-444444444444")

    # Then the group's instances were counted with one valid request naming the group
    contract.done()
    assert counts is not None
    assert counts.group_instances == len(group_on_template("3")["AutoScalingGroups"][0]["Instances"])
    assert contract.requests("DescribeAutoScalingGroups") == [{"AutoScalingGroupNames": [GROUP_NAME]}]


def test_host_outcome_and_app_config_requests_are_valid(contract: Contract) -> None:
    # Given DynamoDB answering with what our stores wrote
    dynamodb, stub = contract.client("dynamodb")
    outcome = HostOutcome(
        release_key="web#8", instance_id="i-05b4f7d5be44822a6", app="web", release=8, status="Success"
    )
    app = config()
    stub.add_response("put_item", {})
    stub.add_response("query", {"Items": [to_attributes(outcome.to_item())], "Count": 1, "ScannedCount": 1})
    stub.add_response("put_item", {})

    # When an outcome is written and listed, and an app config written and read
    HostOutcomesStore(dynamodb, "HostOutcomesTable").put(outcome)
    assert [o.instance_id for o in HostOutcomesStore(dynamodb, "HostOutcomesTable").for_release("web#8")] == [
        "i-05b4f7d5be44822a6"
    ]
    apps = AppsStore(dynamodb, "AppsTable")
    apps.put(app)
    stub.add_response("get_item", {"Item": contract.requests("PutItem")[-1]["Item"]})
    assert apps.get("web") == app

    # Then every request passed validation
    contract.done()
    assert [s.operation for s in contract.sent] == ["PutItem", "Query", "PutItem", "GetItem"]


def test_the_release_task_command_and_its_lookup_are_valid_requests(contract: Contract) -> None:
    # Given SSM answering SendCommand, then ListCommands with a documented Command that is the task's
    ssm, stub = contract.client("ssm")
    answer = {"Command": sample(_model("ssm").shape_for("Command"))}
    answer["Command"]["CommandId"] = "0c0c0c0c-1111-2222-3333-444444444444"
    stub.add_response("send_command", answer)
    listed = sample(_model("ssm").shape_for("Command"))
    listed.update(
        CommandId="0c0c0c0c-1111-2222-3333-444444444444",
        Comment="deployer task web release 8",
        DocumentName="TaskDocument",
        InstanceIds=["i-05b4f7d5be44822a6"],
    )
    stub.add_response("list_commands", {"Commands": [listed]})
    fleet = Fleet(ssm, "SwapDocument", "/deployer/swap", task_document="TaskDocument")

    # When the task goes to one instance, and is later looked up by its comment
    sent = fleet.send_task(config(), "i-05b4f7d5be44822a6", {"app": ["web"]}, "deployer task web release 8")
    found = fleet.find_task("deployer task web release 8", datetime(2026, 12, 1, tzinfo=UTC))

    # Then both requests passed validation: the task document, one instance, one at a time
    assert sent == "0c0c0c0c-1111-2222-3333-444444444444"
    assert found == ("0c0c0c0c-1111-2222-3333-444444444444", "i-05b4f7d5be44822a6")
    (request,) = contract.requests("SendCommand")
    assert set(request) == {
        "DocumentName",
        "InstanceIds",
        "Parameters",
        "Comment",
        "MaxConcurrency",
        "MaxErrors",
        "TimeoutSeconds",
        "CloudWatchOutputConfig",
    }
    assert (request["DocumentName"], request["InstanceIds"], request["MaxConcurrency"]) == (
        "TaskDocument",
        ["i-05b4f7d5be44822a6"],
        "1",
    )
    (lookup,) = contract.requests("ListCommands")
    assert {"key": "DocumentName", "value": "TaskDocument"} in lookup["Filters"]


def test_the_canary_figures_are_one_valid_get_metric_data_read_over_every_page(contract: Contract) -> None:
    # Given CloudWatch answering GetMetricData in two pages (its output shape, every member)
    cloudwatch, stub = contract.client("cloudwatch")
    shape = _model("cloudwatch").operation_model("GetMetricData").output_shape
    minute = 1_800_000_000

    def page(values: dict[str, float], token: str | None) -> dict[str, Any]:
        answer = sample(shape)
        template = answer["MetricDataResults"][0]
        answer["MetricDataResults"] = [
            {**template, "Id": qid, "Timestamps": [datetime.fromtimestamp(minute, UTC)], "Values": [value]}
            for qid, value in values.items()
        ]
        if token is None:
            answer.pop("NextToken")
        else:
            answer["NextToken"] = token
        return answer

    stub.add_response("get_metric_data", page({"c_req": 2050.0, "c_err": 412.0, "c_p99": 33.5}, "more"))
    stub.add_response("get_metric_data", page({"s_req": 8000.0, "s_err": 0.0, "s_p99": 30.0}, None))

    # When the canary (8) and the stable release (7) are read over 25 s of a bake
    canary, stable = ProxyMetrics(lambda: cloudwatch).figures("web", 8, 7, minute + 8, minute + 33)

    # Then both pages were read with the same valid request, one aligned period covering the window
    contract.done()
    first, second = contract.requests("GetMetricData")
    assert second == {**first, "NextToken": "more"}
    assert first["StartTime"] == datetime.fromtimestamp(minute, UTC)
    assert first["EndTime"] == datetime.fromtimestamp(minute + 60, UTC)
    assert first["ScanBy"] == "TimestampAscending"
    queries = {q["Id"]: q["MetricStat"] for q in first["MetricDataQueries"]}
    assert sorted(queries) == ["c_err", "c_p99", "c_req", "s_err", "s_p99", "s_req"]
    assert queries["c_p99"] == {
        "Metric": {
            "Namespace": "Deployer/Proxy",
            "MetricName": "Latency",
            "Dimensions": [{"Name": "App", "Value": "web"}, {"Name": "Release", "Value": "8"}],
        },
        "Period": 60,
        "Stat": "p99",
    }
    assert (queries["s_req"]["Metric"]["MetricName"], queries["s_req"]["Stat"]) == ("Requests", "Sum")
    assert (queries["s_err"]["Metric"]["MetricName"], queries["s_err"]["Stat"]) == ("Errors5xx", "Sum")
    # and the figures are what CloudWatch answered
    assert (canary.release, canary.requests, canary.errors, canary.p99_ms) == (8, 2050, 412, 33.5)
    assert (stable.release, stable.requests, stable.errors, stable.p99_ms) == (7, 8000, 0, 30.0)
