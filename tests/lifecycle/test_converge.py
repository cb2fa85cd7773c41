"""`controller.converge` through AWS stand-ins: each decision observed in what it recorded (the
release records, the app's state: lock, desired release, refused digests), the commands SSM
received and the notices published. The decisions alone, without moto, are in
tests/unit/test_controller_decisions.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from deployer import controller, markers
from deployer.adapters.app_state import AppState
from deployer.adapters.transactions import Refused, Transaction
from deployer.admission import accept_push
from deployer.entry.events import handle_operation
from deployer.errors import AwsCallFailed, DeployInProgress
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import Pointer, ReleaseSource, ReleaseStatus

from tests.conftest import ACCOUNT, REGION
from tests.lifecycle.conftest import World, client, digest_of, notifications

pytestmark = pytest.mark.unit


def _events(world: World) -> list[tuple[str, int]]:
    return [(m["event"], m["release"]) for m in notifications(world)]


def _failing(code: str) -> AwsCallFailed:
    failure = AwsCallFailed(f"SendCommand failed: {code}")
    failure.__cause__ = ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "SendCommand",
    )
    return failure


def _send_fails_once(world: World, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """The next SendCommand fails with `code`; the ones after it reach SSM."""
    original = world.core.fleet.send_swap
    calls = {"n": 0}

    def once(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _failing(code)
        return original(*args, **kwargs)

    monkeypatch.setattr(world.core.fleet, "send_swap", once)


def _sent(world: World) -> list[int]:
    """The releases SSM was sent commands for, in order."""
    return [int(c.parameters["release"][0]) for c in world.shim.commands()]


# ------------------------------------------------------------------ a start handed on
def test_a_pending_release_started_when_the_deploy_before_it_succeeds_replaces_that_one(world: World) -> None:
    # Given release 1 deploying and release 2 waiting for it
    first = world.push(1, "v1")
    assert world.push(2, "v2").status is ReleaseStatus.PENDING
    notifications(world)
    # When release 1 succeeds
    world.complete(first)
    # Then release 2 is started as a push deploy that replaces release 1, holds the app, is the
    # desired release, was sent, and its start is announced
    second = world.release(2)
    assert second.status is ReleaseStatus.DEPLOYING
    assert second.status_reason == "push deploy started"
    assert second.replaces == 1
    assert second.deploy_started_at is not None
    assert second.command_id is not None
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == ("web#2", 2)
    assert _sent(world) == [1, 2]
    messages = notifications(world)
    assert [(m["event"], m["release"], m["dedupe_id"]) for m in messages] == [
        ("deploy_succeeded", 1, "web#1#succeeded"),
        ("deploy_started", 2, "web#2#started"),
    ]


def test_a_release_started_after_a_held_failure_replaces_the_last_good_one(world_no_rollback: World) -> None:
    world = world_no_rollback
    # Given release 1 live, release 2 deploying and release 3 waiting
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.push(3, "v3")
    notifications(world)
    # When release 2 fails (auto-rollback off: it is held)
    answer = world.complete(second, failures={world.instances[0]: "health"})
    # Then release 2 is FAILED, its digest refused, and release 3 starts in its place; if 3
    # cannot start it goes back to release 1 (the last that succeeded), not to the failed 2
    assert answer["next_release"] == 3
    assert world.release(2).status is ReleaseStatus.FAILED
    assert second.digest in world.core.state.get("web").refused_digests
    third = world.release(3)
    assert third.status is ReleaseStatus.DEPLOYING
    assert third.replaces == 1
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == ("web#3", 3)
    assert _events(world) == [("deploy_failed", 2), ("deploy_started", 3)]


# ------------------------------------------------------------------ rollbacks
def test_an_automatic_rollback_is_recorded_with_its_target_and_reason(world: World) -> None:
    # Given release 1 (v1) live and release 2 deploying
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    notifications(world)
    # When release 2 fails on one host
    answer = world.complete(second, failures={world.instances[2]: "pull"})
    # Then release 3 rolls back to release 1's image, tag and number, saying why
    assert answer["rollback_release"] == 3
    rollback = world.release(3)
    assert (rollback.image, rollback.digest, rollback.tag) == (first.image, first.digest, "v1")
    assert rollback.source is ReleaseSource.ROLLBACK
    assert rollback.status is ReleaseStatus.DEPLOYING
    assert rollback.reason == (
        "automatic rollback: release 2 failed: 1 host(s) failed or timed out running the release"
    )
    assert (rollback.replaces, rollback.rollback_of) == (1, 2)
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.last_release) == ("web#3", 3, 3)
    messages = notifications(world)
    assert [(m["event"], m["release"], m["dedupe_id"]) for m in messages] == [
        ("deploy_rolled_back", 2, "web#2#rolled_back"),
        ("deploy_started", 3, "web#3#started"),
    ]
    assert messages[0]["rolled_back_to"] == 1
    # And the failed release counts its hosts
    failed = world.release(2)
    assert (failed.hosts_ok, failed.hosts_failed) == (2, 1)


def test_a_rollback_that_succeeds_marks_the_failed_release_rolled_back_keeping_why(world: World) -> None:
    # Given release 2 failed and its rollback (release 3) deploying
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"), failures={world.instances[0]: "health"})
    # When the rollback succeeds
    world.complete(world.release(3))
    # Then release 2 is ROLLED_BACK, naming the rollback and why release 2 failed
    back = world.release(2)
    assert back.status is ReleaseStatus.ROLLED_BACK
    assert back.status_reason == "rolled back by release 3: 1 host(s) failed or timed out running the release"
    assert world.release(3).status is ReleaseStatus.SUCCEEDED
    assert world.core.state.get("web").desired == 3


def test_an_operator_rollback_that_succeeds_marks_the_release_it_replaced_rolled_back(world: World) -> None:
    # Given releases 1 and 2 live in turn
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))
    # When an operator rolls back and the rollback succeeds
    answer = handle_operation(world.ld, {"action": "rollback", "app": "web"})
    assert answer["release"] == 3
    world.complete(world.release(3))
    # Then release 2 is ROLLED_BACK with the reason it had succeeded with
    back = world.release(2)
    assert back.status is ReleaseStatus.ROLLED_BACK
    assert back.status_reason == "rolled back by release 3: every targeted host is live on the release"


def test_a_cancelled_release_stays_cancelled_when_its_rollback_succeeds(world: World) -> None:
    # Given release 1 live and release 2 deploying, cancelled by an operator
    world.complete(world.push(1, "v1"))
    world.push(2, "v2")
    cancelled = handle_operation(world.ld, {"action": "cancel", "app": "web", "reason": "wrong build"})
    assert cancelled["rollback_release"] == 3
    # When the rollback the cancel started succeeds
    world.complete(world.release(3))
    # Then release 2 stays CANCELLED with the operator's reason (a cancel is not a rollback)
    release = world.release(2)
    assert release.status is ReleaseStatus.CANCELLED
    assert release.status_reason == "cancelled by an operator: wrong build"
    assert world.release(3).status is ReleaseStatus.SUCCEEDED


def test_a_push_waiting_behind_a_failed_deploy_is_superseded_by_its_rollback(world: World) -> None:
    # Given release 1 live, release 2 deploying and release 3 waiting
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.push(3, "v3")
    # When release 2 fails, its rollback (release 4) takes the app, and 3 keeps waiting
    world.complete(second, failures={world.instances[0]: "start"})
    assert world.release(3).status is ReleaseStatus.PENDING
    # When the rollback succeeds
    answer = world.complete(world.release(4))
    # Then release 3 (older than the rollback) is SUPERSEDED by it, never deployed, and the app
    # is free on release 4
    assert "next_release" not in answer
    third = world.release(3)
    assert third.status is ReleaseStatus.SUPERSEDED
    assert third.status_reason == "superseded by release 4"
    assert third.command_id is None
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == (None, 4)
    assert _sent(world) == [1, 2, 4]


def test_a_push_during_a_rollback_deploys_after_it(world: World) -> None:
    # Given release 2 failed and its rollback (release 3) deploying
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"), failures={world.instances[0]: "start"})
    # When a fix is pushed meanwhile (release 4) and the rollback succeeds
    assert world.push(4, "v4").status is ReleaseStatus.PENDING
    answer = world.complete(world.release(3))
    # Then the fix starts, replacing the rollback
    assert answer["next_release"] == 4
    fix = world.release(4)
    assert fix.status is ReleaseStatus.DEPLOYING
    assert fix.replaces == 3
    assert _sent(world) == [1, 2, 3, 4]


# ------------------------------------------------------------------ a start that fails for good
def test_a_start_that_fails_for_good_hands_the_app_to_the_newest_pending_release(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 live, and release 2 started but its first send throttled (it waits for
    # the platform's retry) while release 3 was pushed
    world.complete(world.push(1, "v1"))
    notifications(world)
    _send_fails_once(world, monkeypatch, "ThrottlingException")
    with pytest.raises(AwsCallFailed):
        world.push(2, "v2")
    assert world.push(3, "v3").status is ReleaseStatus.PENDING
    # When the retry's SendCommand is refused for good
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    controller.converge(world.core, "web")
    # Then release 2 FAILED saying why, and release 3 starts in its place, replacing release 1
    failed = world.release(2)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_reason == "could not start: SendCommand failed: InvalidDocument"
    third = world.release(3)
    assert third.status is ReleaseStatus.DEPLOYING
    assert third.replaces == 1
    assert third.command_id is not None
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == ("web#3", 3)
    assert _sent(world) == [1, 3]
    # (release 2's start was still owed: the throttled invocation ended before announcing it)
    assert _events(world) == [("deploy_started", 2), ("deploy_failed", 2), ("deploy_started", 3)]


# ------------------------------------------------------------------ a lock no release holds
def test_a_lock_naming_no_release_is_freed_and_the_app_moves_on(world: World) -> None:
    # Given release 1 live, a lock naming a release that was never recorded, and release 2
    # recorded PENDING behind it
    world.complete(world.push(1, "v1"))
    client("dynamodb").update_item(
        TableName="AppStateTable",
        Key={"app": {"S": "web"}},
        UpdateExpression="SET lock_owner = :o",
        ExpressionAttributeValues={":o": {"S": "web#9"}},
    )
    assert world.push(2, "v2").status is ReleaseStatus.PENDING
    # When the app converges
    report = controller.converge(world.core, "web")
    # Then the stale lock is freed and release 2 starts
    assert report.release == 2
    assert world.release(2).status is ReleaseStatus.DEPLOYING
    assert world.core.state.get("web").lock_owner == "web#2"
    assert _sent(world) == [1, 2]


# ------------------------------------------------------------------ admission
def test_a_push_delivered_again_is_the_release_it_was_the_first_time(world: World) -> None:
    # Given release 1 admitted from a push event
    event = world.push_event(world.image(1, "v1"), "v1")
    first = accept_push(world.core, parse_push_event(event))
    # When the same event is delivered again
    again = accept_push(world.core, parse_push_event(event))
    # Then it names release 1 again and records nothing new
    assert again.results[0].release == first.results[0].release == 1
    assert len(world.core.releases.list_recent("web", 100)) == 1
    assert world.core.state.get("web").last_release == 1
    assert _sent(world) == [1]


def _clock(world: World, start: float) -> list[float]:
    """The app state's clock (send claims), moved by the test."""
    now = [start]
    world.core.state = AppState(world.core.clients.client("dynamodb"), "AppStateTable", clock=lambda: now[0])
    world.core.clock = lambda: now[0]
    return now


def _forget_desired(world: World) -> None:
    """The app's state as a version that predates `desired` wrote it."""
    client("dynamodb").update_item(
        TableName="AppStateTable", Key={"app": {"S": "web"}}, UpdateExpression="REMOVE desired"
    )


def _set_lock(world: World, owner: str) -> None:
    client("dynamodb").update_item(
        TableName="AppStateTable",
        Key={"app": {"S": "web"}},
        UpdateExpression="SET lock_owner = :o",
        ExpressionAttributeValues={":o": {"S": owner}},
    )


# ------------------------------------------------------------------ desired, from the decision
@pytest.mark.parametrize("fails", [False, True])
def test_the_release_that_ends_becomes_desired_even_in_a_state_that_predates_desired(
    world_no_rollback: World, fails: bool
) -> None:
    world = world_no_rollback
    # Given release 1 deploying, in an app state an older version wrote (no `desired`)
    first = world.push(1, "v1")
    _forget_desired(world)
    assert world.core.state.get("web").desired is None
    # When it ends (succeeded, or failed and held)
    world.complete(first, failures={world.instances[0]: "health"} if fails else None)
    # Then the fleet's desired release is release 1
    assert world.release(1).status is (ReleaseStatus.FAILED if fails else ReleaseStatus.SUCCEEDED)
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == (None, 1)


# ------------------------------------------------------------------ what a failed rollback leaves
def test_a_push_older_than_a_failed_rollback_is_superseded_and_the_app_freed(world: World) -> None:
    # Given release 2 failed, its rollback (release 4) deploying and release 3 waiting behind it
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.push(3, "v3")
    world.complete(second, failures={world.instances[0]: "health"})
    notifications(world)
    # When the rollback fails too (it is not rolled back again: held)
    answer = world.complete(world.release(4), failures={world.instances[1]: "health"})
    # Then release 3, older than the rollback, is superseded by it and never deployed; the app
    # is free, and its desired release is the failed rollback (an operator decides)
    assert "next_release" not in answer
    assert "rollback_release" not in answer
    third = world.release(3)
    assert third.status is ReleaseStatus.SUPERSEDED
    assert third.status_reason == "superseded by release 4"
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == (None, 4)
    assert world.release(4).digest not in state.refused_digests
    assert _sent(world) == [1, 2, 4]
    assert _events(world) == [("deploy_failed", 4)]


def test_a_rollback_that_cannot_start_supersedes_older_pushes_and_puts_the_app_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 live, release 3 waiting, and release 2 failing
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    world.push(3, "v3")
    # When release 2 fails and its rollback's SendCommand is refused for good
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    world.complete(second, failures={world.instances[0]: "health"})
    # Then the rollback (release 4) FAILED, release 3 is superseded by it, the app is free and
    # back on release 1 (pointer and group)
    rollback = world.release(4)
    assert rollback.status is ReleaseStatus.FAILED
    assert rollback.status_reason == "could not start: SendCommand failed: InvalidDocument"
    third = world.release(3)
    assert third.status is ReleaseStatus.SUPERSEDED
    assert third.status_reason == "superseded by release 4"
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.realign) == (None, 1, False)
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == first.launch_template_version
    assert _sent(world) == [1, 2]


# ------------------------------------------------------------------ a start that cannot send
def test_a_start_ssm_refuses_puts_pointer_and_group_back_on_the_release_it_replaced(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 live
    first = world.push(1, "v1")
    world.complete(first)
    notifications(world)
    # When release 2's SendCommand is refused (after its pointer and group moved)
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    world.push(2, "v2")
    # Then release 2 FAILED and the app is free and back on release 1 everywhere
    assert world.release(2).status is ReleaseStatus.FAILED
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.realign) == (None, 1, False)
    world.assert_agree()
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == first.launch_template_version
    assert _events(world) == [("deploy_started", 2), ("deploy_failed", 2)]


def test_a_first_deploy_ssm_refuses_leaves_no_pointer_and_nothing_desired(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    world.push(1, "v1")
    assert world.release(1).status is ReleaseStatus.FAILED
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.realign) == (None, None, False)
    assert world.core.pointer.get("web") is None


# ------------------------------------------------------------------ starting a pending release
def test_a_lock_naming_a_pending_release_starts_that_release(world: World) -> None:
    # Given release 1 live and release 2 PENDING, named by the lock (a start recorded in two
    # steps by an older version, which died between them)
    world.complete(world.push(1, "v1"))
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    assert world.push(2, "v2").status is ReleaseStatus.PENDING
    world.core.state.set_paused("web", False)
    _set_lock(world, "web#2")
    # When the app converges
    report = controller.converge(world.core, "web")
    # Then release 2 starts, replacing release 1
    assert report.release == 2
    second = world.release(2)
    assert second.status is ReleaseStatus.DEPLOYING
    assert second.replaces == 1
    assert _sent(world) == [1, 2]


def test_resume_starts_the_newest_waiting_release_replacing_the_desired_one(world: World) -> None:
    # Given release 1 live, the app paused, and releases 2 and 3 pushed meanwhile
    world.complete(world.push(1, "v1"))
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    world.push(2, "v2")
    world.push(3, "v3")
    notifications(world)
    # When an operator resumes
    answer = handle_operation(world.ld, {"action": "resume", "app": "web"})
    # Then release 3 starts, replacing release 1 (2 was superseded when 3 arrived)
    assert answer["release"] == 3
    third = world.release(3)
    assert (third.status, third.replaces, third.status_reason) == (
        ReleaseStatus.DEPLOYING,
        1,
        "push deploy started",
    )
    assert world.release(2).status is ReleaseStatus.SUPERSEDED
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == ("web#3", 3)
    assert _events(world) == [("deploy_started", 3)]


def test_a_pause_that_lands_between_reading_and_starting_wins(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 live and release 2 waiting while the app is paused
    world.complete(world.push(1, "v1"))
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    world.push(2, "v2")
    world.core.state.set_paused("web", False)
    # When the app is paused again just after a converge read it unpaused
    pending = world.core.releases.pending

    def paused_meanwhile(app: str) -> Any:
        world.core.state.set_paused(app, True, "incident")
        return pending(app)

    monkeypatch.setattr(world.core.releases, "pending", paused_meanwhile)
    controller.converge(world.core, "web")
    # Then release 2 did not start
    assert world.release(2).status is ReleaseStatus.PENDING
    assert world.core.state.get("web").lock_owner is None
    assert _sent(world) == [1]


def test_a_start_handed_on_by_an_invocation_that_died_is_sent_once_its_claim_is_stale(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 deploying and release 2 waiting
    now = _clock(world, 4_000_000.0)
    first = world.push(1, "v1")
    world.push(2, "v2")
    _, commands = world.run_command(first)
    # When release 1's end starts release 2, and that invocation dies before sending
    send = world.core.fleet.send_swap

    def dies(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the invocation timed out")

    monkeypatch.setattr(world.core.fleet, "send_swap", dies)
    with pytest.raises(RuntimeError):
        world.deliver(commands[0])
    monkeypatch.setattr(world.core.fleet, "send_swap", send)
    assert world.release(2).status is ReleaseStatus.DEPLOYING
    # Then another invocation leaves it alone while the claim is fresh, and sends it once stale
    controller.converge(world.core, "web")
    assert _sent(world) == [1]
    now[0] += controller.SEND_CLAIM_SECONDS + 1
    report = controller.converge(world.core, "web")
    assert _sent(world) == [1, 2]
    assert world.release(2).command_id == report.command_id is not None


# ------------------------------------------------------------------ superseding on admission
def test_a_push_supersedes_every_older_pending_release_and_names_them(world: World) -> None:
    # Given release 1 deploying, and releases 2 and 3 PENDING (their invocations died before
    # superseding anything)
    world.push(1, "v1")

    def dies(*_args: Any, **_kwargs: Any) -> list[int]:
        raise RuntimeError("the invocation timed out")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controller, "supersede_older_pending", dies)
        for n in (2, 3, 4):
            with pytest.raises(RuntimeError):
                accept_push(world.core, parse_push_event(world.push_event(world.image(n, f"v{n}"), f"v{n}")))
    # When another decision starts release 2 while the supersede for release 4 reads a pending
    # list that still names it (the pending index is eventually consistent)
    before = world.core.releases.pending("web")
    start = controller.Transition(
        2, ReleaseStatus.DEPLOYING, "started elsewhere", frozenset({ReleaseStatus.PENDING})
    )
    controller.commit(world.core, controller.Decision("web").transition(start))
    fresh = world.core.releases.pending
    reads: list[str] = []

    def lagging(app: str) -> list[Any]:
        reads.append(app)
        return before if len(reads) == 1 else fresh(app)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(world.core.releases, "pending", lagging)
        superseded = controller.supersede_older_pending(world.core, "web", newer_than=4)
    assert len(reads) == 2  # the stale read's decision was refused as a whole, and made again
    # Then every other older pending release is superseded, naming the newer one
    assert superseded == [3]
    third = world.release(3)
    assert (third.status, third.status_reason) == (ReleaseStatus.SUPERSEDED, "superseded by release 4")
    assert world.release(2).status is ReleaseStatus.DEPLOYING
    assert world.release(4).status is ReleaseStatus.PENDING


# ------------------------------------------------------------------ admission
def _admit_push(world: World, n: int, **kwargs: Any) -> controller.Admitted:
    """Admit image n's push (tag v<n>) the way accept_push does, with `kwargs` overriding."""
    digest = world.image(n, f"v{n}")
    args: dict[str, Any] = {
        "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web@{digest}",
        "digest": digest,
        "tag": f"v{n}",
        "source": ReleaseSource.PUSH,
        "reason": f"push of v{n}",
        "token": controller.new_token(),
        "marker": markers.admission_key("web", "web", digest, f"v{n}"),
        "pushed_at": datetime.now(UTC),
    }
    return controller.admit(world.core, world.config, **(args | kwargs))


def test_an_admission_decided_on_a_stale_read_is_made_again_from_a_fresh_one(world: World) -> None:
    # Given an invocation that read the app while it was free after release 1
    world.complete(world.push(1, "v1"))
    stale = world.core.state.get("web")
    # and release 2 admitted and started meanwhile by another
    world.push(2, "v2")
    # When the first invocation admits its push from what it read
    admitted = _admit_push(world, 3, state=stale)
    # Then its write is refused and made again from a fresh read: release 3, waiting
    assert (admitted.release, admitted.started, admitted.replayed) == (3, False, False)
    assert world.release(3).status is ReleaseStatus.PENDING
    state = world.core.state.get("web")
    assert (state.last_release, state.lock_owner) == (3, "web#2")


def test_a_push_of_a_digest_refused_after_the_read_is_refused(world: World) -> None:
    # Given an invocation that read the app before release 2's digest was refused
    world.complete(world.push(1, "v1"))
    stale = world.core.state.get("web")
    world.core.state.refuse_digest("web", digest_of(2))
    # When it admits a push of that digest from what it read
    admitted = _admit_push(world, 2, state=stale)
    # Then the push is refused and uses no release number
    assert admitted.release is None
    assert world.core.state.get("web").last_release == 1
    assert len(world.core.releases.list_recent("web", 100)) == 1


def test_an_admission_whose_state_keeps_changing_gives_up_without_writing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: Transaction, *_args: Any, **_kwargs: Any) -> None:
        raise Refused(frozenset({"state"}))

    monkeypatch.setattr(Transaction, "commit", refused)
    with pytest.raises(AwsCallFailed, match="could not record a release of web: its state kept changing"):
        _admit_push(world, 1)
    monkeypatch.undo()
    assert world.core.releases.list_recent("web", 100) == []


def test_an_operator_deploy_starts_while_the_app_is_paused(world: World) -> None:
    # Given releases 1 and 2 live in turn, and the app paused
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    notifications(world)
    # When an operator rolls back to release 1
    answer = handle_operation(world.ld, {"action": "rollback", "app": "web", "to": 1})
    # Then the rollback starts at once, replacing release 2; the app stays paused
    assert answer["release"] == 3
    rollback = world.release(3)
    assert (rollback.status, rollback.replaces, rollback.rollback_of) == (ReleaseStatus.DEPLOYING, 2, 2)
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.paused) == ("web#3", 3, True)
    assert _sent(world) == [1, 2, 3]
    assert _events(world) == [("deploy_started", 3)]


def test_pushes_that_wait_say_why(world: World) -> None:
    world.push(1, "v1")
    busy = accept_push(world.core, parse_push_event(world.push_event(world.image(2, "v2"), "v2")))
    assert (busy.results[0].action.value, busy.results[0].reason) == (
        "pending",
        "another deploy is in progress",
    )
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    paused = accept_push(world.core, parse_push_event(world.push_event(world.image(3, "v3"), "v3")))
    assert (paused.results[0].action.value, paused.results[0].reason) == ("pending", "app is paused")


def test_a_push_older_than_one_admitted_is_superseded_and_leaves_the_newest_time(world: World) -> None:
    # Given release 1 admitted from a push made at t0 + 60
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = _admit_push(world, 1, pushed_at=t0 + timedelta(seconds=60))
    assert first.started
    notifications(world)
    # When a push made at t0 arrives after it
    late = _admit_push(world, 2, pushed_at=t0)
    # Then it is recorded SUPERSEDED at once: not started, not waiting, no lock, no notice
    assert (late.release, late.superseded, late.started) == (2, True, False)
    record = world.release(2)
    assert record.status is ReleaseStatus.SUPERSEDED
    assert record.status_reason == "a newer push arrived first"
    assert record.finished_at is not None
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.last_release) == ("web#1", 1, 2)
    assert state.last_pushed_at == int((t0 + timedelta(seconds=60)).timestamp())
    # And a push made between the two is late too (the late one did not move the time back)
    assert _admit_push(world, 3, pushed_at=t0 + timedelta(seconds=30)).superseded
    # While a push made at the same second as the newest is not late
    same = _admit_push(world, 4, pushed_at=t0 + timedelta(seconds=60))
    assert (same.superseded, world.release(4).status) == (False, ReleaseStatus.PENDING)


def test_an_operator_deploy_moves_no_push_time(world: World) -> None:
    # Given release 1 admitted from a push
    t0 = datetime.now(UTC).replace(microsecond=0)
    _admit_push(world, 1, pushed_at=t0, token="first")
    controller.converge(world.core, "web", token="first")
    world.complete(world.release(1))
    # When an operator deploys with a later time but no admission marker
    operator = _admit_push(world, 2, pushed_at=t0 + timedelta(seconds=60), marker=None, operator=True)
    # Then it starts, and the newest push time stays the push's
    assert operator.started
    assert world.core.state.get("web").last_pushed_at == int(t0.timestamp())


# ------------------------------------------------------------------ handing the app on
def test_a_pause_that_lands_while_a_release_ends_keeps_the_next_one_waiting(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 deploying and release 2 waiting
    first = world.push(1, "v1")
    world.push(2, "v2")
    # When the app is paused just after the decision at release 1's end read it unpaused
    pending = world.core.releases.pending

    def paused_meanwhile(app: str) -> Any:
        world.core.state.set_paused(app, True, "incident")
        return pending(app)

    monkeypatch.setattr(world.core.releases, "pending", paused_meanwhile)
    world.complete(first)
    # Then release 1 ended and freed the app, and release 2 waits for the resume
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    assert world.release(2).status is ReleaseStatus.PENDING
    assert world.core.state.get("web").lock_owner is None
    assert _sent(world) == [1]


def test_a_push_during_a_rollback_starts_after_it_and_older_waiting_pushes_are_superseded(
    world: World,
) -> None:
    # Given release 2 failed, its rollback (release 4) deploying, release 3 waiting behind it,
    # and release 5 pushed by an invocation that died before superseding release 3
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.push(3, "v3")
    world.complete(second, failures={world.instances[0]: "health"})

    def dies(*_args: Any, **_kwargs: Any) -> list[int]:
        raise RuntimeError("the invocation timed out")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controller, "supersede_older_pending", dies)
        with pytest.raises(RuntimeError):
            accept_push(world.core, parse_push_event(world.push_event(world.image(5, "v5"), "v5")))
    assert world.release(3).status is ReleaseStatus.PENDING
    # When the rollback succeeds
    answer = world.complete(world.release(4))
    # Then release 5 starts replacing the rollback, and release 3 is superseded by it
    assert answer["next_release"] == 5
    assert (world.release(5).status, world.release(5).replaces) == (ReleaseStatus.DEPLOYING, 4)
    third = world.release(3)
    assert (third.status, third.status_reason) == (ReleaseStatus.SUPERSEDED, "superseded by release 5")
    assert _sent(world) == [1, 2, 4, 5]


# ------------------------------------------------------------------ the end of a command
def test_a_late_event_of_an_earlier_command_does_not_end_the_running_release(world: World) -> None:
    # Given release 1 done, and release 2's command still running
    first = world.push(1, "v1")
    _, first_events = world.run_command(first)
    world.deliver(first_events[0])
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    second = world.push(2, "v2")
    # When release 1's terminal event is delivered again (it says Success)
    world.deliver(first_events[0])
    # Then release 2 still runs: that event is about another command
    assert world.release(2).status is ReleaseStatus.DEPLOYING
    assert world.core.state.get("web").lock_owner == "web#2"
    # And its own event, once SSM lists it done, ends it
    world.complete(second)
    assert world.release(2).status is ReleaseStatus.SUCCEEDED


def test_a_terminal_event_ahead_of_ssm_s_listing_decides_the_release(world: World) -> None:
    # Given release 1 deploying, its command still listed Pending by SSM
    first = world.push(1, "v1")
    assert first.command_id is not None
    assert world.core.results.counts(first.command_id).status == "Pending"  # type: ignore[union-attr]
    # When SSM's event says the command succeeded
    answer = world.deliver(world.command_event(first.command_id, "Success"))
    # Then the event decides: release 1 SUCCEEDED and the app is free
    assert (answer["release_status"], answer["reason"]) == (
        "SUCCEEDED",
        "every targeted host is live on the release",
    )
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    assert world.core.state.get("web").lock_owner is None


def test_a_failed_event_for_a_command_ssm_does_not_list_fails_the_release_on_its_word(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 deploying, and SSM's ListCommands not knowing its command (yet)
    first = world.push(1, "v1")
    assert first.command_id is not None
    monkeypatch.setattr(world.core.results, "counts", lambda _command_id: None)
    # When SSM's event says the command failed
    answer = world.deliver(world.command_event(first.command_id, "Failed"))
    # Then, with no per-host answer to read, the release fails safe on the event's word
    assert (answer["release_status"], answer["reason"]) == ("FAILED", "MaxErrors or more host(s) failed")
    assert world.release(1).status is ReleaseStatus.FAILED


def test_a_success_event_for_a_command_ssm_does_not_list_waits_for_the_listing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1 deploying, and SSM's ListCommands not knowing its command (yet)
    first = world.push(1, "v1")
    assert first.command_id is not None
    with monkeypatch.context() as patch:
        patch.setattr(world.core.results, "counts", lambda _command_id: None)
        # When SSM's event says the command succeeded
        world.deliver(world.command_event(first.command_id, "Success"))
        # Then nothing is decided on the event's word: only the listing says how many hosts it
        # reached (a command that reached none is no success)
        assert world.release(1).status is ReleaseStatus.DEPLOYING
        assert world.core.state.get("web").lock_owner == "web#1"
    # When SSM lists it, done, and the next trigger comes
    world.complete(first)
    # Then the listing decides
    assert world.release(1).status is ReleaseStatus.SUCCEEDED


def test_a_decision_overtaken_by_another_is_not_reported_as_made(world: World) -> None:
    # Given what an invocation read while release 1 was deploying
    first = world.push(1, "v1")
    seen = (world.core.state.get("web"), world.release(1))
    # and another invocation that decided its end meanwhile
    _, commands = world.run_command(first)
    world.deliver(commands[0])
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    # When the first decides from what it read
    report = controller.converge(world.core, "web", known=seen)
    # Then its decision is refused, it reads again, and it reports no end of its own
    assert report.ended is None
    assert world.core.state.get("web").lock_owner is None


def test_a_lock_naming_a_pending_release_of_a_paused_app_starts_nothing(world: World) -> None:
    # Given release 1 live and release 2 PENDING, named by the lock, while the app is paused
    world.complete(world.push(1, "v1"))
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    world.push(2, "v2")
    _set_lock(world, "web#2")
    # When the app converges
    report = controller.converge(world.core, "web")
    # Then nothing starts (and nothing fails)
    assert report.command_id is None
    assert world.release(2).status is ReleaseStatus.PENDING
    assert _sent(world) == [1]


def test_a_decision_dynamodb_fails_names_what_it_was_recording(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given release 1's command done in SSM, and DynamoDB failing transactions
    first = world.push(1, "v1")
    world.run_command(first)

    def fails(**_kwargs: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "InternalServerError", "Message": "boom"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            "TransactWriteItems",
        )

    monkeypatch.setattr(world.core.dynamodb, "transact_write_items", fails)
    # When the app converges, then the failure says which decision could not be recorded
    with pytest.raises(AwsCallFailed, match="recording a decision for web failed: InternalServerError"):
        controller.converge(world.core, "web")
    monkeypatch.undo()
    assert world.release(1).status is ReleaseStatus.DEPLOYING


def test_a_release_ending_while_the_app_is_paused_frees_it_and_the_next_one_waits(world: World) -> None:
    # Given release 1 deploying, release 2 waiting, and the app paused
    first = world.push(1, "v1")
    world.push(2, "v2")
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    # When release 1 succeeds
    answer = world.complete(first)
    # Then the app is free and release 2 waits for the resume
    assert "next_release" not in answer
    assert world.release(2).status is ReleaseStatus.PENDING
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == (None, 1)
    assert _sent(world) == [1]


def test_an_automatic_rollback_skips_a_release_whose_image_is_gone_from_ecr(world: World) -> None:
    # Given releases 1 and 2 live in turn, release 2's image deleted from ECR, release 3 deploying
    first = world.push(1, "v1")
    world.complete(first)
    second = world.push(2, "v2")
    world.complete(second)
    client("ecr").batch_delete_image(repositoryName="web", imageIds=[{"imageDigest": second.digest}])
    third = world.push(3, "v3")
    # When release 3 fails
    answer = world.complete(third, failures={world.instances[0]: "health"})
    # Then the rollback goes to release 1, whose image is still there
    rollback = world.release(answer["rollback_release"])
    assert (rollback.digest, rollback.replaces, rollback.rollback_of) == (first.digest, 1, 3)


# ------------------------------------------------------------------ push acceptance (admission.py)
def _accept(world: World, n: int | None, tag: str | None, *, digest: str | None = None) -> dict[str, Any]:
    """Deliver a push of image n (or of `digest`) tagged `tag`; the push's answer as a dict."""
    pushed = digest or world.image(n or 0, tag)
    return accept_push(world.core, parse_push_event(world.push_event(pushed, tag))).as_dict()


def _result(answer: dict[str, Any]) -> tuple[Any, ...]:
    (only,) = answer["results"]
    return (only["app"], only["action"], only["reason"], only["release"])


def test_a_push_answer_names_the_event_the_image_and_what_each_app_did(world: World) -> None:
    answer = _accept(world, 1, "v1")
    release = world.release(1)
    assert answer == {
        "event_id": "00000000-0000-4000-8000-000000000001",
        "repository": "web",
        "digest": digest_of(1),
        "tag": "v1",
        "results": [
            {
                "app": "web",
                "action": "started",
                "reason": "deploy started",
                "release": 1,
                "command_id": release.command_id,
            }
        ],
    }
    assert release.command_id is not None
    assert release.image == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web@{digest_of(1)}"
    assert (release.tag, release.reason, release.source) == ("v1", "push of v1", ReleaseSource.PUSH)
    assert release.event_id == answer["event_id"]


def test_a_push_to_a_repository_no_app_deploys_is_answered_with_no_results(world: World) -> None:
    event = world.push_event(world.image(1, "v1"), "v1")
    event["detail"]["repository-name"] = "another"
    answer = accept_push(world.core, parse_push_event(event)).as_dict()
    assert (answer["repository"], answer["results"]) == ("another", [])
    assert world.core.releases.list_recent("web", 100) == []


def test_pushes_an_app_does_not_deploy_are_ignored_saying_why(world: World) -> None:
    config = AppConfig.parse({**world.config.to_document(), "tag_filter": ["v*"]})
    world.core.apps.put(config)
    assert _result(_accept(world, 1, None)) == ("web", "ignored", "untagged push", None)
    assert _result(_accept(world, 2, "staging-2")) == (
        "web",
        "ignored",
        "tag staging-2 does not pass the filter",
        None,
    )
    assert world.core.releases.list_recent("web", 100) == []


def test_each_admission_is_answered_with_what_became_of_the_push(
    world_no_rollback: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_no_rollback
    # a push that deploys at once, then one that waits behind it
    first = _accept(world, 1, "v1")
    assert _result(first) == ("web", "started", "deploy started", 1)
    assert _result(_accept(world, 2, "v2")) == ("web", "pending", "another deploy is in progress", 2)
    # the same push delivered again while its release deploys: that release, still started
    again = accept_push(
        world.core, parse_push_event(world.push_event(digest_of(1), "v1") | {"id": first["event_id"]})
    ).as_dict()
    assert _result(again) == ("web", "started", "deploy started", 1)
    assert again["results"][0]["command_id"] == world.release(1).command_id
    # and once it ended: that release, ignored, naming its fate
    world.complete(world.release(1))
    replay = accept_push(
        world.core, parse_push_event(world.push_event(digest_of(1), "v1") | {"id": first["event_id"]})
    ).as_dict()
    assert _result(replay) == ("web", "ignored", "admitted before as release 1 (SUCCEEDED)", 1)
    # a digest that failed is refused when pushed again
    world.complete(world.release(2), failures={world.instances[0]: "health"})
    assert _result(_accept(world, None, "v2-again", digest=digest_of(2))) == (
        "web",
        "refused",
        "digest failed before and is refused",
        None,
    )
    # a push whose start fails for good: recorded, failed, saying why
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    assert _result(_accept(world, 3, "v3")) == (
        "web",
        "failed",
        "could not start: SendCommand failed: InvalidDocument",
        3,
    )


def test_a_late_push_is_answered_superseded(world: World) -> None:
    _accept(world, 1, "v1")
    event = world.push_event(world.image(2, "v2"), "v2")
    event["time"] = "2001-01-01T00:00:00Z"
    answer = accept_push(world.core, parse_push_event(event)).as_dict()
    assert _result(answer) == ("web", "superseded", "a newer push arrived first", 2)


def test_a_waiting_push_supersedes_the_older_waiting_ones(world: World) -> None:
    _accept(world, 1, "v1")
    _accept(world, 2, "v2")
    assert _result(_accept(world, 3, "v3")) == ("web", "pending", "another deploy is in progress", 3)
    assert (world.release(2).status, world.release(2).status_reason) == (
        ReleaseStatus.SUPERSEDED,
        "superseded by release 3",
    )


def test_an_operator_deploy_while_a_deploy_runs_is_refused_saying_what_to_do(world: World) -> None:
    world.complete(world.push(1, "v1"))
    world.push(2, "v2")
    with pytest.raises(DeployInProgress) as refused:
        handle_operation(world.ld, {"action": "rollback", "app": "web", "to": 1})
    assert (
        str(refused.value)
        == "web is deploying (web#2); wait until it ends, or cancel it, then run this again"
    )
    assert world.core.state.get("web").last_release == 2


def test_a_promote_deploys_a_refused_digest_and_lifts_its_refusal(world_no_rollback: World) -> None:
    world = world_no_rollback
    # Given release 2's digest refused after it failed
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    world.complete(second, failures={world.instances[0]: "health"})
    assert second.digest in world.core.state.get("web").refused_digests
    # When an operator promotes it
    answer = handle_operation(world.ld, {"action": "promote", "app": "web", "to": 2})
    # Then it deploys as release 3 and pushes of it are accepted again
    assert answer["release"] == 3
    assert world.release(3).digest == second.digest
    assert second.digest not in world.core.state.get("web").refused_digests


def test_a_release_records_when_its_image_was_pushed_and_a_waiting_one_replaces_nothing_yet(
    world: World,
) -> None:
    pushed = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = _admit_push(world, 1, pushed_at=pushed)
    assert world.release(first.release or 0).pushed_at == pushed
    waiting = _admit_push(world, 2, pushed_at=pushed + timedelta(seconds=1))
    record = world.release(waiting.release or 0)
    assert (record.status, record.replaces, record.pushed_at) == (
        ReleaseStatus.PENDING,
        None,
        pushed + timedelta(seconds=1),
    )


def test_a_start_replaces_the_desired_release_not_whatever_the_pointer_says(world: World) -> None:
    # Given releases 1 and 2 live in turn, and the pointer moved back to release 1 by hand
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))
    world.core.pointer.put(Pointer.for_release(world.release(1)))
    # When release 3 is pushed, it replaces release 2 (the desired one)
    assert world.push(3, "v3").replaces == 2


def test_a_start_after_a_first_deploy_that_never_started_replaces_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first deploy that could not start (no pointer, nothing desired)
    _send_fails_once(world, monkeypatch, "InvalidDocument")
    world.push(1, "v1")
    assert world.core.pointer.get("web") is None
    # When release 2 is pushed, it starts replacing nothing
    second = world.push(2, "v2")
    assert (second.status, second.replaces) == (ReleaseStatus.DEPLOYING, None)


def test_a_push_admitted_on_a_read_from_before_a_pause_waits(world: World) -> None:
    # Given an invocation that read the app free and unpaused, then an operator's pause
    stale = world.core.state.get("web")
    handle_operation(world.ld, {"action": "pause", "app": "web"})
    # When it admits a push from what it read
    admitted = _admit_push(world, 1, state=stale)
    # Then the push waits: the pause won
    assert (admitted.release, admitted.started, admitted.paused) == (1, False, True)
    assert world.release(1).status is ReleaseStatus.PENDING
    assert world.core.state.get("web").lock_owner is None


def test_an_admission_dynamodb_fails_names_the_release_it_was_recording(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(**_kwargs: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "InternalServerError", "Message": "boom"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            "TransactWriteItems",
        )

    monkeypatch.setattr(world.core.dynamodb, "transact_write_items", fails)
    with pytest.raises(AwsCallFailed, match=r"^recording release 1 of web failed: InternalServerError"):
        _admit_push(world, 1)
