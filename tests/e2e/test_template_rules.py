"""The local cloud's EventBridge reads its rules from template.yaml: each AWS event the stack
consumes reaches the function meant for it, and look-alikes reach nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from localcloud.patterns import matches
from localcloud.template import Template
from tools.render_template import ensure_built

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> Template:
    return Template(ensure_built())


def event(name: str, template: Template) -> dict:
    data = json.loads((ROOT / "events" / name).read_text())
    if data.get("source") == "aws.ssm":
        data["detail"]["document-name"] = template.physical["SwapDocument"]
    if data.get("source") == "aws.autoscaling":
        data["detail"]["LifecycleHookName"] = template.parameters["LaunchHookName"]
    return data


def targets(template: Template, evt: dict) -> list[str]:
    return sorted(
        fn for rule in template.rules() if rule.pattern and matches(rule.pattern, evt) for fn in rule.targets
    )


@pytest.mark.parametrize(
    ("sample", "function"),
    [
        ("ecr_image_push.json", "OnImagePushFunction"),
        ("ssm_command_status_success.json", "OnCommandStatusFunction"),
        ("ssm_command_invocation_failed.json", "OnCommandStatusFunction"),
        ("asg_instance_launch.json", "OnInstanceLaunchFunction"),
    ],
)
def test_each_consumed_event_reaches_exactly_its_function(
    template: Template, sample: str, function: str
) -> None:
    assert targets(template, event(sample, template)) == [function]


def test_a_failed_push_and_a_deletion_reach_nothing(template: Template) -> None:
    push = event("ecr_image_push.json", template)
    failed = copy.deepcopy(push)
    failed["detail"]["result"] = "FAILURE"
    deleted = copy.deepcopy(push)
    deleted["detail"]["action-type"] = "DELETE"
    assert targets(template, failed) == []
    assert targets(template, deleted) == []


def test_commands_of_another_document_reach_nothing(template: Template) -> None:
    status = event("ssm_command_status_success.json", template)
    status["detail"]["document-name"] = "AWS-RunShellScript"
    assert targets(template, status) == []


def test_the_reconciler_runs_on_a_schedule(template: Template) -> None:
    scheduled = [r for r in template.rules() if r.schedule]
    assert [fn for r in scheduled for fn in r.targets] == ["ReconcilerFunction"]
    assert scheduled[0].schedule.startswith(("rate(", "cron("))


def test_every_function_gets_the_stack_settings_from_the_template(template: Template) -> None:
    for fn in template.functions().values():
        env = fn.environment
        assert env["APPS_TABLE"] == template.physical["AppsTable"]
        assert env["SWAP_DOCUMENT_NAME"] == template.physical["SwapDocument"]
        assert env["NOTIFICATION_TOPIC_ARN"].startswith("arn:aws:sns:")
