"""The deploy lock across invocations: races, crashed invocations, pause, and a burst of pushes
mid-deploy. Only a decision of the controller moves the lock (no lease, no takeover by time)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from deployer import controller
from deployer.adapters.app_state import AppState
from deployer.admission import accept_push
from deployer.entry.events import handle_operation
from deployer.errors import DeployInProgress
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.lifecycle_events import PromoteRequest
from deployer.models.records import ReleaseStatus
from deployer.operations import run
from deployer.reconcile import reconcile_app

from tests.lifecycle.conftest import World

pytestmark = pytest.mark.unit


def _race(workers: list[Any]) -> list[Any]:
    """Run callables at the same moment on threads; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run_one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = workers[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _clock(world: World, start: float) -> list[float]:
    """The app state's clock (claims, lock display times), moved by the test."""
    now = [start]
    world.core.state = AppState(world.core.clients.client("dynamodb"), "AppStateTable", clock=lambda: now[0])
    world.core.clock = lambda: now[0]
    return now


def _statuses(world: World) -> dict[int, ReleaseStatus]:
    return {r.release: r.status for r in world.core.releases.list_recent("web", 100)}


def test_two_operator_deploys_racing_for_the_free_app_let_exactly_one_win(world: World) -> None:
    # Given the app is free, eight times over
    for round_ in range(8):
        tags = [f"v{2 * round_ + 1}", f"v{2 * round_ + 2}"]
        for n, tag in zip((2 * round_ + 1, 2 * round_ + 2), tags, strict=True):
            world.image(n, tag)
        commands = len(world.shim.commands())
        releases = len(world.core.releases.list_recent("web", 100))
        # When two operators deploy different images at the same moment
        answers = _race(
            [lambda t=t: run(world.core, PromoteRequest(action="promote", app="web", to=t)) for t in tags]
        )
        # Then exactly one deploy started; the other was refused naming the deploy in progress
        won = [a for a in answers if isinstance(a, dict)]
        lost = [a for a in answers if isinstance(a, Exception)]
        assert len(won) == 1, answers
        assert len(lost) == 1
        assert isinstance(lost[0], DeployInProgress), lost
        winner = world.release(won[0]["release"])
        assert winner.status is ReleaseStatus.DEPLOYING
        assert world.core.state.get("web").lock_owner == f"web#{winner.release}"
        # and the loser wrote nothing: one new release, one new command
        assert len(world.core.releases.list_recent("web", 100)) == releases + 1
        assert len(world.shim.commands()) == commands + 1
        world.complete(winner)
        assert world.core.state.get("web").lock_owner is None


def test_two_pushes_racing_start_one_deploy_and_leave_the_other_pending(world: World) -> None:
    # Given two images pushed at the same moment (their events carry the same time)
    raw = [world.push_event(world.image(n, f"v{n}"), f"v{n}") for n in (1, 2)]
    raw[1]["time"] = raw[0]["time"]
    events = [parse_push_event(e) for e in raw]
    # When both push events are handled concurrently
    outcomes = _race([lambda e=e: accept_push(world.core, e) for e in events])
    # Then one started and the other waited: numbers follow the order they were recorded in,
    # so the first recorded holds the lock and the second waits PENDING behind it
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    actions = sorted(o.results[0].action.value for o in outcomes)
    assert actions == ["pending", "started"]
    assert _statuses(world) == {1: ReleaseStatus.DEPLOYING, 2: ReleaseStatus.PENDING}
    assert world.core.state.get("web").lock_owner == "web#1"
    assert len(world.shim.commands()) == 1


def test_duplicate_terminal_events_racing_start_a_single_rollback(world: World) -> None:
    # Given release 1 live and release 2 failed on one host
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    invocations, commands = world.run_command(second, failures={world.instances[0]: "health"})
    for event in invocations:
        world.deliver(event)
    # When the terminal command event is processed twice at the same moment
    answers = _race([lambda: world.deliver(commands[0]), lambda: world.deliver(commands[0])])
    # Then only one rollback release exists, and the lock belongs to it
    assert not [a for a in answers if isinstance(a, Exception)], answers
    releases = world.core.releases.list_recent("web", 100)
    assert [r.release for r in releases] == [3, 2, 1]
    assert releases[0].status is ReleaseStatus.DEPLOYING
    assert world.core.state.get("web").lock_owner == "web#3"
    assert len(world.shim.commands()) == 3


def test_a_lost_command_event_is_finished_by_the_reconcilers_converge(world: World) -> None:
    # Given release 1 deploying, and release 2 pushed meanwhile (PENDING)
    release = world.push(1, "v1")
    second = world.push(2, "v2")
    assert second.status is ReleaseStatus.PENDING
    # While the command runs, the reconciler decides nothing and leaves the app to its deploy
    report = reconcile_app(world.ld, world.config)
    assert report["action"] == "converging"
    assert report["deploying"] == "web#1"
    assert _statuses(world) == {1: ReleaseStatus.DEPLOYING, 2: ReleaseStatus.PENDING}
    assert len(world.shim.commands()) == 1
    # When the command ends and its event is lost (the invocation that got it crashed)
    world.run_command(release)
    report = reconcile_app(world.ld, world.config)
    # Then the reconciler reads SSM, records the end and hands the app to the pending push
    assert report["action"] == "converging"
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    started = world.release(2)
    assert started.status is ReleaseStatus.DEPLOYING
    assert started.command_id == world.shim.commands()[-1].command_id
    assert world.shim.commands()[-1].parameters["release"] == ["2"]
    assert world.core.state.get("web").lock_owner == "web#2"


def test_the_lock_is_never_taken_over_by_time_only_the_deploys_end_moves_it(world: World) -> None:
    # Given release 1 deploying for five hours
    now = _clock(world, 2_000_000.0)
    release = world.push(1, "v1")
    now[0] += 5 * 3600
    # When a push, the reconciler and an operator's resume come by
    assert world.push(2, "v2").status is ReleaseStatus.PENDING
    reconcile_app(world.ld, world.config)
    handle_operation(world.ld, {"action": "resume", "app": "web"})
    # Then release 1 still holds the app, and nothing else was sent
    assert world.core.state.get("web").lock_owner == "web#1"
    assert _statuses(world) == {1: ReleaseStatus.DEPLOYING, 2: ReleaseStatus.PENDING}
    assert len(world.shim.commands()) == 1
    # When its command ends, the decision at its end hands the app on
    answer = world.complete(release)
    assert answer["next_release"] == 2
    assert world.core.state.get("web").lock_owner == "web#2"


@pytest.mark.parametrize("crash", ["before the command", "after the command, before recording it"])
def test_a_start_whose_invocation_died_is_finished_once_its_claim_is_stale(world: World, crash: str) -> None:
    # Given a push whose invocation dies while starting the deploy
    now = _clock(world, 3_000_000.0)
    send = world.core.fleet.send_swap

    def dies(*args: Any, **kwargs: Any) -> str:
        if crash != "before the command":
            send(*args, **kwargs)
        raise RuntimeError("the invocation timed out")

    event = parse_push_event(world.push_event(world.image(1, "v1"), "v1"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(world.core.fleet, "send_swap", dies)
        with pytest.raises(RuntimeError):
            accept_push(world.core, event)
    sent_by_the_dead = len(world.shim.commands())
    assert sent_by_the_dead == (0 if crash == "before the command" else 1)
    assert world.release(1).status is ReleaseStatus.DEPLOYING
    assert world.release(1).command_id is None
    # When the reconciler comes by while the dead invocation's claim is still fresh
    reconcile_app(world.ld, world.config)
    # Then it leaves the start alone (that invocation might still be sending)
    assert len(world.shim.commands()) == sent_by_the_dead
    assert world.release(1).command_id is None
    # When the claim is older than any invocation lives
    now[0] += controller.SEND_CLAIM_SECONDS + 1
    reconcile_app(world.ld, world.config)
    # Then the release has exactly one command: the one the dead invocation sent, else a new one
    commands = world.shim.commands()
    assert len(commands) == 1
    assert world.release(1).command_id == commands[0].command_id
    assert commands[0].parameters["release"] == ["1"]
    assert world.core.state.get("web").lock_owner == "web#1"
    world.complete(world.release(1))
    assert world.release(1).status is ReleaseStatus.SUCCEEDED


def test_a_burst_of_twenty_pushes_during_a_deploy_ends_on_the_newest(world: World) -> None:
    # Given release 1 deploying
    first = world.push(1, "v1")
    # When 20 more images are pushed while it deploys
    burst = [world.push(n, f"v{n}") for n in range(2, 22)]
    assert all(r.status is ReleaseStatus.PENDING for r in burst)
    answer = world.complete(first)
    # Then the newest starts when release 1 ends, and every other pending one is SUPERSEDED
    assert answer["next_release"] == 21
    newest = world.release(21)
    assert newest.status is ReleaseStatus.DEPLOYING
    world.complete(newest)
    releases = _statuses(world)
    assert len(releases) == 21  # nothing lost
    assert releases[1] is ReleaseStatus.SUCCEEDED
    assert releases[21] is ReleaseStatus.SUCCEEDED
    assert {releases[n] for n in range(2, 21)} == {ReleaseStatus.SUPERSEDED}
    # And pointer, launch-template version and fleet agree on the newest
    assert world.assert_agree().release == 21
    assert world.core.state.get("web").lock_owner is None
    assert len(world.shim.commands()) == 2


def test_pending_releases_older_than_the_one_starting_are_superseded_by_the_start(world: World) -> None:
    # Given release 1 deploying, and releases 2 and 3 recorded PENDING by invocations that died
    # before superseding anything (so nothing but the start itself can supersede release 2)
    first = world.push(1, "v1")

    def dies(*_args: Any, **_kwargs: Any) -> list[int]:
        raise RuntimeError("the invocation timed out")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controller, "supersede_older_pending", dies)
        for n in (2, 3):
            event = parse_push_event(world.push_event(world.image(n, f"v{n}"), f"v{n}"))
            with pytest.raises(RuntimeError):
                accept_push(world.core, event)
    assert _statuses(world) == {
        1: ReleaseStatus.DEPLOYING,
        2: ReleaseStatus.PENDING,
        3: ReleaseStatus.PENDING,
    }
    # When release 1 ends
    answer = world.complete(first)
    # Then the newest pending release starts, and the older one is SUPERSEDED in the same decision
    assert answer["next_release"] == 3
    assert world.release(3).status is ReleaseStatus.DEPLOYING
    skipped = world.release(2)
    assert skipped.status is ReleaseStatus.SUPERSEDED
    assert skipped.status_reason == "superseded by release 3"
    assert skipped.command_id is None
    assert [c.parameters["release"] for c in world.shim.commands()] == [["1"], ["3"]]
    assert world.core.releases.pending("web") == []


def test_a_release_ending_while_the_app_is_paused_starts_nothing_until_resume(world: World) -> None:
    # Given release 1 deploying, release 2 pending, and the app paused mid-deploy
    first = world.push(1, "v1")
    assert world.push(2, "v2").status is ReleaseStatus.PENDING
    handle_operation(world.ld, {"action": "pause", "app": "web", "reason": "incident"})
    # When release 1 succeeds
    answer = world.complete(first)
    # Then it is recorded SUCCEEDED and the app is freed, but release 2 waits
    assert "next_release" not in answer
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    assert world.release(2).status is ReleaseStatus.PENDING
    assert world.core.state.get("web").lock_owner is None
    assert len(world.shim.commands()) == 1
    # And the reconciler does not start it either while paused
    reconcile_app(world.ld, world.config)
    assert world.release(2).status is ReleaseStatus.PENDING
    assert len(world.shim.commands()) == 1
    # When an operator resumes
    resumed = handle_operation(world.ld, {"action": "resume", "app": "web"})
    # Then release 2 starts
    assert resumed["release"] == 2
    started = world.release(2)
    assert started.status is ReleaseStatus.DEPLOYING
    assert started.command_id == world.shim.commands()[-1].command_id == resumed["command_id"]
    assert world.core.state.get("web").lock_owner == "web#2"


def test_the_same_digest_pushed_again_under_a_new_tag_the_filter_accepts_deploys(world: World) -> None:
    # Given an app deploying v* tags, and release 1 (v1.4.2-rc1) live
    config = AppConfig.parse({**world.config.to_document(), "tag_filter": ["v*"]})
    world.core.apps.put(config)
    world.config = config
    world.complete(world.push(1, "v1.4.2-rc1"))
    # When the same image is tagged v1.4.2 (ECR sends a push of the same digest, new tag)
    again = world.push(1, "v1.4.2")
    # Then it is a new release that deploys (hosts already running it record it as live)
    assert again.release == 2
    assert again.tag == "v1.4.2"
    assert again.digest == world.release(1).digest
    assert again.status is ReleaseStatus.DEPLOYING
    assert [c.parameters["release"] for c in world.shim.commands()] == [["1"], ["2"]]
    world.complete(again)
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    # And the same push delivered again (same digest and tag) is that release, not a third
    redelivered = accept_push(world.core, parse_push_event(world.push_event(again.digest, "v1.4.2")))
    assert redelivered.results[0].release == 2
    assert len(world.core.releases.list_recent("web", 100)) == 2
    assert len(world.shim.commands()) == 2
    # And a tag the filter refuses is ignored
    ignored = accept_push(world.core, parse_push_event(world.push_event(again.digest, "staging-7")))
    assert ignored.results[0].action.value == "ignored"
    assert len(world.core.releases.list_recent("web", 100)) == 2


def test_the_same_terminal_event_twice_hands_the_lock_on_only_once(world: World) -> None:
    # Given release 1 done in SSM and release 2 pending
    first = world.push(1, "v1")
    world.push(2, "v2")
    _, commands = world.run_command(first)
    # When its terminal command event is delivered twice
    once = world.deliver(commands[0])
    twice = world.deliver(commands[0])
    # Then release 2 started once, and the duplicate reports no hand-on of its own
    assert once["next_release"] == 2
    assert "next_release" not in twice
    assert twice["release_status"] == "SUCCEEDED"
    assert len(world.shim.commands()) == 2
    assert world.core.state.get("web").lock_owner == "web#2"
