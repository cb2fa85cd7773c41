"""Pure parts: notification messages as exact values, and the event models on real-shaped samples."""

from __future__ import annotations

import json

import pytest
from deployer.models.lifecycle_events import (
    CommandInvocationStatusEvent,
    CommandStatusEvent,
    InstanceLaunchEvent,
    PauseRequest,
    PromoteRequest,
    ResumeRequest,
    RollbackRequest,
    SsmStatus,
    parse_operation,
)
from deployer.notify import DeployNotice, HostResult, NoticeKind, build_message, summarize_hosts
from pydantic import ValidationError

from tests.lifecycle.conftest import World, load_event, notifications

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def test_a_rolled_back_deploy_reads_as_one_sentence_with_the_structured_fields() -> None:
    # Given two failed hosts out of five, one of them unreached
    results = [
        HostResult(instance_id="i-0000000000000000a", ok=True),
        HostResult(instance_id="i-0000000000000000b", ok=True),
        HostResult(instance_id="i-0000000000000000c", ok=True),
        HostResult(
            instance_id="i-0000000000000000d", ok=False, failure_class="health", message="GET /up gave 503."
        ),
        HostResult(instance_id="i-0000000000000000e", ok=False, failure_class="unreached"),
    ]
    ok, failed, classes, top = summarize_hosts(results)
    assert (ok, failed, classes) == (3, 1, {"health": 1, "unreached": 1})
    assert top == "1 host failed the health check; i-0000000000000000d: GET /up gave 503."
    notice = DeployNotice(
        kind=NoticeKind.ROLLED_BACK,
        app="web",
        release=8,
        tag="v8",
        digest=DIGEST,
        duration_seconds=93.4,
        hosts_ok=ok,
        hosts_failed=failed,
        hosts_unreached=1,
        failure_classes=classes,
        top_failure=top,
        rolled_back_to=7,
    )
    # When the message is built
    subject, message, attributes = build_message(notice)
    # Then subject, sentence and attributes are exactly these
    assert subject == "[deployer] web release 8 deploy FAILED, rolled back"
    body = json.loads(message)
    assert body["text"] == (
        "Deploy of web release 8 (v8) failed in 93s: 3 ok, 1 failed, 1 unreached. "
        "1 host failed the health check; i-0000000000000000d: GET /up gave 503. Rolling back to release 7."
    )
    assert body["event"] == "deploy_rolled_back"
    assert body["failure_classes"] == {"health": 1, "unreached": 1}
    assert attributes["event"] == {"DataType": "String", "StringValue": "deploy_rolled_back"}


def test_a_started_and_a_succeeded_deploy_read_plainly() -> None:
    started = DeployNotice(
        kind=NoticeKind.STARTED,
        app="web",
        release=3,
        digest=DIGEST,
        source="rollback",
        reason="rollback to release 1",
    )
    assert json.loads(build_message(started)[1])["text"] == (
        "Deploying web release 3 (sha256:abababababab, rollback): rollback to release 1."
    )
    done = DeployNotice(kind=NoticeKind.SUCCEEDED, app="web", release=3, tag="v1", digest=DIGEST, hosts_ok=4)
    assert json.loads(build_message(done)[1])["text"] == "Deployed web release 3 (v1): 4 ok, 0 failed."


def test_a_notice_carries_its_dedupe_id_in_the_message_and_in_its_attributes() -> None:
    notice = DeployNotice(
        kind=NoticeKind.SUCCEEDED, app="web", release=3, tag="v1", digest=DIGEST, hosts_ok=4
    )
    _, message, attributes = build_message(notice, "web#3#succeeded")
    assert json.loads(message)["dedupe_id"] == "web#3#succeeded"
    assert attributes["dedupe_id"] == {"DataType": "String", "StringValue": "web#3#succeeded"}
    _, bare, bare_attributes = build_message(notice)
    assert "dedupe_id" not in json.loads(bare)
    assert "dedupe_id" not in bare_attributes


def test_a_notice_sns_refused_stays_owed_and_goes_out_with_the_next_decision(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SNS refusing every publish (the topic is unreachable)
    real_topic = world.topic_arn
    monkeypatch.setattr(world.core.notifier, "_topic_arn", real_topic + "-gone")
    # When release 1 is pushed
    release = world.push(1, "v1")
    # Then the deploy started all the same, nothing was announced, and the notice is owed
    assert release.command_id is not None
    assert notifications(world) == []
    assert world.core.state.get("web").outbox == frozenset({"1:started"})
    # When SNS answers again and the release's command ends
    monkeypatch.setattr(world.core.notifier, "_topic_arn", real_topic)
    world.complete(release)
    # Then both notices go out, in order, once each, and none is owed any more
    messages = notifications(world)
    assert [(m["event"], m["dedupe_id"]) for m in messages] == [
        ("deploy_started", "web#1#started"),
        ("deploy_succeeded", "web#1#succeeded"),
    ]
    assert world.core.state.get("web").outbox == frozenset()


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("ssm_command_status_success.json", CommandStatusEvent),
        ("ssm_command_status_failed.json", CommandStatusEvent),
        ("ssm_command_invocation_success.json", CommandInvocationStatusEvent),
        ("ssm_command_invocation_failed.json", CommandInvocationStatusEvent),
        ("asg_instance_launch.json", InstanceLaunchEvent),
    ],
)
def test_every_sample_event_parses_with_its_model(name: str, model: type) -> None:
    assert model.model_validate(load_event(name))


def test_ssm_status_spellings_are_normalised_and_terminality_known() -> None:
    event = load_event("ssm_command_invocation_success.json")
    event["detail"]["status"] = "DeliveryTimedOut"
    parsed = CommandInvocationStatusEvent.model_validate(event)
    assert parsed.detail.status is SsmStatus.DELIVERY_TIMED_OUT
    assert parsed.detail.status.terminal
    assert not SsmStatus.IN_PROGRESS.terminal


def test_the_launch_event_carries_the_app_in_the_hooks_metadata() -> None:
    detail = InstanceLaunchEvent.model_validate(load_event("asg_instance_launch.json")).detail
    assert detail.metadata_app() == "web"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("rollback.json", RollbackRequest),
        ("rollback_to_tag.json", RollbackRequest),
        ("promote.json", PromoteRequest),
        ("pause.json", PauseRequest),
        ("resume.json", ResumeRequest),
    ],
)
def test_every_sample_operator_request_parses(name: str, kind: type) -> None:
    assert isinstance(parse_operation(load_event(name)), kind)


@pytest.mark.parametrize(
    "payload",
    [
        {"app": "Web"},
        {"app": "web", "to": 0},
        {"app": "web", "to": "sha256:123"},
        {"app": "web", "to": "$(reboot)"},
        {"app": "web", "reason": "two\nlines"},
        {"action": "promote", "app": "web"},
        {"app": "web", "to": True},
    ],
)
def test_bad_operator_requests_are_rejected(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_operation(payload)
