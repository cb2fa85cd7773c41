"""The demo's story, end to end: real containers, real nginx, a real registry, the real
handlers, user data and swap document from template.yaml. Steps run in order on one cloud."""

from __future__ import annotations

import time

import pytest

from localcloud.cloud import LocalCloud
from localcloud.load import LoadGenerator
from tests.e2e.conftest import (
    boot_fleet,
    host_digests,
    release_by_tag,
    served_bodies,
    summaries,
    wait_release,
)

pytestmark = pytest.mark.e2e

APP = "web"
state: dict[str, dict] = {}


def test_a_fleet_of_three_boots_on_v1_from_user_data(cloud: LocalCloud) -> None:
    # Given an app whose group is empty, When v1 is pushed and the group scales to 3
    v1 = boot_fleet(cloud, APP, 3, max_concurrency="1", max_errors="0", retain=3)
    state["v1"] = v1
    # Then every host booted from the launch template's user data and serves v1
    assert cloud.fleet is not None
    hosts = cloud.fleet.live(f"{APP}-asg")
    assert len(hosts) == 3
    assert all(h.boot is not None and h.boot.exit_code == 0 for h in hosts)
    # (the launch hook's swap races the boot for the host lock; whichever runs second no-ops)
    boots = [h.boot_summary() or {} for h in hosts]
    assert all(
        b.get("outcome") in {"live", "already_live"} and b.get("digest") == v1["digest"] for b in boots
    )
    assert all(v1["digest"] in h.user_data for h in hosts)
    assert set(served_bodies(cloud, APP).values()) == {"web release 1\n"}
    assert cloud.consistency(APP)["consistent"]


def test_pushing_v2_rolls_every_host_with_no_failed_request(cloud: LocalCloud) -> None:
    # Given keep-alive load on every host's proxy
    assert cloud.fleet is not None
    gens = [
        LoadGenerator("127.0.0.1", h.sandbox.listen_port, rate=100, connections=4, max_seconds=120).start()
        for h in cloud.fleet.live(f"{APP}-asg")
    ]
    time.sleep(0.5)
    # When v2 is pushed
    cloud.push(APP, "v2", 2)
    v2 = wait_release(cloud, APP, "v2", {"SUCCEEDED", "FAILED", "ROLLED_BACK"})
    cloud.settle()
    results = [g.stop() for g in gens]
    state["v2"] = v2
    # Then the release succeeded, every host serves v2, and no request failed
    assert v2["status"] == "SUCCEEDED"
    assert set(served_bodies(cloud, APP).values()) == {"web release 2\n"}
    assert sum(r.sent for r in results) > 500
    assert sum(r.failed for r in results) == 0, [dict(r.errors) for r in results]
    assert all(r.bodies.keys() <= {"web release 1\n", "web release 2\n"} for r in results)


def test_a_release_that_fails_its_health_check_is_rolled_back_with_the_reason(cloud: LocalCloud) -> None:
    # When v3, whose health endpoint is missing, is pushed
    cloud.push(APP, "v3", 3, kind="broken")
    v3 = wait_release(cloud, APP, "v3", {"FAILED", "ROLLED_BACK"})
    cloud.settle()
    v3 = release_by_tag(cloud, APP, "v3") or v3
    # Then the first host failed the health gate and said why, with the app's last log line
    run = cloud.ssm.runs[v3["command_id"]]  # type: ignore[union-attr]
    failed = [h for h in run.hosts if h.status == "Failed"]
    assert len(failed) == 1
    summary = summaries(cloud, v3["command_id"])[failed[0].instance_id]
    assert summary["failure_class"] == "health"
    assert any("health endpoint is missing" in line for line in summary["log_tail"])
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(APP, int(v3["release"]))}
    assert "health" in str(outcomes[failed[0].instance_id])
    # and the pointer, the group and every host are back on v2's image
    pointer = cloud.pointer(APP) or {}
    assert pointer["digest"] == state["v2"]["digest"]
    assert set(host_digests(cloud, APP).values()) == {state["v2"]["digest"]}
    assert cloud.consistency(APP)["consistent"]


def test_an_instance_launched_during_a_deploy_ends_on_the_newest_release(cloud: LocalCloud) -> None:
    # When v4 is pushed and the group scales out to 4 while it deploys
    cloud.push(APP, "v4", 4)
    new = cloud.scale(APP, 4)
    v4 = wait_release(cloud, APP, "v4", {"SUCCEEDED", "FAILED", "ROLLED_BACK"})
    assert cloud.fleet is not None
    cloud.fleet.wait_settled(240)
    cloud.settle()
    state["v4"] = v4
    # Then the launch hook was completed with CONTINUE and the new host serves v4 like the rest
    assert v4["status"] == "SUCCEEDED"
    assert [
        c["LifecycleActionResult"]
        for c in cloud.fleet.lifecycle_calls
        if c["InstanceId"] == new[0].instance_id
    ] == ["CONTINUE"], [
        (h.status, h.stdout[-600:], h.stderr[-1500:])
        for r in cloud.commands().values()
        for h in r.hosts
        if h.instance_id == new[0].instance_id
    ]
    assert len(new) == 1
    assert host_digests(cloud, APP)[new[0].instance_id] == v4["digest"]
    assert set(served_bodies(cloud, APP).values()) == {"web release 4\n"}
    assert cloud.consistency(APP)["consistent"]


def test_rollback_to_v1_needs_no_registry(cloud: LocalCloud) -> None:
    # Given the registry is down (every request answers 503)
    assert cloud.registry is not None
    cloud.registry.fail_always(503)
    try:
        # When the operator invokes the rollback function with a tag
        answer = cloud.invoke("RollbackFunction", {"app": APP, "to": "v1", "reason": "e2e"})
        cloud.wait_for(
            lambda: set(host_digests(cloud, APP).values()) == {state["v1"]["digest"]}, 120, "every host on v1"
        )
        cloud.settle()
    finally:
        cloud.registry.heal()
    # Then every host serves v1 again from the image kept on the machine, without one pull
    assert answer["status"] == "ok"
    assert set(served_bodies(cloud, APP).values()) == {"web release 1\n"}
    sums = summaries(cloud, answer["command_id"])
    assert len(sums) == 4
    assert {s["outcome"] for s in sums.values()} == {"live"}
    assert {s["pull_attempts"] for s in sums.values()} == {0}


def test_after_every_step_pointer_group_and_hosts_agree(cloud: LocalCloud) -> None:
    # Then the invariant holds: pointer = launch-template version's release = every host's
    report = cloud.consistency(APP)
    assert report["consistent"], report
    assert (cloud.pointer(APP) or {})["digest"] == state["v1"]["digest"]
    # and nothing was dead-lettered along the way
    assert cloud.bus is not None
    assert [d.function for d in cloud.bus.dead_letters] == []
