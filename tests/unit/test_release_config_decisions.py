"""The pinned config in the controller's decisions, without any AWS stand-in: admission records
the config it is given (or a FAILED release when a secret could not be pinned), and every
rollback release carries its target's config unchanged, whatever the current versions are."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from deployer.adapters.app_state import AppStateRecord
from deployer.adapters.command_results import CommandCounts
from deployer.controller import Ending, Now, decisions
from deployer.metrics_names import DeployMetric
from deployer.models.config import AppConfig
from deployer.models.records import Release, ReleaseSource, ReleaseStatus
from deployer.models.release_config import PinnedSecret, ReleaseConfig
from deployer.models.ssm_status import SsmStatus
from deployer.verdicts import Verdict, may_roll_back_to

from tests.conftest import WEB_CONFIG, digest_of, make_release

pytestmark = pytest.mark.unit

S = ReleaseStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = Now(epoch=int(T0.timestamp()), at=T0)
TOKEN = "t" * 32

OLD = ReleaseConfig(
    environment={"LOG_LEVEL": "info"},
    secrets=(PinnedSecret(var="API_KEY", source="secretsmanager", id="web/api-key", version="a" * 32),),
)
NEW = ReleaseConfig(
    environment={"LOG_LEVEL": "debug"},
    secrets=(PinnedSecret(var="API_KEY", source="secretsmanager", id="web/api-key", version="b" * 32),),
)


def config() -> AppConfig:
    return AppConfig.parse({**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0"})


def release(n: int, status: ReleaseStatus, pinned: ReleaseConfig, **fields: Any) -> Release:
    return make_release(n, status=status, **fields).model_copy(update={"config": pinned})


def admit(st: AppStateRecord, **kw: Any) -> decisions.Decision | None:
    return decisions.admission(
        config(),
        st,
        image=f"r/team/web@{digest_of(9)}",
        digest=digest_of(9),
        tag="v9",
        source=ReleaseSource.PUSH,
        reason="push",
        token=TOKEN,
        now=NOW,
        marker="marker-9",
        pushed_at=T0,
        event_id="event-9",
        **kw,
    )


def test_a_new_release_records_the_config_it_was_admitted_with() -> None:
    decision = admit(AppStateRecord(app="web", last_release=4, desired=4), config_pin=NEW)
    assert decision is not None
    (new,) = decision.creates
    assert new.config == NEW
    assert new.status is S.DEPLOYING


def test_a_push_whose_secret_could_not_be_pinned_is_recorded_failed_and_starts_nothing() -> None:
    # Given a free app, and a secret that could not be described
    st = AppStateRecord(app="web", last_release=4, desired=4)
    why = "secret API_KEY (secretsmanager:web/api-key) cannot be described: ResourceNotFoundException"

    # When the push is admitted
    decision = admit(st, config_pin=None, unresolved=why)

    # Then release 5 is recorded FAILED with why, under the push's marker, and nothing starts
    assert decision is not None
    (new,) = decision.creates
    assert (new.release, new.status, new.finished_at) == (5, S.FAILED, T0)
    assert new.status_reason == f"not deployed: {why}"
    assert new.config == ReleaseConfig()
    assert decision.started is None
    assert decision.admission == ("marker-9", 5)
    change = decision.change
    assert change is not None
    assert (change.owner, change.desired, change.last_release) == (None, None, 5)
    assert change.add_outbox == ["5:failed"]
    assert decision.counts == [(DeployMetric.DEPLOY_FAILED, 1)]


def test_an_automatic_rollback_carries_its_targets_config_unchanged() -> None:
    # Given release 5 (new versions) failing, and release 3 (old versions) the target
    failed = release(5, S.DEPLOYING, NEW, replaces=3)
    target = release(3, S.SUCCEEDED, OLD)
    st = AppStateRecord(app="web", last_release=5, desired=5, lock_owner="web#5")
    counts = CommandCounts(command_id="c", status=SsmStatus.FAILED.value, target_count=3, completed_count=3)

    # When release 5 ends FAILED
    decision = decisions.end(
        st,
        failed,
        Ending(SsmStatus.FAILED, counts, None, Verdict.FAILED, "the fleet's verdict"),
        auto_rollback=True,
        pending=[],
        target=target,
        rolled_back=None,
        token=TOKEN,
        now=NOW,
    )

    # Then the rollback release runs release 3's exact config
    (rollback,) = decision.creates
    assert (rollback.release, rollback.digest) == (6, target.digest)
    assert rollback.config == OLD


def test_a_cancel_rolls_back_to_its_targets_config_unchanged() -> None:
    cancelled = release(5, S.DEPLOYING, NEW, replaces=4)
    target = release(4, S.SUCCEEDED, OLD)
    st = AppStateRecord(app="web", last_release=5, desired=5, lock_owner="web#5")
    decision = decisions.cancel(st, cancelled, target, "cancelled by an operator", TOKEN, NOW)
    (rollback,) = decision.creates
    assert rollback.config == OLD


def test_a_failed_config_only_release_rolls_back_to_the_same_image_with_the_config_before() -> None:
    # Given config-only release 5 (release 4's image, new config) failing
    failed = release(5, S.DEPLOYING, NEW, replaces=4, source=ReleaseSource.CONFIG, digest=digest_of(4))
    same_image = release(4, S.SUCCEEDED, OLD)
    identical = release(3, S.SUCCEEDED, NEW, digest=digest_of(4))
    st = AppStateRecord(app="web", last_release=5, desired=5, lock_owner="web#5")
    counts = CommandCounts(command_id="c", status=SsmStatus.FAILED.value, target_count=3, completed_count=3)

    # Then release 4 (same image, other config) is a rollback target, and one with the same image
    # and config is not
    assert may_roll_back_to(same_image, failed)
    assert not may_roll_back_to(identical, failed)

    # When it ends FAILED with release 4 as the target
    decision = decisions.end(
        st,
        failed,
        Ending(SsmStatus.FAILED, counts, None, Verdict.FAILED, "the fleet's verdict"),
        auto_rollback=True,
        pending=[],
        target=same_image,
        rolled_back=None,
        token=TOKEN,
        now=NOW,
    )

    # Then the rollback runs release 4's config, and the running image is not refused
    (rollback,) = decision.creates
    assert (rollback.digest, rollback.config) == (digest_of(4), OLD)
    assert decision.change is not None
    assert decision.change.refuse is None
