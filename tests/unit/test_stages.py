"""Stages (docs/stages.md) without any AWS stand-in: the config's validation, which instances
each stage takes, and each stage decision's writes (deployer.controller.stages)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from deployer import cli
from deployer.adapters.app_state import AppStateRecord
from deployer.adapters.command_results import CommandCounts
from deployer.adapters.releases import ReleasesStore
from deployer.controller import Ending, Now, stages
from deployer.errors import DeployerError, InvalidAppConfig
from deployer.markers import OutboxEntry, parse_stage_comment, stage_comment
from deployer.models.config import MAX_BAKE_SECONDS, MAX_STAGES, AppConfig
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, STAGE_RUNNING, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.verdicts import Verdict
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REGION, WEB_CONFIG, make_release

pytestmark = pytest.mark.unit

S = ReleaseStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = Now(epoch=int(T0.timestamp()), at=T0)
TOKEN = "t" * 32
WORKED = [
    {"hosts": 1, "bake_seconds": 300},
    {"hosts": "25%", "bake_seconds": 120, "approve": True},
    {"hosts": "100%"},
]


def config_with(stages_: Any) -> AppConfig:
    raw = {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0"}
    raw["rollout"] = {**raw.get("rollout", {}), "stages": stages_}
    return AppConfig.parse(raw)


def plan(stages_: Any = None) -> Any:
    return config_with(WORKED if stages_ is None else stages_).rollout.stages


def ending(verdict: Verdict) -> Ending:
    status = SsmStatus.SUCCESS if verdict is Verdict.SUCCEEDED else SsmStatus.FAILED
    counts = CommandCounts(command_id="c", status=status.value, target_count=1, completed_count=1)
    return Ending(status, counts, None, verdict, "the stage's verdict")


def locked(n: int = 5, **fields: Any) -> AppStateRecord:
    return AppStateRecord(app="web", last_release=n, lock_owner=f"web#{n}", desired=n, **fields)


# ------------------------------------------------------------------ config
def test_the_worked_config_is_accepted_and_kept_in_order() -> None:
    got = plan()
    assert [s.hosts for s in got] == [1, "25%", "100%"]
    assert [s.bake_seconds for s in got] == [300, 120, 0]
    assert [s.approve for s in got] == [False, True, False]


def test_an_app_without_stages_has_none() -> None:
    raw = {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0"}
    assert AppConfig.parse(raw).rollout.stages == ()


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        ([{"hosts": 0}, {"hosts": "100%"}], "rollout.stages.0.hosts"),
        ([{"hosts": "0%"}, {"hosts": "100%"}], "rollout.stages.0.hosts"),
        ([{"hosts": "101%"}, {"hosts": "100%"}], "rollout.stages.0.hosts"),
        ([{"hosts": 3}, {"hosts": 2}, {"hosts": "100%"}], "1.hosts: 2 does not grow"),
        ([{"hosts": "50%"}, {"hosts": "25%"}, {"hosts": "100%"}], "1.hosts: 25% does not grow"),
        ([{"hosts": 1}, {"hosts": "50%"}], 'the last stage (1) must be "hosts": "100%"'),
        ([{"hosts": "100%", "bake_seconds": MAX_BAKE_SECONDS + 1}], "rollout.stages.0.bake_seconds"),
        ([{"hosts": "100%", "bake_seconds": -1}], "rollout.stages.0.bake_seconds"),
        ([{"hosts": i + 1} for i in range(MAX_STAGES)] + [{"hosts": "100%"}], "rollout.stages"),
        ([{"hosts": True}, {"hosts": "100%"}], "rollout.stages.0.hosts"),
        ([{"hosts": 1, "wait": 5}, {"hosts": "100%"}], "rollout.stages.0.wait"),
    ],
)
def test_a_bad_stage_list_is_refused_naming_the_field(bad: Any, names: str) -> None:
    with pytest.raises(InvalidAppConfig) as err:
        config_with(bad)
    assert names in str(err.value)


_HOSTS = st.one_of(
    st.integers(min_value=-5, max_value=20),
    st.sampled_from(["0%", "1%", "25%", "50%", "99%", "100%", "101%", "5", "%", "", "25 %"]),
    st.none(),
    st.booleans(),
)
_STAGE = st.fixed_dictionaries(
    {"hosts": _HOSTS},
    optional={
        "bake_seconds": st.integers(min_value=-2, max_value=MAX_BAKE_SECONDS + 2),
        "approve": st.booleans(),
    },
)


@given(st.lists(_STAGE, max_size=MAX_STAGES + 2))
def test_any_stage_list_is_accepted_only_when_it_grows_to_100_percent(raw: list[dict[str, Any]]) -> None:
    # Given hostile stage lists; When parsed; Then an accepted one obeys every rule, and a
    # refused one raises InvalidAppConfig naming rollout.stages (never another exception).
    try:
        got = config_with(raw).rollout.stages
    except InvalidAppConfig as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "rollout.stages" in refused
        return
    if not raw:
        assert got == ()
        return
    assert got[-1].hosts == "100%"
    assert len(got) <= MAX_STAGES
    counts = [s.hosts for s in got if isinstance(s.hosts, int)]
    shares = [s.percent for s in got if s.percent is not None]
    assert counts == sorted(set(counts))
    assert all(c >= 1 for c in counts)
    assert shares == sorted(set(shares))
    assert all(0 <= s.bake_seconds <= MAX_BAKE_SECONDS for s in got)


@pytest.mark.parametrize(
    ("hosts", "fleet", "want"),
    [(1, 4, 1), (5, 3, 3), ("25%", 4, 1), ("25%", 3, 1), ("50%", 5, 3), ("100%", 7, 7)],
)
def test_a_stage_asks_for_its_count_or_share_rounded_up(hosts: Any, fleet: int, want: int) -> None:
    stage = plan([{"hosts": hosts}, {"hosts": "100%"}] if hosts != "100%" else [{"hosts": hosts}])[0]
    assert stage.resolve(fleet) == want


# ------------------------------------------------------------------ which instances
ZONES = {
    "i-a1": "eu-west-1a",
    "i-a2": "eu-west-1a",
    "i-a3": "eu-west-1a",
    "i-b1": "eu-west-1b",
    "i-c1": "eu-west-1c",
}


def test_instances_are_taken_round_robin_over_the_zones() -> None:
    assert stages.zone_order(ZONES) == ["i-a1", "i-b1", "i-c1", "i-a2", "i-a3"]


def test_the_order_does_not_depend_on_how_the_group_listed_its_instances() -> None:
    assert stages.zone_order(dict(reversed(list(ZONES.items())))) == stages.zone_order(ZONES)


def test_each_stage_before_the_last_takes_only_instances_no_earlier_stage_took() -> None:
    p = plan([{"hosts": 1}, {"hosts": 3}, {"hosts": "100%"}])
    first = stages.stage_targets(p, 0, ZONES, [])
    second = stages.stage_targets(p, 1, ZONES, first)
    assert first == ["i-a1"]
    assert second == ["i-b1", "i-c1"]  # two more: three zones covered


def test_the_last_stage_takes_every_instance_so_the_canary_hosts_drop_their_standby() -> None:
    p = plan([{"hosts": 1}, {"hosts": 3}, {"hosts": "100%"}])
    last = stages.stage_targets(p, 2, ZONES, ["i-a1", "i-b1", "i-c1"])
    assert last == ["i-a1", "i-b1", "i-c1", "i-a2", "i-a3"]


def test_a_stage_counts_only_taken_hosts_still_in_service() -> None:
    # i-a1 took stage 0 and was replaced: the fleet has 0 hosts on the release.
    p = plan([{"hosts": 1}, {"hosts": 2}, {"hosts": "100%"}])
    assert stages.stage_targets(p, 1, ZONES, ["i-gone"]) == ["i-a1", "i-b1"]


def test_a_stage_that_adds_no_host_in_a_small_fleet_sends_to_none() -> None:
    p = plan([{"hosts": 1}, {"hosts": "50%"}, {"hosts": "100%"}])
    one = {"i-a1": "eu-west-1a", "i-b1": "eu-west-1b"}
    assert stages.stage_targets(p, 1, one, ["i-a1"]) == []


def test_a_rollback_skips_stages() -> None:
    p = plan()
    assert stages.staged(p, make_release(5, status=S.DEPLOYING))
    assert not stages.staged(p, make_release(6, status=S.DEPLOYING, rollback_of=5))
    assert not stages.staged((), make_release(5, status=S.DEPLOYING))


def test_a_rollback_asked_staged_goes_through_the_stages() -> None:
    rollback = make_release(6, status=S.DEPLOYING, rollback_of=5).model_copy(update={"staged_rollback": True})
    assert stages.staged(plan(), rollback)
    assert not stages.staged((), rollback)


def test_stage_comments_name_app_release_and_stage() -> None:
    assert stage_comment("web", 12, 0) == "deployer stage 0 web release 12"
    assert parse_stage_comment(stage_comment("web", 12, 3)) == ("web", 12)
    assert parse_stage_comment("deployer web release 12") is None


# ------------------------------------------------------------------ stage_ended
def running(n: int = 5, stage: int = 0, **fields: Any) -> Any:
    return make_release(
        n,
        status=S.DEPLOYING,
        stage=stage,
        stage_state=STAGE_RUNNING,
        stage_command_id="c-stage",
        stage_hosts=["i-a1"],
        **{"replaces": n - 1, **fields},
    )


def test_a_stage_that_succeeded_bakes_until_now_plus_its_bake() -> None:
    r = running()
    d = stages.stage_ended(
        locked(), r, plan()[0], ending(Verdict.SUCCEEDED), target=None, pending=[], token=TOKEN, now=NOW
    )
    (t,) = d.transitions
    assert (t.release, t.status, t.allowed_from) == (5, S.DEPLOYING, frozenset({S.DEPLOYING}))
    assert t.fields == {
        "stage_state": STAGE_BAKING,
        "bake_started_at": NOW.epoch,
        "bake_until": NOW.epoch + 300,
    }
    assert t.expect == {"stage": 0, "stage_state": STAGE_RUNNING}
    assert d.ended is None
    # its notice is owed with it, while release 5 holds the lock
    assert d.change is not None
    assert (d.change.expect_owner, d.change.owner, d.change.desired) == ("web#5", None, None)
    (owed,) = (OutboxEntry.decode(e) for e in d.change.add_outbox)
    assert owed == OutboxEntry(5, "stage_passed", 0)
    assert owed.dedupe_id("web") == "web#5#stage_passed#0"


def test_a_stage_that_failed_fails_the_release_and_rolls_back_to_the_target() -> None:
    r = running(deploy_started_at=T0 - timedelta(seconds=90))
    target = make_release(4)
    d = stages.stage_ended(
        locked(), r, plan()[0], ending(Verdict.FAILED), target=target, pending=[], token=TOKEN, now=NOW
    )
    assert d.transitions[0].status is S.FAILED
    assert d.transitions[0].expect == {"stage": 0, "stage_state": STAGE_RUNNING}
    assert d.transitions[0].reason.startswith("stage 1 failed")
    (rb,) = d.creates
    assert (rb.release, rb.status, rb.rollback_of, rb.replaces, rb.digest) == (
        6,
        S.DEPLOYING,
        5,
        4,
        target.digest,
    )
    assert stages.staged(plan(), rb) is False  # the rollback skips stages
    assert d.change is not None
    assert (d.change.owner, d.change.desired, d.change.expect_last) == ("web#6", 6, 5)
    assert d.change.refuse == r.digest
    kinds = [OutboxEntry.decode(e) for e in d.change.add_outbox]
    assert [(e.release, e.kind, e.rolled_back_to) for e in kinds if e] == [
        (5, "rolled_back", 4),
        (6, "started", None),
    ]
    assert d.ended is not None
    assert (d.ended.followed_by, d.ended.rollback) == (6, True)
    assert d.duration == 90


def test_a_first_deploy_whose_stage_failed_frees_the_app_with_nothing_desired() -> None:
    r = running(1, replaces=None)
    d = stages.stage_ended(
        locked(1), r, plan()[0], ending(Verdict.FAILED), target=None, pending=[], token=TOKEN, now=NOW
    )
    assert not d.creates
    assert d.change is not None
    assert d.change.clear_owner
    assert d.change.clear_desired
    assert [OutboxEntry.decode(e).kind for e in d.change.add_outbox] == ["failed"]  # type: ignore[union-attr]


def test_a_stage_with_no_host_bakes_at_once() -> None:
    r = make_release(5, status=S.DEPLOYING, stage=1, stage_state=STAGE_RUNNING, stage_hosts=["i-a1"])
    d = stages.stage_skipped(plan(), r, NOW)
    (t,) = d.transitions
    assert t.fields["stage_state"] == STAGE_BAKING
    assert t.fields["bake_until"] == NOW.epoch + 120
    assert t.fields["bake_started_at"] == NOW.epoch  # the analysis window starts here
    assert t.expect == {"stage": 1, "stage_state": STAGE_RUNNING, "stage_command_id": None}


# ------------------------------------------------------------------ bake_over / approved
def baking(stage: int, until: int, **fields: Any) -> Any:
    return make_release(
        5, status=S.DEPLOYING, stage=stage, stage_state=STAGE_BAKING, bake_until=until, **fields
    )


def test_a_bake_not_over_decides_nothing() -> None:
    assert stages.bake_over(plan(), baking(0, NOW.epoch + 1), TOKEN, NOW) is None


def test_a_bake_over_starts_the_next_stage_under_this_decisions_claim() -> None:
    d = stages.bake_over(plan(), baking(0, NOW.epoch), TOKEN, NOW)
    assert d is not None
    (t,) = d.transitions
    assert t.fields == {
        "stage": 1,
        "stage_state": STAGE_RUNNING,
        "stage_command_id": None,
        "bake_until": None,
        "send_claim": TOKEN,
        "send_claimed_at": NOW.epoch,
    }
    assert t.expect == {"stage": 0, "stage_state": STAGE_BAKING}


def test_a_bake_over_on_a_stage_that_asks_for_approval_waits_for_it() -> None:
    d = stages.bake_over(plan(), baking(1, NOW.epoch - 5), TOKEN, NOW)
    assert d is not None
    (t,) = d.transitions
    assert t.fields == {"stage_state": STAGE_AWAITING, "bake_until": None}
    assert "deployer continue web" in t.reason
    assert d.change is not None
    assert [OutboxEntry.decode(e) for e in d.change.add_outbox] == [OutboxEntry(5, "stage_awaiting", 1)]


def test_continue_starts_the_next_stage() -> None:
    r = make_release(5, status=S.DEPLOYING, stage=1, stage_state=STAGE_AWAITING)
    (t,) = stages.approved(r, TOKEN, NOW).transitions
    assert (t.fields["stage"], t.fields["stage_state"], t.fields["send_claim"]) == (2, STAGE_RUNNING, TOKEN)
    assert t.expect == {"stage": 1, "stage_state": STAGE_AWAITING}


@pytest.mark.parametrize("state_", [STAGE_RUNNING, STAGE_BAKING, None])
def test_continue_is_refused_unless_awaiting_approval(state_: str | None) -> None:
    r = make_release(5, status=S.DEPLOYING, stage=1, stage_state=state_)
    with pytest.raises(DeployerError, match="not awaiting approval"):
        stages.approved(r, TOKEN, NOW)


def test_a_transitions_expected_fields_become_its_write_condition() -> None:
    store = ReleasesStore(None, "releases")  # type: ignore[arg-type]
    item = store.transition_item(
        "web",
        5,
        S.DEPLOYING,
        "x",
        allowed_from=frozenset({S.DEPLOYING}),
        expect={"stage": 1, "stage_command_id": None},
    )["Update"]
    cond = item["ConditionExpression"]
    names = item["ExpressionAttributeNames"]
    stage_ref = next(k for k, v in names.items() if v == "stage" and k.startswith("#e"))
    cmd_ref = next(k for k, v in names.items() if v == "stage_command_id")
    assert f"{stage_ref} = :" in cond
    assert f"attribute_not_exists({cmd_ref})" in cond
    assert {"N": "1"} in item["ExpressionAttributeValues"].values()


def test_cli_put_of_bad_stages_writes_nothing(deps: Any, tmp_path: Path) -> None:
    # Given a stored app with the worked stages
    raw = {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0"}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**raw, "rollout": {"stages": WORKED}}))
    assert cli.main(["app", "put", "--file", str(good)], deps=deps, out=io.StringIO()) == 0
    before = boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"]
    # When a version whose stages shrink is put
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({**raw, "rollout": {"stages": [{"hosts": "50%"}, {"hosts": "25%"}, {"hosts": "100%"}]}})
    )
    err = io.StringIO()
    code = cli.main(["app", "put", "--file", str(bad)], deps=deps, out=io.StringIO(), err=err)
    # Then it fails as a configuration error naming the stage; the stored config is unchanged
    assert code == 4
    assert "rollout.stages" in err.getvalue()
    assert "1.hosts" in err.getvalue()
    assert boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"] == before
