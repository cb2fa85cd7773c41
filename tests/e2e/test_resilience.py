"""What goes wrong in production, through the local cloud: duplicate events, a burst of
pushes, the registry down during a deploy, a host that fails, a push whose event was lost,
and bad input. One cloud, two hosts; each test leaves the fleet converged for the next."""

from __future__ import annotations

import copy
import socket

import pytest

from localcloud.cloud import LocalCloud
from tests.e2e.conftest import (
    boot_fleet,
    host_digests,
    release_by_tag,
    served_bodies,
    summaries,
    wait_release,
)

pytestmark = pytest.mark.e2e

APP = "api"
TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "SUPERSEDED"}


@pytest.fixture(scope="module")
def fleet(cloud: LocalCloud) -> dict:
    v1 = boot_fleet(cloud, APP, 2, max_concurrency="100%", max_errors="0", retain=3)
    return {"v1": v1}


def converged_on(cloud: LocalCloud, digest: str) -> bool:
    report = cloud.consistency(APP)
    return bool(report["consistent"]) and set(host_digests(cloud, APP).values()) == {digest}


def test_the_same_push_delivered_twice_yields_one_release(cloud: LocalCloud, fleet: dict) -> None:
    # Given a push whose event EventBridge delivers twice (at-least-once delivery)
    pushed = cloud.push(APP, "dup", 2, app=APP)
    wait_release(cloud, APP, "dup", TERMINAL)
    assert cloud.bus is not None
    cloud.bus.put_event(copy.deepcopy(pushed.event))
    cloud.settle()
    # Then there is one release for that digest, and the fleet runs it
    assert [r["release"] for r in cloud.releases(APP) if r["digest"] == pushed.digest] != []
    assert len([r for r in cloud.releases(APP) if r["digest"] == pushed.digest]) == 1
    assert converged_on(cloud, pushed.digest)


def test_a_burst_of_pushes_ends_on_the_newest_and_supersedes_the_rest(cloud: LocalCloud, fleet: dict) -> None:
    # Given five images pushed back to back while the first deploys
    assert cloud.bus is not None
    burst = [cloud.push(APP, f"burst-{n}", 10 + n, app=APP, emit=False) for n in range(5)]
    for pushed in burst:
        cloud.bus.put_event(pushed.event)
    cloud.wait_for(
        lambda: all((release_by_tag(cloud, APP, p.tag) or {}).get("status") in TERMINAL for p in burst),
        180,
        "every burst release to end",
    )
    cloud.settle()
    # Then nothing is lost: the newest release (EventBridge does not keep push order) is live
    # everywhere, and releases that were still pending when a newer one arrived were superseded
    releases = {p.tag: release_by_tag(cloud, APP, p.tag) or {} for p in burst}
    newest = max(releases.values(), key=lambda r: int(r["release"]))
    statuses = {tag: r.get("status") for tag, r in releases.items()}
    assert newest["status"] == "SUCCEEDED"
    assert "SUPERSEDED" in set(statuses.values())
    assert set(statuses.values()) <= {"SUCCEEDED", "SUPERSEDED"}
    assert converged_on(cloud, str(newest["digest"]))
    assert cloud.consistency(APP)["pointer_release"] == newest["release"]


def test_a_registry_down_during_a_deploy_fails_the_release_and_hosts_keep_serving(
    cloud: LocalCloud, fleet: dict
) -> None:
    # Given the fleet on one release, and a new image in the registry
    before = (cloud.pointer(APP) or {})["digest"]
    bodies_before = served_bodies(cloud, APP)
    assert cloud.registry is not None
    pushed = cloud.push(APP, "while-down", 20, app=APP, emit=False)
    # When the registry answers 503 to every pull during the deploy
    cloud.registry.fail_always(503)
    try:
        assert cloud.bus is not None
        cloud.bus.put_event(pushed.event)
        rel = wait_release(cloud, APP, "while-down", {"FAILED", "ROLLED_BACK"}, timeout=180)
        cloud.settle()
    finally:
        cloud.registry.heal()
    # Then the agents retried, gave up with the pull class, and nothing changed on the hosts
    sums = summaries(cloud, rel["command_id"])
    assert {s["failure_class"] for s in sums.values()} == {"pull"}
    assert all(s["pull_attempts"] > 1 for s in sums.values())
    assert cloud.registry.failures_served > 0
    assert served_bodies(cloud, APP) == bodies_before
    assert converged_on(cloud, before)


def test_a_host_that_fails_is_reported_and_the_release_rolled_back(cloud: LocalCloud, fleet: dict) -> None:
    # Given one host whose spare colour port is taken by another process
    assert cloud.fleet is not None
    before = (cloud.pointer(APP) or {})["digest"]
    sick = cloud.fleet.live(f"{APP}-asg")[0]
    blockers = []
    for key in ("blue_port", "green_port"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # the old colour's port may still have TIME_WAIT connections; a listener is what blocks
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(sick.sandbox.config[key])))
            s.listen(1)
            blockers.append(s)
        except OSError:
            s.close()  # the live colour: in use by the running app
    try:
        # When a good release is pushed
        cloud.push(APP, "sick-host", 30, app=APP)
        rel = wait_release(cloud, APP, "sick-host", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=120)
        cloud.settle()
    finally:
        for s in blockers:
            s.close()
    # Then that host's outcome names the failure, and every host is back on the previous image
    sums = summaries(cloud, rel["command_id"])
    assert len(blockers) == 1
    assert rel["status"] in {"FAILED", "ROLLED_BACK"}, sums
    assert sums[sick.instance_id]["failure_class"] in {"start", "health"}
    assert sums[sick.instance_id]["exit_code"] in {5, 6}
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(APP, int(rel["release"]))}
    assert sick.instance_id in outcomes
    assert converged_on(cloud, before)


def test_a_host_ssm_cannot_reach_does_not_fail_the_release_and_gets_it_from_the_reconciler(
    cloud: LocalCloud, fleet: dict
) -> None:
    # Given one host SSM cannot deliver to (as an instance scaled in after SSM resolved the
    # command's targets): the SSM stand-in answers Undeliverable for it
    assert cloud.fleet is not None
    assert cloud.ssm is not None
    away = cloud.fleet.live(f"{APP}-asg")[0]
    away.state = "terminated"
    try:
        # When a good release is pushed (MaxErrors 0)
        pushed = cloud.push(APP, "half-reached", 35, app=APP)
        rel = wait_release(cloud, APP, "half-reached", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=120)
        cloud.settle()
    finally:
        away.state = "running"
    # Then SSM's answer is Incomplete with no errors (the coarse Failed in its events), and the
    # release SUCCEEDED on the host it reached, with no rollback; the other is recorded unreached
    run = cloud.ssm.runs[rel["command_id"]]
    assert run.status == "Incomplete"
    assert {h.instance_id: h.status for h in run.hosts}[away.instance_id] == "Undeliverable"
    assert rel["status"] == "SUCCEEDED", rel
    assert (int(rel["hosts_ok"]), int(rel["hosts_failed"])) == (1, 0)
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(APP, int(rel["release"]))}
    assert outcomes[away.instance_id]["failure_class"] == "unreached"
    newer = [r for r in cloud.releases(APP) if int(r["release"]) > int(rel["release"])]
    assert newer == []
    # And when the reconciler runs, that host gets the release too
    cloud.reconcile()
    cloud.settle()
    cloud.wait_for(lambda: converged_on(cloud, pushed.digest), 120, "the unreached host to converge")


def test_a_push_whose_event_was_lost_is_deployed_by_the_reconciler(cloud: LocalCloud, fleet: dict) -> None:
    # Given a push whose ECR event never arrived
    pushed = cloud.push(APP, "missed", 40, app=APP, emit=False)
    cloud.settle()
    assert release_by_tag(cloud, APP, "missed") is None
    # When the reconciler's schedule fires
    cloud.reconcile()
    rel = wait_release(cloud, APP, "missed", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=180)
    cloud.settle()
    # Then the missed image is deployed like a push
    assert rel["status"] == "SUCCEEDED"
    assert converged_on(cloud, pushed.digest)
    assert set(served_bodies(cloud, APP).values()) == {"api release 40\n"}


def test_an_event_with_a_bad_digest_changes_nothing(cloud: LocalCloud, fleet: dict) -> None:
    # Given a push event whose digest is not a sha256 digest
    releases_before = cloud.releases(APP)
    pointer_before = cloud.pointer(APP)
    assert cloud.bus is not None
    event = copy.deepcopy(cloud.pushed[-1].event)
    event["id"] = "bad-digest-event"
    event["detail"]["image-digest"] = "sha256:$(reboot)"
    event["detail"]["image-tag"] = "evil;tag"
    deliveries = cloud.bus.put_event(event)
    cloud.settle()
    # Then the handler refused it and no state moved
    assert [d.function for d in deliveries] == ["OnImagePushFunction"]
    assert cloud.releases(APP) == releases_before
    assert cloud.pointer(APP) == pointer_before
