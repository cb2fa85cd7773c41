"""The local stack is deployed the way AWS would deploy it: the deployable template, the SAM
transform (aws-sam-translator), CloudFormation's create_stack (moto), then the types moto skips
filled in by localcloud.aws.cfn_gaps. The stand-ins act on what the stack created, read back with
the AWS APIs: rules and patterns, each function's configuration, the documents, the outputs."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from deployer.settings import Settings
from moto import mock_aws

from localcloud.aws import cfn_gaps
from localcloud.aws.eventbridge import matches
from localcloud.aws.stack import OUTPUT_ENV, Stack, deploy, load_yaml, package, sam_transform
from tools.render_template import ensure_built

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


class Clients:
    """boto3 clients in one region (what localcloud.aws.stack takes; MotoServer is the other)."""

    region = REGION

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


@pytest.fixture(scope="module")
def aws() -> Iterator[Clients]:
    with mock_aws():
        yield Clients()


@pytest.fixture(scope="module")
def stack(aws: Clients) -> Stack:
    return deploy(aws, ensure_built())


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    source = load_yaml(ensure_built().read_text())
    return sam_transform(package(source, ensure_built().parent).template, {}, REGION)


def of_type(template: dict[str, Any], rtype: str) -> list[str]:
    return [lid for lid, r in template["Resources"].items() if r["Type"] == rtype and "Condition" not in r]


def event(name: str, stack: Stack) -> dict[str, Any]:
    data = json.loads((ROOT / "events" / name).read_text())
    if data.get("source") == "aws.ssm":
        data["detail"]["document-name"] = stack.outputs["SwapDocumentName"]
    if data.get("source") == "aws.autoscaling":
        data["detail"]["LifecycleHookName"] = stack.parameters["LaunchHookName"]
    return data


def targets(stack: Stack, evt: dict[str, Any]) -> list[str]:
    return sorted(fn for r in stack.rules if r.pattern and matches(r.pattern, evt) for fn in r.targets)


def test_the_stack_is_created_with_every_resource_and_output_of_the_template(
    stack: Stack, transformed: dict[str, Any]
) -> None:
    # Given the deployable template after the SAM transform
    wanted = Counter(r["Type"] for r in transformed["Resources"].values() if "Condition" not in r)
    # Then CloudFormation completed and every resource exists: by moto or by the gap-filler
    assert stack.status == "CREATE_COMPLETE"
    created = Counter(stack.types.values())
    for rtype in cfn_gaps._CREATORS:
        created[rtype] += sum(1 for line in stack.gap_filled if f"({rtype})" in line)
    assert created == wanted
    assert len(stack.functions) == 5
    assert len([r for r in stack.rules if r.pattern]) == 5  # push, command, invocation, launch, alarm
    assert len(stack.documents) == 3  # swap, release task, diagnose
    assert set(stack.outputs) == set(load_yaml(ensure_built().read_text())["Outputs"])


def test_names_are_the_ones_cloudformation_generated(stack: Stack) -> None:
    # CloudFormation names what the template leaves unnamed: <stack>-<LogicalId>-<suffix>
    assert stack.physical["AppsTable"].startswith("deployer-AppsTable-")
    assert stack.outputs["AppsTableName"] == stack.physical["AppsTable"]
    assert stack.functions["OnImagePushFunction"].name.startswith("deployer-OnImagePushFunction-")


def test_what_moto_skips_exists_after_the_gap_filler(
    aws: Clients, stack: Stack, transformed: dict[str, Any]
) -> None:
    # Alarms, async retry settings with their on-failure destination, queue policies, TTL
    alarms = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert len(alarms) == len(of_type(transformed, "AWS::CloudWatch::Alarm"))
    assert all(a["AlarmActions"] == [stack.outputs["DeployNotificationsTopicArn"]] for a in alarms)
    lam = aws.client("lambda")
    for lid in of_type(transformed, "AWS::Lambda::EventInvokeConfig"):
        props = transformed["Resources"][lid]["Properties"]
        fn = stack.functions[props["FunctionName"]["Ref"]]
        config = lam.get_function_event_invoke_config(FunctionName=fn.name)
        assert config["MaximumRetryAttempts"] == props["MaximumRetryAttempts"] == fn.retries
        assert config["DestinationConfig"]["OnFailure"]["Destination"].startswith("arn:aws:sqs:")
    sqs = aws.client("sqs")
    for lid in of_type(transformed, "AWS::SQS::QueuePolicy"):
        queue = transformed["Resources"][lid]["Properties"]["Queues"][0]["Ref"]
        policy = sqs.get_queue_attributes(QueueUrl=stack.physical[queue], AttributeNames=["Policy"])
        statement = json.loads(policy["Attributes"]["Policy"])["Statement"][0]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Resource"].endswith(":" + stack.physical[queue].rsplit("/", 1)[1])
    ttl = aws.client("dynamodb").describe_time_to_live(TableName=stack.physical["IdempotencyTable"])
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


# moto announces the type it skips (test_a_type_no_gap_filler_knows_is_still_announced_by_moto)
@pytest.mark.filterwarnings("ignore:Tried to parse .*InsightRule:UserWarning")
def test_a_type_moto_skips_that_no_gap_filler_knows_is_an_error(aws: Clients) -> None:
    # Given a stack whose template has a resource moto's CloudFormation does not create
    # (removed afterwards: the module's other tests read the account the stack fixture deployed to)
    template = {"Resources": {"Rule": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {}}}}
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="gap", TemplateBody=json.dumps(template))
    try:
        # Then the gap-filler refuses to pretend the stack is complete
        with pytest.raises(cfn_gaps.UnfilledGap, match="Rule"):
            cfn_gaps.fill(aws, "gap", template)
    finally:
        cfn.delete_stack(StackName="gap")


def test_deploying_the_stack_prints_nothing_but_what_the_caller_prints() -> None:
    # Given a fresh process, as `make demo` and `make up` start one (no warning filters of ours)
    script = (
        "from localcloud.aws.motoserver import MotoServer\n"
        "from localcloud.aws.stack import deploy\n"
        "from tools.render_template import ensure_built\n"
        "with MotoServer() as moto:\n"
        "    print(deploy(moto, ensure_built()).status)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "AWS_PROFILE")}
    # When it starts a moto server and deploys the stack to it
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then the stack is complete and nothing else was printed: no library warning or log line
    assert (result.returncode, result.stdout) == (0, "CREATE_COMPLETE\n"), result.stderr
    assert result.stderr == ""


def test_a_type_no_gap_filler_knows_is_still_announced_by_moto(
    aws: Clients, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    # Given moto quieted for the types the gap-filler creates
    cfn_gaps.quiet_filled_types()
    template = {
        "Resources": {
            "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}},
            "Rule": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {}},
        }
    }
    cfn = aws.client("cloudformation")
    # When a stack holds one of them and a type nobody fills
    with caplog.at_level(logging.WARNING, logger="moto"):
        cfn.create_stack(StackName="announced", TemplateBody=json.dumps(template))
    cfn.delete_stack(StackName="announced")
    # Then moto still announces the unfilled type, and only that one
    announced = {r.getMessage() for r in caplog.records if r.name == "moto"}
    assert announced == {"No Moto CloudFormation support for AWS::CloudWatch::InsightRule"}
    warned = {str(w.message).split(" but ")[0] for w in recwarn if w.category is UserWarning}
    assert warned == {"Tried to parse AWS::CloudWatch::InsightRule"}


@pytest.mark.parametrize(
    ("sample", "function"),
    [
        ("ecr_image_push.json", "OnImagePushFunction"),
        ("ssm_command_status_success.json", "OnCommandStatusFunction"),
        ("ssm_command_invocation_failed.json", "OnCommandStatusFunction"),
        ("asg_instance_launch.json", "OnInstanceLaunchFunction"),
        ("cloudwatch_alarm_state_change.json", "OnCommandStatusFunction"),
    ],
)
def test_each_consumed_event_reaches_exactly_its_function(stack: Stack, sample: str, function: str) -> None:
    assert targets(stack, event(sample, stack)) == [function]


def test_a_failed_push_a_deletion_and_another_document_reach_nothing(stack: Stack) -> None:
    push = event("ecr_image_push.json", stack)
    failed = copy.deepcopy(push)
    failed["detail"]["result"] = "FAILURE"
    deleted = copy.deepcopy(push)
    deleted["detail"]["action-type"] = "DELETE"
    status = event("ssm_command_status_success.json", stack)
    status["detail"]["document-name"] = "AWS-RunShellScript"
    assert targets(stack, failed) == targets(stack, deleted) == targets(stack, status) == []


def test_only_an_alarm_going_into_alarm_reaches_on_command_status(stack: Stack) -> None:
    ok = event("cloudwatch_alarm_state_change.json", stack)
    ok["detail"]["state"]["value"] = "OK"
    assert targets(stack, ok) == []


def test_stage_ticks_reach_on_command_status_through_their_queue_with_their_delay(
    stack: Stack, aws: Clients
) -> None:
    # The stack's mapping feeds on-command-status from the queue its functions are told of
    (mapping,) = [m for m in stack.sqs_mappings if m.function == "OnCommandStatusFunction"]
    env = stack.functions["OnCommandStatusFunction"].environment
    assert env["STAGE_TICK_QUEUE_URL"] == mapping.queue_url
    assert stack.functions["ReconcilerFunction"].environment["STAGE_TICK_QUEUE_URL"] == mapping.queue_url
    # and moto holds a delayed tick back until its delay has passed
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=mapping.queue_url, MessageBody="{}", DelaySeconds=1)
    assert sqs.receive_message(QueueUrl=mapping.queue_url).get("Messages", []) == []
    time.sleep(1.2)
    assert len(sqs.receive_message(QueueUrl=mapping.queue_url).get("Messages", [])) == 1


def test_the_reconciler_runs_on_a_schedule(stack: Stack) -> None:
    scheduled = [r for r in stack.rules if r.schedule]
    assert [fn for r in scheduled for fn in r.targets] == ["ReconcilerFunction"]
    assert scheduled[0].schedule is not None
    assert scheduled[0].schedule.startswith(("rate(", "cron("))
    assert stack.functions["ReconcilerFunction"].retries == 0


def test_every_function_gets_the_stack_settings_and_its_own_code(stack: Stack) -> None:
    for lid, fn in stack.functions.items():
        settings = Settings.from_env({**fn.environment, "AWS_REGION": REGION})
        assert settings.apps_table == stack.outputs["AppsTableName"]
        assert settings.swap_document_name == stack.outputs["SwapDocumentName"]
        assert (fn.code_dir / "app.py").is_file(), lid
    assert len({fn.code_dir for fn in stack.functions.values()}) == 5


def test_the_cli_environment_comes_from_the_outputs(stack: Stack) -> None:
    env = stack.cli_env()
    assert set(env) == set(OUTPUT_ENV.values())
    settings = Settings.from_env({**env, "AWS_REGION": REGION})
    assert settings.releases_table == stack.physical["ReleasesTable"]
    assert env["DEPLOYER_ROLLBACK_FUNCTION"] == stack.functions["RollbackFunction"].name
    assert env["DEPLOYER_DIAGNOSE_DOCUMENT"] in stack.documents


@pytest.mark.parametrize(
    ("pattern", "hit"),
    [
        ({"detail": {"image-tag": [{"prefix": "v"}]}}, True),
        ({"detail": {"image-tag": [{"anything-but": {"prefix": "v"}}]}}, False),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"image-tag": [{"wildcard": "v*"}]}}, True),
        ({"detail": {"result": [{"equals-ignore-case": "success"}]}}, True),
        ({"$or": [{"detail": {"result": ["FAILURE"]}}, {"source": ["aws.ecr"]}]}, True),
    ],
)
def test_the_bus_matches_with_eventbridges_operators(
    stack: Stack, pattern: dict[str, Any], hit: bool
) -> None:
    assert matches(json.dumps(pattern), event("ecr_image_push.json", stack)) is hit
