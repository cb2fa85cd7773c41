"""The deploy lock, release numbering and statuses, and the pending queue."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest
from deployer.adapters.app_state import AppState
from deployer.errors import DeployInProgress, InvalidTransition, LockLost, ReleaseNotFound, RolloutFailed
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseStatus
from deployer.rollout import PushAction, accept_push, lock_owner
from pydantic import ValidationError

from tests import moto_shim
from tests.conftest import GROUP, REGION

pytestmark = pytest.mark.unit


def push(load_event: Any, digest_byte: str, tag: str) -> Any:
    event = copy.deepcopy(load_event("ecr_image_push"))
    event["detail"]["image-digest"] = "sha256:" + digest_byte * 64
    event["detail"]["image-tag"] = tag
    return parse_push_event(event)


def test_release_numbers_increase_per_app(deps: Any) -> None:
    assert [deps.state.next_release("web") for _ in range(3)] == [1, 2, 3]
    assert deps.state.next_release("api") == 1


def test_the_lock_has_one_holder_until_released(deps: Any) -> None:
    # Given the lock held by one owner
    assert deps.state.acquire("web", "web#1", 600)

    # When another owner tries, then it is refused; after release it succeeds
    assert not deps.state.acquire("web", "web#2", 600)
    deps.state.release("web", "web#1")
    assert deps.state.acquire("web", "web#2", 600)
    # and the former owner can neither renew nor release it
    with pytest.raises(LockLost):
        deps.state.renew("web", "web#1", 600)
    with pytest.raises(LockLost):
        deps.state.release("web", "web#1")


def test_an_expired_lease_can_be_taken_over(deps: Any, settings: Any) -> None:
    # Given a lock taken by an invocation that then crashed, at t=1000 with a 60 s lease
    now = [1000.0]
    state = AppState(deps.clients.client("dynamodb"), settings.app_state_table, clock=lambda: now[0])
    assert state.acquire("web", "crashed", 60)
    assert not state.acquire("web", "next", 60)

    # When the lease has run out
    now[0] = 1061.0

    # Then another owner takes it over, and the crashed one has lost it
    assert state.acquire("web", "next", 60)
    with pytest.raises(LockLost):
        state.release("web", "crashed")


def test_status_changes_follow_the_lifecycle(deps: Any, registered_app: Any, load_event: Any) -> None:
    # Given a release started by a push
    outcome = accept_push(deps, push(load_event, "1", "v1"))
    number = outcome.results[0].release

    # When it is marked SUCCEEDED twice, then the second is a no-op
    deps.releases.update_status("web", number, ReleaseStatus.SUCCEEDED, reason="fleet ok")
    again = deps.releases.update_status("web", number, ReleaseStatus.SUCCEEDED)
    assert again.status == ReleaseStatus.SUCCEEDED
    assert again.finished_at is not None
    # and a move back to DEPLOYING is refused
    with pytest.raises(InvalidTransition):
        deps.releases.update_status("web", number, ReleaseStatus.DEPLOYING)
    assert deps.releases.latest_succeeded("web").release == number
    assert deps.releases.by_command_id(again.command_id).release == number


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
    assert len(moto_shim.ssm_commands()) == 1
    assert deps.state.get("web").lock_owner == "web#1"


def test_a_paused_app_records_pushes_as_pending(deps: Any, registered_app: Any, load_event: Any) -> None:
    deps.state.set_paused("web", True, reason="incident")
    result = accept_push(deps, push(load_event, "1", "v1"))
    assert result.results[0].action == PushAction.PENDING
    assert len(moto_shim.ssm_commands()) == 0
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


def test_a_deploy_that_cannot_start_is_failed_put_back_and_unlocked(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given release 1 live, and then the group deleted behind the deployer's back
    accept_push(deps, push(load_event, "1", "v1"))
    deps.releases.update_status("web", 1, ReleaseStatus.SUCCEEDED)
    deps.state.release("web", "web#1")
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
        AutoScalingGroupName=GROUP, ForceDelete=True
    )

    # When release 2 is pushed
    with pytest.raises(RolloutFailed) as err:
        accept_push(deps, push(load_event, "2", "v2"))

    # Then the error names the group, the release is FAILED, the pointer is back on 1, no lock
    assert GROUP in str(err.value)
    assert deps.releases.get("web", 2).status == ReleaseStatus.FAILED
    assert deps.pointer.get("web").release == 1
    assert deps.state.get("web").lock_owner is None
    assert lock_owner(deps.releases.get("web", 2)) == "web#2"


def test_a_first_deploy_that_cannot_start_leaves_no_pointer(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given an app whose group was deleted before its first push
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
        AutoScalingGroupName=GROUP, ForceDelete=True
    )

    # When the push arrives
    with pytest.raises(RolloutFailed):
        accept_push(deps, push(load_event, "1", "v1"))

    # Then no pointer names the failed release, which is FAILED, and the lock is free
    assert deps.pointer.get("web") is None
    assert deps.releases.get("web", 1).status == ReleaseStatus.FAILED
    assert deps.state.get("web").lock_owner is None


def test_a_status_change_reports_whether_it_made_the_change(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a deploying release
    number = accept_push(deps, push(load_event, "1", "v1")).results[0].release

    # When it is decided twice (a duplicate event)
    first, first_changed = deps.releases.transition("web", number, ReleaseStatus.SUCCEEDED, reason="fleet ok")
    second, second_changed = deps.releases.transition("web", number, ReleaseStatus.SUCCEEDED, reason="again")

    # Then only the first made the change, and the second returns the release as stored
    assert (first_changed, second_changed) == (True, False)
    assert second.status_reason == "fleet ok"
    assert second.updated_at == first.updated_at


def test_a_refused_transition_carries_the_release_as_found(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a release that succeeded
    number = accept_push(deps, push(load_event, "1", "v1")).results[0].release
    deps.releases.update_status("web", number, ReleaseStatus.SUCCEEDED)

    # When it is asked to fail
    with pytest.raises(InvalidTransition) as err:
        deps.releases.update_status("web", number, ReleaseStatus.FAILED, reason="late event")

    # Then the error names both statuses, carries the stored release, and nothing changed
    assert "SUCCEEDED" in str(err.value)
    assert "FAILED" in str(err.value)
    assert err.value.current.status == ReleaseStatus.SUCCEEDED
    assert deps.releases.get("web", number).status == ReleaseStatus.SUCCEEDED


def test_a_status_change_of_an_unknown_release_is_release_not_found(deps: Any) -> None:
    with pytest.raises(ReleaseNotFound):
        deps.releases.update_status("web", 42, ReleaseStatus.FAILED, reason="nothing there")
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


def test_reserving_takes_the_lock_and_the_next_number_whatever_the_hint(deps: Any) -> None:
    # Given an app with three releases numbered
    for _ in range(3):
        deps.state.next_release("web")

    # When the lock and a number are reserved with a stale hint
    number = deps.state.reserve("web", lambda n: f"web#{n}", 60, last_release_hint=1)

    # Then the number is the next one and the lock is held in its name
    assert number == 4
    state = deps.state.get("web")
    assert (state.last_release, state.lock_owner) == (4, "web#4")


def test_reserving_while_a_deploy_holds_the_lock_changes_nothing(deps: Any) -> None:
    # Given a deploy holding the lock
    deps.state.next_release("web")
    assert deps.state.acquire("web", "web#1", 60)

    # When an operator reserves
    with pytest.raises(DeployInProgress) as err:
        deps.state.reserve("web", lambda n: f"web#{n}", 60, last_release_hint=1)

    # Then the error names the holder, and neither the counter nor the lock moved
    assert "web#1" in str(err.value)
    state = deps.state.get("web")
    assert (state.last_release, state.lock_owner) == (1, "web#1")


def test_a_push_that_lost_the_lock_to_a_newer_release_is_superseded_at_once(
    deps: Any, registered_app: Any, load_event: Any
) -> None:
    # Given a newer release (9) of the app holding the deploy lock
    assert deps.state.acquire("web", "web#9", 600)

    # When an older push (release 1) finds the lock taken
    result = accept_push(deps, push(load_event, "1", "v1"))

    # Then it is not left to deploy after the newer one: it is SUPERSEDED, and nothing was sent
    assert result.results[0].action == PushAction.PENDING
    assert "release 9" in result.results[0].reason
    assert deps.releases.get("web", 1).status == ReleaseStatus.SUPERSEDED
    assert deps.releases.pending("web") == []
    assert len(moto_shim.ssm_commands()) == 0
