"""The deploy lock across invocations: races, lease expiry, and a burst of pushes mid-deploy."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from deployer.adapters.app_state import AppState
from deployer.lifecycle import finish_release
from deployer.models.events import parse_push_event
from deployer.models.lifecycle_events import SsmStatus
from deployer.models.records import ReleaseStatus
from deployer.reconcile import reconcile_app
from deployer.rollout import accept_push

from tests.lifecycle.conftest import World

pytestmark = pytest.mark.unit


def _race(workers: list[Any]) -> list[Any]:
    """Run callables at the same moment on threads; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = workers[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_two_invocations_racing_for_the_lock_let_exactly_one_win(world: World) -> None:
    # Given the app's lock is free
    state = world.core.state
    # When two invocations try to take it at the same moment, eight times over
    for round_ in range(8):
        won = _race(
            [
                lambda r=round_: state.acquire("web", f"a{r}", 600),
                lambda r=round_: state.acquire("web", f"b{r}", 600),
            ]
        )
        # Then exactly one holds it
        assert sorted(won) == [False, True]
        owner = state.get("web").lock_owner
        state.release("web", owner or "")


def test_two_pushes_racing_start_one_deploy_and_leave_the_other_pending(world: World) -> None:
    # Given two images pushed at the same moment
    events = [parse_push_event(world.push_event(world.image(n, f"v{n}"), f"v{n}")) for n in (1, 2)]
    # When both push events are handled concurrently
    outcomes = _race([lambda e=e: accept_push(world.core, e) for e in events])
    # Then one started and the other waited; the waiting one stays PENDING when it is the newer
    # release and is SUPERSEDED when the newer one won the lock (deploying it after would go back)
    actions = sorted(o.results[0].action.value for o in outcomes)
    assert actions == ["pending", "started"]
    by_number = {r.release: r.status.value for r in world.core.releases.list_recent("web")}
    assert by_number in ({1: "DEPLOYING", 2: "PENDING"}, {1: "SUPERSEDED", 2: "DEPLOYING"})


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


def test_a_crashed_invocations_lock_expires_and_the_reconciler_finishes_its_deploy(world: World) -> None:
    # Given release 1 deploying, and its terminal event lost (the invocation crashed)
    now = [1_000_000.0]
    world.core.state = AppState(world.core.clients.client("dynamodb"), "AppStateTable", clock=lambda: now[0])
    world.core.clock = lambda: now[0]
    world.ld.core = world.core
    release = world.push(1, "v1")
    world.run_command(release)
    # While the lease runs, a new push waits and the reconciler keeps out
    second = world.push(2, "v2")
    assert second.status is ReleaseStatus.PENDING
    assert reconcile_app(world.ld, world.config)["action"] == "skipped"
    # When the lease expires
    now[0] += world.core.settings.lock_lease_seconds + 1
    report = reconcile_app(world.ld, world.config)
    # Then the reconciler applies the command's terminal status and the pending push starts
    assert report["action"] == "healed"
    assert world.release(1).status is ReleaseStatus.SUCCEEDED
    assert world.release(2).status is ReleaseStatus.DEPLOYING
    assert world.core.state.get("web").lock_owner == "web#2"


def test_an_expired_lease_can_be_taken_over_by_a_new_deploy(world: World) -> None:
    # Given a lock left behind by a crashed invocation
    now = [2_000_000.0]
    state = AppState(world.core.clients.client("dynamodb"), "AppStateTable", clock=lambda: now[0])
    assert state.acquire("web", "crashed", 60)
    assert not state.acquire("web", "next", 60)
    # When its lease has run out
    now[0] += 61
    # Then the next invocation takes it, and the crashed owner can no longer release it
    assert state.acquire("web", "next", 60)
    assert state.get("web").lock_owner == "next"


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
    releases = {r.release: r.status for r in world.core.releases.list_recent("web", 100)}
    assert len(releases) == 21  # nothing lost
    assert releases[1] is ReleaseStatus.SUCCEEDED
    assert releases[21] is ReleaseStatus.SUCCEEDED
    assert {releases[n] for n in range(2, 21)} == {ReleaseStatus.SUPERSEDED}
    # And pointer, launch-template version and fleet agree on the newest
    assert world.assert_agree().release == 21
    assert world.core.state.get("web").lock_owner is None


def test_finishing_a_release_twice_hands_the_lock_on_only_once(world: World) -> None:
    # Given release 1 done and release 2 pending
    first = world.push(1, "v1")
    world.push(2, "v2")
    world.run_command(first)
    # When its terminal status is applied twice
    once = finish_release(world.ld, world.release(1), SsmStatus.SUCCESS)
    twice = finish_release(world.ld, world.release(1), SsmStatus.SUCCESS)
    # Then release 2 started once
    assert once["next_release"] == 2
    assert "next_release" not in twice
    assert len(world.shim.commands()) == 2
