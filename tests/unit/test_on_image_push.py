"""The push → release → fleet path, through the Lambda handler, under moto."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import boto3
import pytest
from deployer.models.config import AppConfig
from deployer.observability import logger

from functions.on_image_push.app import handler
from localcloud import moto_gaps
from tests.conftest import GROUP, REGION, create_fleet

pytestmark = pytest.mark.unit

DIGEST = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd12345678"


class Context:
    function_name = "OnImagePush"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:OnImagePush"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def invoke(event: Any) -> dict[str, Any]:
    return handler(event, Context())


def snapshot(fleet: Any) -> dict[str, Any]:
    """Everything a push may change: releases, pointer, launch-template versions, group, commands."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    ssm = boto3.client("ssm", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    params = ssm.get_parameters_by_path(Path="/deployer", Recursive=True)["Parameters"]
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return {
        "releases": ddb.scan(TableName="ReleasesTable")["Items"],
        "pointer": [(p["Name"], p["Value"], p["Version"]) for p in params],
        "versions": len(
            ec2.describe_launch_template_versions(LaunchTemplateId=fleet.template_id)["LaunchTemplateVersions"]
        ),
        "group_version": group["LaunchTemplate"]["Version"],
        "commands": len(moto_gaps.commands()),
    }


def test_a_push_yields_one_release_the_pointer_one_template_version_and_one_command(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any, aws_calls: Any
) -> None:
    # Given an app registered for team/web and its group on launch-template version 1
    event = load_event("ecr_image_push")

    # When the ECR push event reaches the handler
    result = invoke(event)

    # Then exactly one release is recorded, DEPLOYING, by digest, with the command id
    assert result["status"] == "accepted"
    assert [r["action"] for r in result["results"]] == ["started"]
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName="ReleasesTable")["Items"]
    assert len(items) == 1
    release = items[0]
    assert release["release"]["N"] == "1"
    assert release["status"]["S"] == "DEPLOYING"
    assert release["digest"]["S"] == DIGEST
    assert release["image"]["S"] == f"123456789012.dkr.ecr.us-east-1.amazonaws.com/team/web@{DIGEST}"
    assert release["tag"]["S"] == "v1.4.2"
    # and the pointer names that release
    ssm = boto3.client("ssm", region_name=REGION)
    pointer = json.loads(ssm.get_parameter(Name="/deployer/web/release")["Parameter"]["Value"])
    assert (pointer["app"], pointer["release"], pointer["digest"]) == ("web", 1, DIGEST)
    assert pointer["source"] == "push"
    # and one new launch-template version boots this digest, with the group on its number
    ec2 = boto3.client("ec2", region_name=REGION)
    described = ec2.describe_launch_template_versions(LaunchTemplateId=fleet.template_id)
    versions = described["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in versions) == [1, 2]
    new = next(v for v in versions if v["VersionNumber"] == 2)
    user_data = base64.b64decode(new["LaunchTemplateData"]["UserData"]).decode()
    assert DIGEST in user_data
    assert "--release=1" in user_data
    old = next(v for v in versions if v["VersionNumber"] == 1)["LaunchTemplateData"]
    assert {k: v for k, v in new["LaunchTemplateData"].items() if k != "UserData"} == old
    group = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"][0]
    assert group["LaunchTemplate"]["Version"] == "2"
    assert release["launch_template_version"]["N"] == "2"
    # and one command targets the group's tag at the app's rate, with CloudWatch output
    commands = moto_gaps.commands()
    assert len(commands) == 1
    command = commands[0]
    assert command.document_name == "SwapDocument"
    assert command.targets == [{"Key": "tag:aws:autoscaling:groupName", "Values": [GROUP]}]
    assert (command.max_concurrency, command.max_errors) == ("50%", "1")
    assert command.parameters["image"] == [release["image"]["S"]]
    assert command.parameters["release"] == ["1"]
    assert sorted(command.instance_ids) == fleet.instance_ids
    assert release["command_id"]["S"] == command.command_id
    # (moto does not keep the timeout and output settings: read them from the recorded request)
    sent = [c.params for c in aws_calls.calls if c.operation == "SendCommand"]
    assert len(sent) == 1
    # the delivery deadline covers every wave: 50% of a group of up to 6 is at worst 3 waves of
    # 300 s, plus 600 s to deliver
    assert sent[0]["TimeoutSeconds"] == 1500
    assert sent[0]["CloudWatchOutputConfig"] == {
        "CloudWatchLogGroupName": "/deployer/test/swap",
        "CloudWatchOutputEnabled": True,
    }


def test_delivering_the_same_push_twice_changes_nothing(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any
) -> None:
    # Given a push that was delivered once
    event = load_event("ecr_image_push")
    first = invoke(event)
    before = snapshot(fleet)

    # When EventBridge delivers it again (even under a new event id)
    again = copy.deepcopy(event)
    again["id"] = "another-delivery-id"
    second = invoke(again)

    # Then the answer is the stored one and nothing changed
    assert second == first
    assert snapshot(fleet) == before


def _bad(mutate: Any) -> Any:
    def build(event: dict[str, Any]) -> Any:
        event = copy.deepcopy(event)
        return mutate(event)

    return build


BAD_EVENTS = {
    "malformed json": _bad(lambda e: json.dumps(e)[:-7]),
    "not an object": _bad(lambda e: ["ECR Image Action"]),
    "missing detail": _bad(lambda e: {k: v for k, v in e.items() if k != "detail"}),
    "missing digest": _bad(
        lambda e: {**e, "detail": {k: v for k, v in e["detail"].items() if k != "image-digest"}}
    ),
    "wrong detail-type": _bad(lambda e: {**e, "detail-type": "ECR Image Scan"}),
    "wrong source": _bad(lambda e: {**e, "source": "aws.ec2"}),
    "delete action": _bad(lambda e: {**e, "detail": {**e["detail"], "action-type": "DELETE"}}),
    "failed push": _bad(lambda e: {**e, "detail": {**e["detail"], "result": "FAILURE"}}),
    "short digest": _bad(lambda e: {**e, "detail": {**e["detail"], "image-digest": "sha256:abc"}}),
    "uppercase digest": _bad(lambda e: {**e, "detail": {**e["detail"], "image-digest": DIGEST.upper()}}),
    "tag with ;": _bad(lambda e: {**e, "detail": {**e["detail"], "image-tag": "v1;rm -rf /"}}),
    "tag with $()": _bad(lambda e: {**e, "detail": {**e["detail"], "image-tag": "$(reboot)"}}),
    "tag with backtick": _bad(lambda e: {**e, "detail": {**e["detail"], "image-tag": "`id`"}}),
    "tag with quote": _bad(lambda e: {**e, "detail": {**e["detail"], "image-tag": "v1'"}}),
    "tag with newline": _bad(lambda e: {**e, "detail": {**e["detail"], "image-tag": "v1\nv2"}}),
    "repository with space": _bad(lambda e: {**e, "detail": {**e["detail"], "repository-name": "team web"}}),
}


def test_every_bad_input_is_rejected_with_a_clear_error_and_changes_nothing(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any, capsys: Any, caplog: Any
) -> None:
    # Given a registered app, and for each case a malformed push event
    before = snapshot(fleet)
    problems = []
    for case, build in sorted(BAD_EVENTS.items()):
        caplog.clear()
        capsys.readouterr()

        # When it reaches the handler
        result = invoke(build(load_event("ecr_image_push")))

        # Then it is rejected with an error, one log line and a metric, and nothing changed
        logs = [r.getMessage() for r in caplog.records]
        metric_emitted = '"BadInput"' in capsys.readouterr().out
        if result["status"] != "rejected" or not result["error"]:
            problems.append(f"{case}: not rejected: {result}")
        if logs != ["push event rejected"] or not metric_emitted:
            problems.append(f"{case}: logs {logs}, metric emitted: {metric_emitted}")
        if snapshot(fleet) != before:
            problems.append(f"{case}: state changed")
    assert problems == []


def test_the_rejection_names_the_bad_field(lambda_env: Any, load_event: Any) -> None:
    # Given a push whose tag carries a shell metacharacter
    event = load_event("ecr_image_push")
    event["detail"]["image-tag"] = "v1;reboot"

    # When it reaches the handler
    result = invoke(event)

    # Then the error names the field
    assert result["status"] == "rejected"
    assert "detail.image-tag" in result["error"]


def test_a_push_to_an_unknown_repository_is_logged_and_changes_nothing(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any, capsys: Any, caplog: Any
) -> None:
    # Given a push to a repository no app deploys from
    event = load_event("ecr_image_push")
    event["detail"]["repository-name"] = "team/other"
    before = snapshot(fleet)

    # When it reaches the handler
    result = invoke(event)

    # Then it is accepted as a no-op with a log line and a metric, and nothing changed
    assert result["results"] == []
    assert "push ignored: no app deploys this repository" in [r.getMessage() for r in caplog.records]
    assert '"PushIgnored"' in capsys.readouterr().out
    assert snapshot(fleet) == before


def test_a_tag_outside_the_filter_changes_nothing(
    lambda_env: Any, deps: Any, web_config: Any, fleet: Any, load_event: Any
) -> None:
    # Given an app that deploys only tags matching release-*
    deps.apps.put(AppConfig.parse({**web_config, "tag_filter": ["release-*"]}))
    before = snapshot(fleet)

    # When a push tagged v1.4.2 arrives
    result = invoke(load_event("ecr_image_push"))

    # Then it is ignored and nothing changed
    assert [r["action"] for r in result["results"]] == ["ignored"]
    assert snapshot(fleet) == before


def test_an_invalid_stored_app_config_is_reported_and_changes_nothing(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any
) -> None:
    # Given an apps-table item whose config was corrupted outside the CLI
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.update_item(
        TableName="AppsTable",
        Key={"app": {"S": "web"}},
        UpdateExpression="SET config = :c",
        ExpressionAttributeValues={":c": {"S": json.dumps({"app": "web", "repository": "team/web"})}},
    )
    before = snapshot(fleet)

    # When a push arrives
    result = invoke(load_event("ecr_image_push"))

    # Then the error names the missing field, and nothing changed
    assert result["status"] == "rejected"
    assert "container" in result["error"]
    assert snapshot(fleet) == before


def test_log_lines_carry_the_eventbridge_event_id_as_correlation_id(
    lambda_env: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a push event
    event = load_event("ecr_image_push")

    # When the handler runs
    invoke(event)

    # Then the logger's correlation id is the event id
    assert logger.get_correlation_id() == event["id"]


def test_an_untagged_push_is_ignored_with_a_log_line_and_a_metric(
    lambda_env: Any, registered_app: Any, fleet: Any, load_event: Any, capsys: Any, caplog: Any
) -> None:
    # Given an app with the default tag filter ["*"], and AWS's push event without image-tag
    # (buildx pushes multi-arch children and attestations by digest, untagged)
    assert registered_app.tag_filter == ("*",)
    event = load_event("ecr_image_push_untagged")
    assert "image-tag" not in event["detail"]
    before = snapshot(fleet)

    # When it reaches the handler
    result = invoke(event)

    # Then the decision "ignored: untagged" is recorded in the answer, logged and counted,
    # and no release, pointer, template version or command appeared
    assert result["status"] == "accepted"
    assert result["results"] == [
        {"app": "web", "action": "ignored", "reason": "untagged push", "release": None, "command_id": None}
    ]
    assert any(r.getMessage().startswith("push ignored: untagged") for r in caplog.records)
    assert '"PushUntagged"' in capsys.readouterr().out
    assert snapshot(fleet) == before


def _two_apps_on_one_repository(deps: Any, web_config: dict[str, Any]) -> Any:
    """staging and prod share team/web, split by tag filter, each with its own group."""
    prod_fleet = create_fleet(group="web-prod-asg")
    deps.apps.put(AppConfig.parse({**web_config, "app": "web-staging", "tag_filter": ["staging-*"]}))
    deps.apps.put(
        AppConfig.parse(
            {
                **web_config,
                "app": "web-prod",
                "tag_filter": ["v*"],
                "auto_scaling_group": prod_fleet.group,
                "launch_template": prod_fleet.template_id,
            }
        )
    )
    return prod_fleet


def test_re_tagging_a_pushed_digest_deploys_to_the_app_whose_filter_matches_the_new_tag(
    lambda_env: Any, deps: Any, web_config: dict[str, Any], fleet: Any, load_event: Any
) -> None:
    # Given staging and prod on one repository, and a digest pushed as staging-1 (staging deployed it)
    prod_fleet = _two_apps_on_one_repository(deps, web_config)
    staging_push = load_event("ecr_image_push")
    staging_push["detail"]["image-tag"] = "staging-1"
    first = invoke(staging_push)
    actions = {r["app"]: r["action"] for r in first["results"]}
    assert actions == {"web-staging": "started", "web-prod": "ignored"}

    # When the same digest is re-tagged v1.4.2 (ECR emits a second push event for it)
    retag = load_event("ecr_image_push")
    retag["id"] = "13cde686-328b-6117-af20-0e55661674aa"
    second = invoke(retag)

    # Then prod records a release of that digest under the new tag and sends its swap to its group
    actions = {r["app"]: r["action"] for r in second["results"]}
    assert actions == {"web-staging": "ignored", "web-prod": "started"}
    prod = deps.releases.list_recent("web-prod")
    assert [(r.digest, r.tag) for r in prod] == [(DIGEST, "v1.4.2")]
    prod_commands = [
        c for c in moto_gaps.commands() if c.targets[0]["Values"] == [prod_fleet.group]
    ]
    assert [c.command_id for c in prod_commands] == [prod[0].command_id]


def test_the_exact_same_retag_event_delivered_again_is_still_deduplicated(
    lambda_env: Any, deps: Any, web_config: dict[str, Any], fleet: Any, load_event: Any
) -> None:
    # Given a re-tag push that was delivered once
    _two_apps_on_one_repository(deps, web_config)
    staging_push = load_event("ecr_image_push")
    staging_push["detail"]["image-tag"] = "staging-1"
    invoke(staging_push)
    retag = load_event("ecr_image_push")
    first = invoke(retag)
    before = snapshot(fleet)
    commands = len(moto_gaps.commands())

    # When EventBridge delivers the same push again under a new event id
    again = copy.deepcopy(retag)
    again["id"] = "yet-another-delivery-id"
    second = invoke(again)

    # Then the stored answer comes back and nothing changed
    assert second == first
    assert snapshot(fleet) == before
    assert len(moto_gaps.commands()) == commands
