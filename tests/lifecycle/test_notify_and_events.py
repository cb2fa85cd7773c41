"""Deploy notifications as the operator and the topic see them (the sentence that sums up the
hosts, the subject of every kind, the JSON body and attributes, what the notifier publishes to
plain and FIFO topics, a notice SNS refused), and the event models on real-shaped samples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from deployer.errors import AwsCallFailed
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
from deployer.notify import DeployNotice, HostResult, NoticeKind, Notifier, build_message, summarize_hosts
from pydantic import ValidationError

from localcloud.aws import permissions
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
    world: World, monkeypatch: pytest.MonkeyPatch, enforced: permissions.Enforcer
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
    # (refused as AWS refuses it: the function's role may publish to the stack's topic only)
    assert [d.rsplit(": ", 1)[-1] for d in enforced.denied] == [f"sns:Publish on {real_topic}-gone"]
    enforced.denied.clear()
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


# ------------------------------------------------------------ notices: hosts, subjects, body, publishing
def failed(instance_id: str, failure_class: str, message: str = "") -> HostResult:
    return HostResult(instance_id=instance_id, ok=False, failure_class=failure_class, message=message)


def notice(kind: NoticeKind, **fields: Any) -> DeployNotice:
    return DeployNotice(kind=kind, app="web", release=12, tag="v12", digest=DIGEST, **fields)


# ------------------------------------------------------------------ summarize_hosts
def test_a_fleet_where_every_host_is_ok_has_no_top_failure() -> None:
    ok, failures, classes, top = summarize_hosts([HostResult(instance_id="i-1", ok=True)] * 3)
    assert (ok, failures, classes, top) == (3, 0, {}, None)


def test_hosts_of_the_same_class_are_counted_together_in_the_plural() -> None:
    # Given two hosts that failed the health check, neither with a message
    results = [failed("i-2", "health"), failed("i-1", "health")]
    # When they are summarized
    ok, failures, classes, top = summarize_hosts(results)
    # Then they are one class of two, said in the plural
    assert (ok, failures, classes) == (0, 2, {"health": 2})
    assert top == "2 hosts failed the health check."


def test_the_most_frequent_class_leads_even_when_its_name_sorts_later() -> None:
    # Given two pull failures and one health failure
    results = [failed("i-1", "pull"), failed("i-2", "health"), failed("i-3", "pull")]
    # Then the pull failures make the sentence
    assert summarize_hosts(results)[3] == "2 hosts could not pull the image."


def test_a_tie_between_classes_is_broken_by_name_not_by_arrival() -> None:
    # Given one pull failure reported before one health failure
    results = [failed("i-1", "pull"), failed("i-2", "health")]
    # Then "health" (first by name) makes the sentence, whatever the order of the reports
    assert summarize_hosts(results)[3] == "1 host failed the health check."
    assert summarize_hosts(list(reversed(results)))[3] == "1 host failed the health check."


def test_an_unknown_failure_class_is_named_as_it_came() -> None:
    assert summarize_hosts([failed("i-1", "oom")])[3] == "1 host failed (oom)."


def test_the_example_is_the_first_host_by_id_of_the_top_class_that_has_a_message() -> None:
    # Given three health failures, the first by id without a message, and a pull failure
    results = [
        failed("i-3", "health", "GET /up gave 502"),
        failed("i-1", "health"),
        failed("i-2", "health", "GET /up gave 503."),
        failed("i-0", "pull", "manifest unknown"),
    ]
    # Then the example is i-2, the first host by id of the top class that says something
    assert summarize_hosts(results)[3] == "3 hosts failed the health check; i-2: GET /up gave 503."


def test_no_example_is_taken_from_another_class() -> None:
    # Given two silent health failures and a pull failure with a message
    results = [failed("i-1", "health"), failed("i-2", "health"), failed("i-0", "pull", "manifest unknown")]
    # Then the sentence has no example rather than the pull failure's message
    assert summarize_hosts(results)[3] == "2 hosts failed the health check."


def test_only_trailing_full_stops_are_dropped_from_the_example() -> None:
    results = [failed("i-1", "start", "exit 137 (OOM) in container X.")]
    assert (
        summarize_hosts(results)[3]
        == "1 host could not start the new container; i-1: exit 137 (OOM) in container X."
    )


# ------------------------------------------------------------------ sentence and build_message
def test_a_started_deploy_keeps_the_reason_without_its_final_stop() -> None:
    started = notice(NoticeKind.STARTED, reason=".. manual deploy by ops X.")
    text = json.loads(build_message(started)[1])["text"]
    assert text == "Deploying web release 12 (v12, push): .. manual deploy by ops X."


def test_a_rollback_without_a_target_release_says_it_rolled_back() -> None:
    rolled = notice(NoticeKind.ROLLED_BACK, hosts_ok=1, hosts_failed=1, top_failure="1 host timed out.")
    text = json.loads(build_message(rolled)[1])["text"]
    assert text == "Deploy of web release 12 (v12) failed: 1 ok, 1 failed. 1 host timed out. Rolled back."


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        (NoticeKind.STARTED, "[deployer] web release 12 deploying"),
        (NoticeKind.SUCCEEDED, "[deployer] web release 12 deployed"),
        (NoticeKind.FAILED, "[deployer] web release 12 deploy FAILED"),
        (NoticeKind.ROLLED_BACK, "[deployer] web release 12 deploy FAILED, rolled back"),
    ],
)
def test_every_kind_has_its_subject_and_event(kind: NoticeKind, subject: str) -> None:
    built_subject, message, attributes = build_message(notice(kind))
    assert built_subject == subject
    assert json.loads(message)["event"] == f"deploy_{kind.value}"
    assert attributes == {
        "app": {"DataType": "String", "StringValue": "web"},
        "event": {"DataType": "String", "StringValue": f"deploy_{kind.value}"},
    }


def test_the_body_is_compact_json_with_sorted_keys_and_plain_values() -> None:
    # Given a failed deploy with classes and a duration
    failed_notice = notice(
        NoticeKind.FAILED, duration_seconds=12.5, hosts_failed=2, failure_classes={"pull": 2}
    )
    # When its message is built
    message = build_message(failed_notice)[1]
    # Then the body is the canonical JSON of its fields (same notice, same bytes)
    body = json.loads(message)
    assert message == json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert list(body) == sorted(body)
    assert body["kind"] == "failed"
    assert body["failure_classes"] == {"pull": 2}
    assert body["duration_seconds"] == 12.5
    assert "dedupe_id" not in body


def test_a_dedupe_id_rides_in_the_body_and_the_attributes() -> None:
    _, message, attributes = build_message(notice(NoticeKind.SUCCEEDED), "web#12#succeeded")
    assert json.loads(message)["dedupe_id"] == "web#12#succeeded"
    assert attributes["dedupe_id"] == {"DataType": "String", "StringValue": "web#12#succeeded"}
    assert set(attributes) == {"app", "event", "dedupe_id"}


# ------------------------------------------------------------------ Notifier
class FakeSns:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def publish(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        return {"MessageId": f"m-{len(self.calls)}"}


def test_without_a_topic_nothing_is_published() -> None:
    sns = FakeSns()
    notifier = Notifier(None, sns)
    assert not notifier.enabled
    assert notifier.publish(notice(NoticeKind.STARTED)) is None
    assert sns.calls == []


def test_a_standard_topic_gets_the_built_message_and_no_fifo_fields() -> None:
    # Given a standard topic, reached through a client factory
    sns = FakeSns()
    notifier = Notifier("arn:aws:sns:us-east-1:123456789012:deploys", lambda: sns)
    started = notice(NoticeKind.STARTED)
    # When a notice is published with a dedupe id
    message_id = notifier.publish(started, "web#12#started")
    # Then SNS got exactly the built message, and its id comes back
    subject, message, attributes = build_message(started, "web#12#started")
    assert notifier.enabled
    assert message_id == "m-1"
    assert sns.calls == [
        {
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:deploys",
            "Subject": subject,
            "Message": message,
            "MessageAttributes": attributes,
        }
    ]


def test_a_fifo_topic_deduplicates_on_the_id_cut_to_128_characters_per_app() -> None:
    sns = FakeSns()
    notifier = Notifier("arn:aws:sns:us-east-1:123456789012:deploys.fifo", sns)
    dedupe_id = "web#12#failed#" + "x" * 200
    notifier.publish(notice(NoticeKind.FAILED), dedupe_id)
    (call,) = sns.calls
    assert call["MessageDeduplicationId"] == dedupe_id[:128]
    assert len(call["MessageDeduplicationId"]) == 128
    assert call["MessageGroupId"] == "web"


def test_a_fifo_topic_without_a_dedupe_id_gets_no_fifo_fields() -> None:
    sns = FakeSns()
    Notifier("arn:aws:sns:us-east-1:123456789012:deploys.fifo", sns).publish(notice(NoticeKind.FAILED))
    (call,) = sns.calls
    assert "MessageDeduplicationId" not in call
    assert "MessageGroupId" not in call


def test_a_refused_publish_names_the_notice() -> None:
    error = ClientError({"Error": {"Code": "AuthorizationError", "Message": "denied"}}, "Publish")
    notifier = Notifier("arn:aws:sns:us-east-1:123456789012:deploys", FakeSns(error))
    with pytest.raises(
        AwsCallFailed,
        match=r"^publishing the failed notice of web release 12 failed: "
        r"AuthorizationError",
    ):
        notifier.publish(notice(NoticeKind.FAILED))
