"""A deploy's completion: SSM status events decide the release's fate."""

from __future__ import annotations

import pytest
from deployer.models.records import ReleaseStatus

from tests.lifecycle.conftest import World, notifications

pytestmark = pytest.mark.unit


def test_a_deploy_every_host_reports_live_succeeds_and_unlocks(world: World) -> None:
    # Given a deploy of release 1 in progress on three hosts
    release = world.push(1, "v1")
    assert release.status is ReleaseStatus.DEPLOYING
    # When every host reports live and the command succeeds
    answer = world.complete(release)
    # Then the release SUCCEEDED, the lock is free, and pointer, group and hosts agree
    assert answer["status"] == "ok"
    assert answer["action"] == "finished"
    done = world.release(release.release)
    assert done.status is ReleaseStatus.SUCCEEDED
    assert done.hosts_ok == 3
    assert done.hosts_failed == 0
    assert world.core.state.get("web").lock_owner is None
    world.assert_agree()
    outcomes = world.core.host_outcomes.for_release(done.key)
    assert sorted(o.instance_id for o in outcomes) == world.instances
    assert all(o.summary and o.summary["outcome"] == "live" for o in outcomes)
    messages = notifications(world)
    assert [m["event"] for m in messages] == ["deploy_succeeded"]
    assert messages[0]["hosts_ok"] == 3
    assert "Deployed web release 1" in messages[0]["text"]
