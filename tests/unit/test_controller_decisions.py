"""Every decision of the controller (deployer.controller.decisions), without any AWS stand-in:
the facts a decision reads in, the release writes and the app's state change it commits out.
One section per decision, in the order of docs/architecture.md's decision table."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from deployer.adapters.app_state import AppStateRecord
from deployer.adapters.command_results import CommandCounts, InvocationTally
from deployer.controller import Ending, Now, decisions
from deployer.errors import DeployInProgress
from deployer.metrics_names import DeployMetric
from deployer.models.config import AppConfig
from deployer.models.records import Release, ReleaseSource, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.observability import Metric
from deployer.verdicts import Verdict

from tests.conftest import WEB_CONFIG, digest_of, make_release

pytestmark = pytest.mark.unit

S = ReleaseStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = Now(epoch=int(T0.timestamp()), at=T0)
TOKEN = "t" * 32
PUSHED = T0 - timedelta(minutes=3)


def config(**overrides: Any) -> AppConfig:
    raw = {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0", **overrides}
    return AppConfig.parse(raw)


def release(n: int, status: ReleaseStatus = S.SUCCEEDED, **fields: Any) -> Release:
    """Release n of web in `status`, image n unless `digest` says otherwise."""
    return make_release(n, status=status, **fields)


def state(**fields: Any) -> AppStateRecord:
    return AppStateRecord(app="web", **fields)


def ending(verdict: Verdict, reason: str = "the fleet's verdict") -> Ending:
    status = SsmStatus.SUCCESS if verdict is Verdict.SUCCEEDED else SsmStatus.FAILED
    counts = CommandCounts(command_id="c", status=status.value, target_count=3, completed_count=3)
    return Ending(status, counts, None, verdict, reason)


def written(
    decision: decisions.Decision | None,
) -> dict[int, tuple[ReleaseStatus, frozenset[ReleaseStatus] | None]]:
    """Each release the decision writes: its new status and the statuses it must be in now (None: a
    new record)."""
    assert decision is not None
    assert decision.app == "web"
    assert decision.change is None or decision.change.app == "web"
    out: dict[int, tuple[ReleaseStatus, frozenset[ReleaseStatus] | None]] = {
        r.release: (r.status, None) for r in decision.creates
    }
    out.update({t.release: (t.status, t.allowed_from) for t in decision.transitions})
    return out


PENDING_ONLY = frozenset({S.PENDING})
DEPLOYING_ONLY = frozenset({S.DEPLOYING})


# ------------------------------------------------------------------ admission
def admit(st: AppStateRecord, n_digest: int = 9, **kw: Any) -> decisions.Decision | None:
    facts: dict[str, Any] = {
        "image": f"r/team/web@{digest_of(n_digest)}",
        "digest": digest_of(n_digest),
        "tag": f"v{n_digest}",
        "source": ReleaseSource.PUSH,
        "reason": "push",
        "token": TOKEN,
        "now": NOW,
        "marker": "marker-9",
        "pushed_at": PUSHED,
        "event_id": "event-9",
    }
    return decisions.admission(config(), st, **{**facts, **kw})


def test_a_push_to_a_free_app_starts_at_once_with_the_next_number() -> None:
    decision = admit(state(last_release=4, desired=4))
    assert written(decision) == {5: (S.DEPLOYING, None)}
    assert decision is not None
    (new,) = decision.creates
    assert (new.release, new.status, new.replaces, new.send_claim) == (5, S.DEPLOYING, 4, TOKEN)
    assert (new.status_reason, new.deploy_started_at, new.send_claimed_at) == (
        "push deploy started",
        T0,
        NOW.epoch,
    )
    assert (new.tag, new.pushed_at, new.event_id, new.rollback_of) == ("v9", PUSHED, "event-9", None)
    change = decision.change
    assert change is not None
    assert (change.owner, change.desired, change.last_release, change.expect_last) == ("web#5", 5, 5, 4)
    assert change.expect_owner is None
    assert change.refuse_if_refused == digest_of(9)
    assert change.allow is None
    assert change.require_unpaused
    assert change.add_outbox == ["5:started"]
    assert change.last_pushed_at == int(PUSHED.timestamp())
    assert decision.admission == ("marker-9", 5)
    assert decision.started == 5


def test_a_push_while_another_release_rolls_out_waits_pending() -> None:
    decision = admit(state(last_release=4, desired=4, lock_owner="web#4"))
    assert decision is not None
    assert written(decision) == {5: (S.PENDING, None)}
    change = decision.change
    assert change is not None
    assert (change.owner, change.desired, change.expect_owner) == (None, None, "web#4")
    assert change.add_outbox == []
    assert decision.creates[0].replaces is None
    assert decision.started is None


def test_a_push_to_a_paused_app_waits_but_an_operator_deploy_starts() -> None:
    paused = state(last_release=4, desired=4, paused=True)
    assert written(admit(paused)) == {5: (S.PENDING, None)}
    operator = admit(paused, operator=True, marker=None, source=ReleaseSource.MANUAL, rollback_of=3)
    assert written(operator) == {5: (S.DEPLOYING, None)}
    assert operator is not None
    assert operator.change is not None
    assert not operator.change.require_unpaused
    assert operator.change.last_pushed_at is None  # only a push moves the newest push time
    assert operator.admission is None
    assert operator.creates[0].rollback_of == 3


def test_a_refused_digest_is_not_admitted_from_a_push_and_an_operator_lifts_the_refusal() -> None:
    refused = state(last_release=4, refused_digests=frozenset({digest_of(9)}))
    assert admit(refused) is None
    operator = admit(refused, operator=True, marker=None, source=ReleaseSource.MANUAL)
    assert operator is not None
    assert operator.change is not None
    assert operator.change.allow == digest_of(9)
    assert operator.change.refuse_if_refused is None


def test_an_operator_deploy_while_one_rolls_out_is_refused() -> None:
    with pytest.raises(DeployInProgress, match="web#4"):
        admit(state(last_release=4, lock_owner="web#4"), operator=True, source=ReleaseSource.MANUAL)


def test_a_push_older_than_one_admitted_is_recorded_superseded() -> None:
    later = int(PUSHED.timestamp()) + 60
    decision = admit(state(last_release=4, desired=4, last_pushed_at=later))
    assert decision is not None
    (new,) = decision.creates
    assert (new.status, new.status_reason) == (S.SUPERSEDED, "a newer push arrived first")
    assert new.finished_at == T0
    assert decision.change is not None
    assert decision.change.owner is None
    assert decision.change.last_pushed_at is None  # the newer push's time stays
    assert decision.counts == [(Metric.RELEASES_SUPERSEDED, 1)]


def test_a_push_as_old_as_the_newest_admitted_is_not_late() -> None:
    decision = admit(state(last_pushed_at=int(PUSHED.timestamp())))
    assert written(decision) == {1: (S.DEPLOYING, None)}


# ------------------------------------------------------------------ start_pending
def test_the_newest_pending_release_starts_and_supersedes_the_older_ones() -> None:
    pending = [release(7, S.PENDING), release(5, S.PENDING), release(6, S.PENDING)]
    decision = decisions.start_pending(state(last_release=7, desired=4), pending, TOKEN, NOW)
    assert written(decision) == {
        7: (S.DEPLOYING, PENDING_ONLY),
        5: (S.SUPERSEDED, PENDING_ONLY),
        6: (S.SUPERSEDED, PENDING_ONLY),
    }
    assert decision is not None
    start = decision.transitions[0]
    assert start.fields == {
        "deploy_started_at": T0,
        "replaces": 4,
        "send_claim": TOKEN,
        "send_claimed_at": NOW.epoch,
    }
    assert {t.reason for t in decision.transitions[1:]} == {"superseded by release 7"}
    assert decision.change is not None
    assert (decision.change.owner, decision.change.desired) == ("web#7", 7)
    assert decision.change.require_unpaused
    assert decision.change.add_outbox == ["7:started"]


def test_a_pending_release_holding_the_lock_starts_on_condition_it_still_holds_it() -> None:
    st = state(last_release=7, lock_owner="web#7")
    decision = decisions.start_pending(st, [release(7, S.PENDING)], TOKEN, NOW)
    assert written(decision) == {7: (S.DEPLOYING, PENDING_ONLY)}
    assert decision is not None
    assert decision.transitions[0].reason == "push deploy started"
    assert decision.change is not None
    assert decision.change.expect_owner == "web#7"


def test_nothing_starts_without_pending_releases_or_while_paused() -> None:
    assert decisions.start_pending(state(), [], TOKEN, NOW) is None
    assert decisions.start_pending(state(paused=True), [release(2, S.PENDING)], TOKEN, NOW) is None


def test_one_decision_supersedes_at_most_what_a_transaction_holds() -> None:
    pending = [release(n, S.PENDING) for n in range(1, 200)]
    decision = decisions.start_pending(state(last_release=199), pending, TOKEN, NOW)
    assert decision is not None
    assert len(decision.transitions) == 1 + decisions.SUPERSEDE_PER_DECISION
    assert len(decision.transitions) + 1 <= 100  # and the state item


# ------------------------------------------------------------------ end
def end(rel: Release, verdict: Verdict, **facts: Any) -> decisions.Decision:
    st = facts.pop(
        "st", state(last_release=rel.release, desired=rel.release, lock_owner=f"web#{rel.release}")
    )
    base: dict[str, Any] = {
        "auto_rollback": True,
        "pending": [],
        "target": None,
        "rolled_back": None,
        "token": TOKEN,
        "now": NOW,
    }
    classes = frozenset(facts.pop("failure_classes", ()))
    how = ending(verdict)
    return decisions.end(st, rel, replace(how, failure_classes=classes), **{**base, **facts})


def test_a_release_that_succeeded_becomes_desired_and_frees_the_app() -> None:
    rel = release(5, S.DEPLOYING, replaces=4, deploy_started_at=T0 - timedelta(seconds=42))
    decision = end(rel, Verdict.SUCCEEDED)
    assert written(decision) == {5: (S.SUCCEEDED, DEPLOYING_ONLY)}
    assert decision.transitions[0].fields == {"hosts_ok": 3, "hosts_failed": 0}
    assert decision.transitions[0].reason == "the fleet's verdict"
    change = decision.change
    assert change is not None
    assert (change.desired, change.clear_owner, change.expect_owner) == (5, True, "web#5")
    assert change.refuse is None
    assert change.add_outbox == ["5:succeeded"]
    assert decision.ended == decisions.Ended(5, S.SUCCEEDED, "the fleet's verdict", None, rollback=False)
    assert decision.duration == 42.0
    assert decision.counts == [(DeployMetric.DEPLOY_SUCCEEDED, 1)]


def test_a_release_that_succeeded_hands_the_app_to_the_newest_pending_one() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    pending = [release(3, S.PENDING), release(6, S.PENDING), release(7, S.PENDING)]
    decision = end(rel, Verdict.SUCCEEDED, pending=pending, st=state(last_release=7, lock_owner="web#5"))
    assert written(decision) == {
        5: (S.SUCCEEDED, DEPLOYING_ONLY),
        7: (S.DEPLOYING, PENDING_ONLY),
        3: (S.SUPERSEDED, PENDING_ONLY),
        6: (S.SUPERSEDED, PENDING_ONLY),
    }
    start = next(t for t in decision.transitions if t.release == 7)
    assert start.fields["replaces"] == 5  # the release that just succeeded is the last good one
    assert start.fields["send_claim"] == TOKEN
    change = decision.change
    assert change is not None
    assert (change.owner, change.desired, change.clear_owner) == ("web#7", 7, False)
    assert change.require_unpaused
    assert change.add_outbox == ["5:succeeded", "7:started"]
    assert decision.ended is not None
    assert decision.ended.followed_by == 7


def test_a_pending_release_older_than_the_one_that_ended_is_superseded_not_started() -> None:
    rel = release(5, S.DEPLOYING)
    decision = end(rel, Verdict.SUCCEEDED, pending=[release(4, S.PENDING)])
    assert written(decision) == {5: (S.SUCCEEDED, DEPLOYING_ONLY), 4: (S.SUPERSEDED, PENDING_ONLY)}
    assert decision.transitions[1].reason == "superseded by release 5"
    assert decision.change is not None
    assert decision.change.clear_owner


def test_a_lagging_pending_index_that_still_names_the_ended_release_changes_nothing_about_it() -> None:
    rel = release(5, S.DEPLOYING)
    decision = end(rel, Verdict.SUCCEEDED, pending=[release(5, S.PENDING)])
    assert written(decision) == {5: (S.SUCCEEDED, DEPLOYING_ONLY)}
    assert decision.change is not None
    assert decision.change.clear_owner


def ended(rel: Release, how: Ending) -> decisions.Decision:
    return decisions.end(
        state(lock_owner=f"web#{rel.release}"),
        rel,
        how,
        auto_rollback=True,
        pending=[],
        target=None,
        rolled_back=None,
        token=TOKEN,
        now=NOW,
    )


def test_the_hosts_counts_come_from_the_invocations_when_ssm_counted_them() -> None:
    tally = InvocationTally(succeeded=2, failed=1)
    decision = ended(
        release(5, S.DEPLOYING), Ending(SsmStatus.FAILED, None, tally, Verdict.FAILED, "one failed")
    )
    assert decision.transitions[0].fields == {"hosts_ok": 2, "hosts_failed": 1}


def test_an_event_ahead_of_ssm_s_listing_counts_the_hosts_by_the_event_s_status() -> None:
    # SSM's listing still says InProgress; the event that woke us said Success
    lagging = CommandCounts(command_id="c", status="InProgress", target_count=2, completed_count=2)
    done = Ending(SsmStatus.SUCCESS, lagging, None, Verdict.SUCCEEDED, "every targeted host is live")
    decision = ended(release(5, S.DEPLOYING, deploy_started_at=T0), done)
    assert decision.transitions[0].fields == {"hosts_ok": 2, "hosts_failed": 0}
    assert decision.duration == 0.0


def test_a_paused_app_starts_nothing_when_its_release_ends() -> None:
    rel = release(5, S.DEPLOYING)
    paused = state(last_release=6, lock_owner="web#5", paused=True)
    decision = end(rel, Verdict.SUCCEEDED, pending=[release(6, S.PENDING)], st=paused)
    assert written(decision) == {5: (S.SUCCEEDED, DEPLOYING_ONLY)}
    assert decision.change is not None
    assert decision.change.clear_owner


@pytest.mark.parametrize("previous_status", [S.SUCCEEDED, S.FAILED])
def test_a_rollback_that_succeeded_marks_the_release_it_replaced_rolled_back(
    previous_status: ReleaseStatus,
) -> None:
    rollback = release(
        6, S.DEPLOYING, digest=digest_of(3), source=ReleaseSource.ROLLBACK, rollback_of=5, replaces=3
    )
    previous = release(5, previous_status, status_reason="health check failed")
    decision = end(rollback, Verdict.SUCCEEDED, rolled_back=previous)
    assert written(decision) == {
        6: (S.SUCCEEDED, DEPLOYING_ONLY),
        5: (S.ROLLED_BACK, frozenset({previous_status})),
    }
    assert decision.transitions[1].reason == "rolled back by release 6: health check failed"


@pytest.mark.parametrize(
    ("previous", "rollback_of"),
    [
        (release(5, S.CANCELLED), 5),  # the cancel's own final status stays
        (release(5, S.ROLLED_BACK), 5),
        (release(4, S.SUCCEEDED), 5),  # not the release this one rolled back
    ],
)
def test_a_rollback_marks_nothing_else_rolled_back(previous: Release, rollback_of: int) -> None:
    rollback = release(6, S.DEPLOYING, source=ReleaseSource.ROLLBACK, rollback_of=rollback_of)
    decision = end(rollback, Verdict.SUCCEEDED, rolled_back=previous)
    assert written(decision) == {6: (S.SUCCEEDED, DEPLOYING_ONLY)}


def test_a_failed_release_is_rolled_back_to_the_target_and_its_digest_refused() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    target = release(3, S.SUCCEEDED)
    st = state(last_release=5, desired=5, lock_owner="web#5")
    decision = end(rel, Verdict.FAILED, target=target, st=st)
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY), 6: (S.DEPLOYING, None)}
    (rollback,) = decision.creates
    assert (rollback.image, rollback.digest, rollback.tag) == (target.image, target.digest, target.tag)
    assert (rollback.source, rollback.replaces, rollback.rollback_of) == (ReleaseSource.ROLLBACK, 3, 5)
    assert rollback.reason == "automatic rollback: release 5 failed: the fleet's verdict"
    assert (rollback.send_claim, rollback.send_claimed_at) == (TOKEN, NOW.epoch)
    assert rollback.status_reason == "rollback deploy started"
    change = decision.change
    assert change is not None
    assert (change.owner, change.desired, change.last_release, change.expect_last) == ("web#6", 6, 6, 5)
    assert change.refuse == digest_of(5)
    assert change.add_outbox == ["5:rolled_back:3", "6:started"]
    assert decision.ended == decisions.Ended(5, S.FAILED, "the fleet's verdict", 6, rollback=True)
    assert decision.counts == [(DeployMetric.DEPLOY_FAILED, 1), (DeployMetric.ROLLBACKS, 1)]


@pytest.mark.parametrize(
    ("classes", "refused"),
    [
        ({"config"}, False),  # every failed host failed fetching the release's config
        ({"config", "health"}, True),
        ({"health"}, True),
        ((), True),  # no outcome recorded yet: the image is not cleared
    ],
)
def test_a_failed_push_s_digest_is_refused_unless_every_failed_host_failed_on_its_config(
    classes: set[str], refused: bool
) -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    decision = end(rel, Verdict.FAILED, target=release(3, S.SUCCEEDED), failure_classes=classes)
    assert decision.change is not None
    assert decision.change.refuse == (digest_of(5) if refused else None)


def test_a_failed_release_without_a_target_is_held_and_the_app_moves_on() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    decision = end(
        rel, Verdict.FAILED, pending=[release(6, S.PENDING)], st=state(last_release=6, lock_owner="web#5")
    )
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY), 6: (S.DEPLOYING, PENDING_ONLY)}
    start = decision.transitions[1]
    assert start.fields["replaces"] == 4  # the failed release is not a last good one
    assert start.fields["send_claim"] == TOKEN
    change = decision.change
    assert change is not None
    assert change.refuse == digest_of(5)
    assert change.add_outbox == ["5:failed", "6:started"]
    assert decision.ended is not None
    assert not decision.ended.rollback


def test_a_failed_release_supersedes_a_pending_one_older_than_itself() -> None:
    rel = release(5, S.DEPLOYING, replaces=3)
    decision = end(rel, Verdict.FAILED, pending=[release(4, S.PENDING)])
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY), 4: (S.SUPERSEDED, PENDING_ONLY)}
    assert decision.change is not None
    assert decision.change.clear_owner


def test_an_app_without_automatic_rollback_holds_its_failed_release() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    decision = end(rel, Verdict.FAILED, target=release(3), auto_rollback=False)
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY)}
    assert decision.change is not None
    assert (decision.change.desired, decision.change.clear_owner) == (5, True)
    assert decision.change.add_outbox == ["5:failed"]


def test_a_failed_rollback_is_not_rolled_back_again_nor_its_image_refused() -> None:
    rollback = release(
        6, S.DEPLOYING, digest=digest_of(3), source=ReleaseSource.ROLLBACK, rollback_of=5, replaces=3
    )
    decision = end(rollback, Verdict.FAILED, target=release(2))
    assert written(decision) == {6: (S.FAILED, DEPLOYING_ONLY)}
    assert decision.change is not None
    assert decision.change.refuse is None
    assert decision.change.add_outbox == ["6:failed"]


# ------------------------------------------------------------------ start_failed
def test_a_start_that_failed_for_good_puts_the_replaced_release_back() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    decision = decisions.start_failed(
        state(last_release=5, lock_owner="web#5"), rel, "no group", [], TOKEN, NOW
    )
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY)}
    assert decision.transitions[0].reason == "could not start: no group"
    change = decision.change
    assert change is not None
    assert (change.desired, change.realign, change.clear_owner, change.clear_desired) == (
        4,
        True,
        True,
        False,
    )
    assert change.add_outbox == ["5:failed"]
    assert change.expect_owner == "web#5"
    assert decision.counts == [(Metric.DEPLOY_START_FAILED, 1)]
    assert decision.ended is None


def test_a_first_deploy_that_could_not_start_leaves_no_desired_release() -> None:
    rel = release(1, S.DEPLOYING)
    decision = decisions.start_failed(state(last_release=1, lock_owner="web#1"), rel, "x", [], TOKEN, NOW)
    assert decision.change is not None
    assert (decision.change.desired, decision.change.clear_desired) == (None, True)


def test_a_start_that_failed_hands_the_app_to_a_newer_pending_release() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    st = state(last_release=6, lock_owner="web#5")
    decision = decisions.start_failed(st, rel, "x", [release(6, S.PENDING)], TOKEN, NOW)
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY), 6: (S.DEPLOYING, PENDING_ONLY)}
    assert decision.transitions[1].fields["replaces"] == 4
    assert decision.transitions[1].fields["send_claim"] == TOKEN
    assert decision.change is not None
    assert (decision.change.owner, decision.change.desired) == ("web#6", 6)


def test_a_start_that_failed_supersedes_a_pending_release_older_than_itself() -> None:
    rel = release(5, S.DEPLOYING, replaces=3)
    decision = decisions.start_failed(
        state(lock_owner="web#5"), rel, "x", [release(4, S.PENDING)], TOKEN, NOW
    )
    assert written(decision) == {5: (S.FAILED, DEPLOYING_ONLY), 4: (S.SUPERSEDED, PENDING_ONLY)}


# ------------------------------------------------------------------ hand_on, free_stale_lock, realigned
def test_a_lock_whose_release_ended_elsewhere_goes_to_the_newest_pending_release() -> None:
    st = state(last_release=7, desired=4, lock_owner="web#5")
    decision = decisions.hand_on(st, [release(6, S.PENDING), release(7, S.PENDING)], TOKEN, NOW)
    assert written(decision) == {7: (S.DEPLOYING, PENDING_ONLY), 6: (S.SUPERSEDED, PENDING_ONLY)}
    assert decision.transitions[0].fields["replaces"] == 4
    assert decision.transitions[0].fields["send_claim"] == TOKEN
    assert decision.change is not None
    assert (decision.change.expect_owner, decision.change.owner) == ("web#5", "web#7")


def test_every_pending_release_may_take_a_lock_whose_release_ended_elsewhere() -> None:
    decision = decisions.hand_on(
        state(last_release=1, lock_owner="web#9"), [release(1, S.PENDING)], TOKEN, NOW
    )
    assert written(decision) == {1: (S.DEPLOYING, PENDING_ONLY)}


def test_a_lock_whose_release_ended_elsewhere_is_freed_when_nothing_waits() -> None:
    decision = decisions.hand_on(state(lock_owner="web#5"), [], TOKEN, NOW)
    assert written(decision) == {}
    assert decision.change is not None
    assert (decision.change.clear_owner, decision.change.expect_owner) == (True, "web#5")


def test_a_lock_naming_no_release_is_freed_on_condition_it_still_names_it() -> None:
    decision = decisions.free_stale_lock(state(lock_owner="web#9"))
    assert written(decision) == {}
    assert decision.change is not None
    assert (decision.change.clear_owner, decision.change.expect_owner) == (True, "web#9")


def test_realigned_clears_the_flag_while_the_app_stays_free() -> None:
    decision = decisions.realigned(state(realign=True, desired=4))
    assert written(decision) == {}
    assert decision.change is not None
    assert (decision.change.realign, decision.change.expect_owner, decision.change.check_owner) == (
        False,
        None,
        True,
    )


# ------------------------------------------------------------------ cancel
def test_a_cancelled_release_is_replaced_by_a_rollback_to_the_target() -> None:
    rel = release(5, S.DEPLOYING, replaces=4)
    st = state(last_release=5, desired=5, lock_owner="web#5")
    decision = decisions.cancel(st, rel, release(4), "cancelled by an operator: oops", TOKEN, NOW)
    assert written(decision) == {5: (S.CANCELLED, DEPLOYING_ONLY), 6: (S.DEPLOYING, None)}
    assert decision.transitions[0].reason == "cancelled by an operator: oops"
    (rollback,) = decision.creates
    assert (rollback.rollback_of, rollback.replaces, rollback.digest) == (5, 4, digest_of(4))
    assert rollback.reason == "cancel of release 5: back to release 4"
    assert rollback.send_claim == TOKEN
    assert decision.change is not None
    assert decision.change.expect_owner == "web#5"
    assert (decision.change.owner, decision.change.desired, decision.change.realign) == ("web#6", 6, None)
    assert decision.started == 6
    assert decision.counts == [(DeployMetric.DEPLOY_CANCELLED, 1)]


@pytest.mark.parametrize(
    ("rel", "target", "desired"),
    [
        (release(5, S.DEPLOYING, replaces=4), None, 4),
        (release(5, S.DEPLOYING, replaces=4, source=ReleaseSource.ROLLBACK, rollback_of=3), release(2), 4),
        (release(1, S.DEPLOYING), None, None),
    ],
)
def test_a_cancel_without_a_rollback_frees_the_app_and_puts_pointer_and_group_back(
    rel: Release, target: Release | None, desired: int | None
) -> None:
    st = state(last_release=rel.release, lock_owner=f"web#{rel.release}")
    decision = decisions.cancel(st, rel, target, "cancelled", TOKEN, NOW)
    assert written(decision) == {rel.release: (S.CANCELLED, DEPLOYING_ONLY)}
    change = decision.change
    assert change is not None
    assert (change.clear_owner, change.realign, change.desired) == (True, True, desired)
    assert change.clear_desired is (desired is None)
    assert decision.started is None


# ------------------------------------------------------------------ supersede
def test_pending_releases_older_than_a_new_one_are_superseded_in_one_decision() -> None:
    pending = [release(8, S.PENDING), release(3, S.PENDING), release(9, S.PENDING), release(5, S.PENDING)]
    decision = decisions.supersede("web", pending, newer_than=8)
    assert written(decision) == {3: (S.SUPERSEDED, PENDING_ONLY), 5: (S.SUPERSEDED, PENDING_ONLY)}
    assert decision is not None
    assert decision.change is None
    assert {t.reason for t in decision.transitions} == {"superseded by release 8"}
    assert decision.counts == [(Metric.RELEASES_SUPERSEDED, 2)]


def test_nothing_to_supersede_is_no_decision() -> None:
    assert decisions.supersede("web", [release(9, S.PENDING)], newer_than=9) is None
