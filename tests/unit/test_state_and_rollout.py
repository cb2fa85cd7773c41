"""The deploy lock, release numbering and statuses, the pending queue, and the release
controller starting a release (docs/architecture.md, "The release controller")."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from deployer import controller
from deployer.adapters.app_state import AppState, StateChange
from deployer.adapters.transactions import Refused, Transaction
from deployer.admission import PushAction, accept_push
from deployer.aws import ClientFactory
from deployer.errors import AwsCallFailed, DeployInProgress, ReleaseNotFound
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.notify import Notifier
from deployer.wiring import Adapters
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.launch_templates import LaunchTemplates as LaunchTemplatesResponse
from pydantic import ValidationError

from localcloud import moto_gaps
from tests.conftest import GROUP, REGION, commands_succeed

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0


def push(load_event: Any, digest_byte: str, tag: str, time: str | None = None) -> Any:
    event = copy.deepcopy(load_event("ecr_image_push"))
    event["detail"]["image-digest"] = "sha256:" + digest_byte * 64
    event["detail"]["image-tag"] = tag
    if time is not None:
        event["time"] = time
    return parse_push_event(event)


def admit(
    ad: Adapters, config: AppConfig, digest_byte: str, *, operator: bool = False
) -> controller.Admitted:
    """Record a release the way every trigger does (no command is sent)."""
    digest = "sha256:" + digest_byte * 64
    return controller.admit(
        ad,
        config,
        image=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{config.repository}@{digest}",
        digest=digest,
        tag=f"v{digest_byte}",
        source=ReleaseSource.MANUAL if operator else ReleaseSource.PUSH,
        reason="test",
        token=controller.new_token(),
        operator=operator,
    )


def group_version() -> str:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return str(group["LaunchTemplate"]["Version"])


def deploy_first_release(deps: Any, load_event: Any) -> None:
    """Release 1 pushed and, its command ended Success on every host, SUCCEEDED."""
    accept_push(deps, push(load_event, "1", "v1"))
    assert commands_succeed() == 1
    controller.converge(deps, "web")
    assert deps.releases.get("web", 1).status == ReleaseStatus.SUCCEEDED


@pytest.fixture
def clock(deps: Any, settings: Any) -> list[float]:
    """The controller's clock (claims, lock display times), moved by the test."""
    now = [T0]
    deps.state = AppState(deps.clients.client("dynamodb"), settings.app_state_table, clock=lambda: now[0])
    return now


@pytest.fixture
def notices(deps: Any) -> Callable[[], list[dict[str, Any]]]:
    """An SNS topic with a queue subscribed; returns a reader of every notice published so far."""
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="deploys")["TopicArn"]
    queue = sqs.create_queue(QueueName="deploys")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    deps.notifier = Notifier(topic, lambda: deps.clients.client("sns"))
    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        while True:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return list(seen)
            for message in messages:
                seen.append(json.loads(json.loads(message["Body"])["Message"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return read


def ec2_refuses_new_versions(monkeypatch: pytest.MonkeyPatch, code: str, message: str) -> None:
    def refuse(self: Any) -> Any:
        raise EC2ClientError(code, message)

    monkeypatch.setattr(LaunchTemplatesResponse, "create_launch_template_version", refuse)


# ------------------------------------------------------------------ numbers, lock, statuses
def test_release_numbers_increase_per_app(deps: Any, registered_app: Any) -> None:
    # Given two apps
    api = AppConfig.parse({**registered_app.model_dump(mode="json"), "app": "api"})

    # When web records three releases and api one
    numbers = [admit(deps, registered_app, byte).release for byte in "123"]
    api_number = admit(deps, api, "4").release

    # Then each app counts on its own
    assert numbers == [1, 2, 3]
    assert api_number == 1
    assert [r.release for r in deps.releases.list_recent("web")] == [3, 2, 1]
    assert (deps.state.get("web").last_release, deps.state.get("api").last_release) == (3, 1)


def test_the_lock_has_one_holder_until_a_decision_moves_it(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given release 1 rolling out, holding the lock
    accept_push(deps, push(load_event, "1", "v1"))
    assert deps.state.get("web").lock_owner == "web#1"

    # When a decision that read the lock free, or held by another release, is committed
    for read in (None, "web#2"):
        change = StateChange("web", expect_owner=read, owner="web#3")
        with pytest.raises(Refused) as err:
            Transaction().add("state", deps.state.change_item(change)).commit(
                deps.dynamodb, "taking the lock"
            )

        # Then it is refused, naming the state, and the lock is still release 1's
        assert err.value.labels == frozenset({"state"})
    assert deps.state.get("web").lock_owner == "web#1"
    # and an operator deploy is refused while it runs
    with pytest.raises(DeployInProgress):
        admit(deps, registered_app, "2", operator=True)

    # When release 1's command has ended (Success on every host) and the controller decides
    assert commands_succeed() == 1
    controller.converge(deps, "web")

    # Then release 1 SUCCEEDED and the decision freed the lock
    assert deps.releases.get("web", 1).status == ReleaseStatus.SUCCEEDED
    state = deps.state.get("web")
    assert state.lock_owner is None
    assert not state.locked()
    assert state.desired == 1


def test_a_lock_is_never_taken_over_by_a_timer(
    deps: Any, registered_app: Any, load_event: Any, clock: list[float]
) -> None:
    # Given release 1 rolling out (pending commands: SSM has not finished it)
    accept_push(deps, push(load_event, "1", "v1"))

    # When a day has passed, and another push arrives
    clock[0] = T0 + 86_400
    result = accept_push(deps, push(load_event, "2", "v2"))

    # Then the push waits: only a decision moves the lock, never a timer
    assert result.results[0].action == PushAction.PENDING
    assert deps.state.get("web").lock_owner == "web#1"
    assert deps.releases.get("web", 1).status == ReleaseStatus.DEPLOYING
    assert deps.releases.get("web", 2).status == ReleaseStatus.PENDING
    assert len(moto_gaps.commands()) == 1


def test_a_dead_invocations_send_claim_is_taken_over_without_sending_twice(
    deps: Any, registered_app: Any, load_event: Any, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a push whose invocation died right after SendCommand, before recording the command id
    def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("invocation killed")

    with monkeypatch.context() as patch:
        patch.setattr(deps.releases, "set_fields", crash)
        with pytest.raises(RuntimeError):
            accept_push(deps, push(load_event, "1", "v1"))
    sent = moto_gaps.commands()
    assert len(sent) == 1
    assert deps.releases.get("web", 1).command_id is None

    # When the controller runs again while the claim may still be alive (30 s later)
    clock[0] = T0 + 30
    controller.converge(deps, "web")

    # Then it leaves the release to its claimant
    assert deps.releases.get("web", 1).command_id is None
    assert len(moto_gaps.commands()) == 1

    # When it runs after the claim outlived any invocation (91 s)
    clock[0] = T0 + controller.SEND_CLAIM_SECONDS + 1
    controller.converge(deps, "web")

    # Then it found the command the dead invocation sent and recorded it: none sent twice
    assert len(moto_gaps.commands()) == 1
    assert deps.releases.get("web", 1).command_id == sent[0].command_id


def ended(number: int, status: ReleaseStatus, reason: str) -> controller.Decision:
    """A decision that only moves release `number` of web from DEPLOYING to `status`."""
    return controller.Decision("web").transition(
        controller.Transition(number, status, reason, frozenset({ReleaseStatus.DEPLOYING}))
    )


def test_status_changes_follow_the_lifecycle(deps: Any, registered_app: Any, load_event: Any) -> None:
    # Given a release started by a push, and a decision that it SUCCEEDED
    number = accept_push(deps, push(load_event, "1", "v1")).results[0].release
    controller.commit(deps, ended(number, ReleaseStatus.SUCCEEDED, "fleet ok"))
    first = deps.releases.get("web", number)
    assert (first.status, first.status_reason) == (ReleaseStatus.SUCCEEDED, "fleet ok")
    assert first.finished_at is not None

    # When the same decision is made again (a duplicate event), or a late one sends it back
    with pytest.raises(Refused):
        controller.commit(deps, ended(number, ReleaseStatus.SUCCEEDED, "again"))
    with pytest.raises(Refused):
        controller.commit(
            deps,
            controller.Decision("web").transition(
                controller.Transition(
                    number, ReleaseStatus.DEPLOYING, "late", frozenset({ReleaseStatus.PENDING})
                )
            ),
        )

    # Then the release is as the first decision left it
    assert deps.releases.get("web", number) == first
    assert deps.releases.latest_succeeded("web").release == number
    assert deps.releases.by_command_id(first.command_id).release == number


def test_pushes_during_a_deploy_wait_and_only_the_newest_stays_pending(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a deploy in progress (release 1)
    first = accept_push(deps, push(load_event, "1", "v1"))
    assert first.results[0].action == PushAction.STARTED

    # When three more pushes arrive
    for byte, tag in (("2", "v2"), ("3", "v3"), ("4", "v4")):
        result = accept_push(deps, push(load_event, byte, tag))
        assert result.results[0].action == PushAction.PENDING

    # Then only release 4 is pending, 2 and 3 are superseded, and one command was sent
    statuses = {r.release: r.status for r in deps.releases.list_recent("web")}
    assert statuses == {
        1: ReleaseStatus.DEPLOYING,
        2: ReleaseStatus.SUPERSEDED,
        3: ReleaseStatus.SUPERSEDED,
        4: ReleaseStatus.PENDING,
    }
    assert [r.release for r in deps.releases.pending("web")] == [4]
    assert len(moto_gaps.commands()) == 1
    assert deps.state.get("web").lock_owner == "web#1"


def test_a_paused_app_records_pushes_as_pending(deps: Any, registered_app: Any, load_event: Any) -> None:
    deps.state.set_paused("web", True, reason="incident")
    result = accept_push(deps, push(load_event, "1", "v1"))
    assert result.results[0].action == PushAction.PENDING
    assert len(moto_gaps.commands()) == 0
    assert deps.pointer.get("web") is None


def test_a_refused_digest_is_not_deployed_again(deps: Any, registered_app: Any, load_event: Any) -> None:
    # Given a digest that failed and was refused
    event = push(load_event, "9", "v9")
    deps.state.refuse_digest("web", event.detail.image_digest)

    # When it is pushed again
    result = accept_push(deps, event)

    # Then it is refused and nothing is recorded
    assert result.results[0].action == PushAction.REFUSED
    assert deps.releases.list_recent("web") == []


# ------------------------------------------------------------------ a start that fails
def test_a_deploy_whose_launch_template_version_is_refused_fails_and_is_put_back(
    deps: Any,
    registered_app: Any,
    load_event: Any,
    notices: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given release 1 live (group on its version 2), then EC2 refusing the next version for good
    deploy_first_release(deps, load_event)
    assert group_version() == "2"
    ec2_refuses_new_versions(monkeypatch, "InvalidParameterValue", "The launch template data is invalid")

    # When release 2 is pushed
    accept_push(deps, push(load_event, "2", "v2"))

    # Then release 2 is FAILED with the reason, pointer and group are back on release 1, the
    # lock is free, and a `failed` notice was published (and struck off the outbox)
    failed = deps.releases.get("web", 2)
    assert failed.status == ReleaseStatus.FAILED
    assert "could not start" in failed.status_reason
    assert "InvalidParameterValue" in failed.status_reason
    assert deps.pointer.get("web").release == 1
    assert group_version() == "2"
    state = deps.state.get("web")
    assert (state.lock_owner, state.desired, state.realign, state.outbox) == (None, 1, False, frozenset())
    published = {(n["release"], n["event"]): n for n in notices()}
    assert published[(2, "deploy_failed")]["dedupe_id"] == "web#2#failed"
    assert "InvalidParameterValue" in published[(2, "deploy_failed")]["reason"]
    # and no command was sent for release 2 (release 1's is the only one)
    assert len(moto_gaps.commands()) == 1


def test_a_deploy_that_cannot_find_its_group_is_failed_put_back_and_unlocked(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given release 1 live, and then the group deleted behind the deployer's back
    deploy_first_release(deps, load_event)
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
        AutoScalingGroupName=GROUP, ForceDelete=True
    )

    # When release 2 is pushed
    accept_push(deps, push(load_event, "2", "v2"))

    # Then the release is FAILED with a reason naming the group, the pointer is back on 1, no lock
    failed = deps.releases.get("web", 2)
    assert failed.status == ReleaseStatus.FAILED
    assert GROUP in failed.status_reason
    assert deps.pointer.get("web").release == 1
    # and the app is settled: no lock, nothing left to put back, no notice held up
    state = deps.state.get("web")
    assert (state.lock_owner, state.desired, state.realign, state.outbox) == (None, 1, False, frozenset())


def test_a_first_deploy_that_cannot_start_leaves_no_pointer(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given an app whose group was deleted before its first push
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
        AutoScalingGroupName=GROUP, ForceDelete=True
    )

    # When the push arrives
    accept_push(deps, push(load_event, "1", "v1"))

    # Then no pointer names the failed release, which is FAILED, and the lock is free
    assert deps.pointer.get("web") is None
    assert deps.releases.get("web", 1).status == ReleaseStatus.FAILED
    state = deps.state.get("web")
    assert state.lock_owner is None
    assert state.desired is None


def test_a_throttled_start_is_retried_and_a_later_converge_completes_it_with_one_command(
    deps: Any,
    settings: Any,
    registered_app: Any,
    load_event: Any,
    clock: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given clients that make one attempt per call (botocore's own retries are not under test),
    # and EC2 throttling CreateLaunchTemplateVersion
    ad = Adapters.from_settings(
        settings,
        clients=ClientFactory(
            region=REGION, config=Config(retries={"mode": "standard", "total_max_attempts": 1})
        ),
    )
    ad.state = deps.state  # the test's clock
    with monkeypatch.context() as patch:
        ec2_refuses_new_versions(patch, "RequestLimitExceeded", "Request limit exceeded.")

        # When a push arrives, then the invocation fails so the platform retries it
        with pytest.raises(AwsCallFailed) as err:
            accept_push(ad, push(load_event, "1", "v1"))
        assert "RequestLimitExceeded" in str(err.value)

    # and the release is still DEPLOYING, holding the lock, with nothing sent
    assert deps.releases.get("web", 1).status == ReleaseStatus.DEPLOYING
    assert deps.state.get("web").lock_owner == "web#1"
    assert len(moto_gaps.commands()) == 0

    # When EC2 answers again and a later trigger converges (its claim outlived the invocation)
    clock[0] = T0 + controller.SEND_CLAIM_SECONDS + 1
    report = controller.converge(ad, "web")

    # Then the release went out with exactly one SendCommand, its command recorded
    commands = moto_gaps.commands()
    assert len(commands) == 1
    started = deps.releases.get("web", 1)
    assert started.status == ReleaseStatus.DEPLOYING
    assert started.command_id == commands[0].command_id == report.command_id
    assert deps.pointer.get("web").release == 1
    assert group_version() == str(started.launch_template_version)


# ------------------------------------------------------------------ release records
def test_a_status_change_of_an_unknown_release_is_refused_and_writes_nothing(deps: Any) -> None:
    with pytest.raises(Refused):
        controller.commit(deps, ended(42, ReleaseStatus.FAILED, "nothing there"))
    with pytest.raises(ReleaseNotFound):
        deps.releases.set_fields("web", 42, hosts_ok=1)
    assert deps.releases.list_recent("web") == []


def test_a_field_of_the_wrong_type_is_refused_before_anything_is_written(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a deploying release
    number = accept_push(deps, push(load_event, "1", "v1")).results[0].release
    before = deps.releases.get("web", number)

    # When a field is set to a value its type does not admit
    with pytest.raises(ValidationError):
        deps.releases.set_fields("web", number, hosts_ok="many")

    # Then the release is unchanged
    assert deps.releases.get("web", number) == before


def test_the_command_index_answers_the_whole_release(deps: Any, registered_app: Any, load_event: Any) -> None:
    # Given a started release
    number = accept_push(deps, push(load_event, "1", "v1")).results[0].release
    stored = deps.releases.get("web", number)

    # When it is looked up by its command id
    found = deps.releases.by_command_id(stored.command_id)

    # Then the index's answer is the stored release itself
    assert found == stored


def test_a_refused_push_uses_no_release_number(deps: Any, registered_app: Any, load_event: Any) -> None:
    # Given a refused digest
    refused = push(load_event, "9", "v9")
    deps.state.refuse_digest("web", refused.detail.image_digest)

    # When it is pushed, then another image is
    accept_push(deps, refused)
    result = accept_push(deps, push(load_event, "1", "v1"))

    # Then the accepted image is release 1, recorded DEPLOYING under its own lock
    assert result.results[0].release == 1
    assert deps.releases.get("web", 1).status == ReleaseStatus.DEPLOYING
    assert deps.state.get("web").lock_owner == "web#1"


# ------------------------------------------------------------------ operator deploys
def test_an_operator_deploy_takes_the_free_lock_and_the_next_number(deps: Any, registered_app: Any) -> None:
    # Given an app with three releases numbered, all waiting while it is paused
    deps.state.set_paused("web", True, reason="incident")
    assert [admit(deps, registered_app, byte).release for byte in "123"] == [1, 2, 3]
    assert deps.state.get("web").lock_owner is None

    # When an operator deploys (allowed while paused)
    admitted = admit(deps, registered_app, "4", operator=True)

    # Then it is the next number, started, and the lock is held in its name
    assert (admitted.release, admitted.started) == (4, True)
    state = deps.state.get("web")
    assert (state.last_release, state.lock_owner, state.desired) == (4, "web#4", 4)
    assert deps.releases.get("web", 4).status == ReleaseStatus.DEPLOYING


def test_an_operator_deploy_while_a_deploy_holds_the_lock_changes_nothing(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a deploy holding the lock
    accept_push(deps, push(load_event, "1", "v1"))

    # When an operator deploys
    with pytest.raises(DeployInProgress) as err:
        admit(deps, registered_app, "2", operator=True)

    # Then the error names the holder, and neither the counter nor the lock moved
    assert "web#1" in str(err.value)
    state = deps.state.get("web")
    assert (state.last_release, state.lock_owner) == (1, "web#1")
    assert [r.release for r in deps.releases.list_recent("web")] == [1]


def test_a_push_delivered_after_a_newer_one_is_superseded_at_once(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a newer push (v2, pushed at 04:50) admitted and rolling out
    accept_push(deps, push(load_event, "2", "v2", time="2026-11-27T04:50:00Z"))
    assert deps.state.get("web").lock_owner == "web#1"

    # When an older push (v1, pushed a minute before) is delivered late by EventBridge's retries
    result = accept_push(deps, push(load_event, "1", "v1", time="2026-11-27T04:49:00Z"))

    # Then it is not left to deploy after the newer one: it is SUPERSEDED, and nothing was sent
    assert result.results[0].action == PushAction.SUPERSEDED
    assert deps.releases.get("web", 2).status == ReleaseStatus.SUPERSEDED
    assert deps.releases.pending("web") == []
    assert deps.state.get("web").lock_owner == "web#1"
    assert len(moto_gaps.commands()) == 1
