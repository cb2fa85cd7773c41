"""What goes wrong in production, through the local cloud: duplicate events, a burst of
pushes, the registry down during a deploy, a host that fails, a push whose event was lost,
and bad input. One cloud for the module; each test starts from a converged two-host fleet that
the `api` fixture checks (and boots afresh when the last one is not in that state), so no test
relies on what another one did."""

from __future__ import annotations

import copy
import socket
from dataclasses import dataclass

import pytest

from localcloud.cloud import LocalCloud, Pushed
from tests.e2e.conftest import (
    boot_fleet,
    host_digests,
    release_by_tag,
    retire,
    served_bodies,
    summaries,
    wait_release,
)

pytestmark = pytest.mark.e2e

APP = "api"
HOSTS = 2
TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "SUPERSEDED"}


@dataclass
class Api:
    app: str
    v1: Pushed  # the push the fleet booted from


class Fleets:
    """A two-host fleet for the module, reused while it is clean, booted afresh when not."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.app: str | None = None
        self.apps = 0

    def converged(self) -> Api:
        cloud = self.cloud
        if self.app is None or not self.is_clean(self.app):
            if self.app is not None:
                retire(cloud, self.app)
            self.apps += 1
            self.app = APP if self.apps == 1 else f"{APP}-{self.apps}"
            boot_fleet(cloud, self.app, HOSTS, max_concurrency="100%", max_errors="0", retain=3)
            assert self.is_clean(self.app), f"{self.app} did not boot clean: {cloud.consistency(self.app)}"
        v1 = next(p for p in cloud.pushed if p.repository == self.app and p.tag == "v1")
        return Api(self.app, v1)

    def is_clean(self, app: str) -> bool:
        """Every host running and on the pointer's image, as the launch template says; no
        release in flight; every image in ECR has its release (so a reconciler run finds no
        push left to deploy)."""
        cloud = self.cloud
        assert cloud.fleet is not None
        cloud.settle()
        hosts = cloud.fleet.live(f"{app}-asg")
        if len(hosts) != HOSTS or any(h.state != "running" for h in hosts):
            return False
        pointer = (cloud.pointer(app) or {}).get("digest")
        if not pointer or not converged_on(cloud, app, str(pointer)):
            return False
        releases = cloud.releases(app)
        if any(r.get("status") not in TERMINAL for r in releases):
            return False
        images = cloud.moto.client("ecr").describe_images(repositoryName=app)["imageDetails"]
        return {i["imageDigest"] for i in images} <= {r.get("digest") for r in releases}


@pytest.fixture(scope="module")
def fleets(cloud: LocalCloud) -> Fleets:
    return Fleets(cloud)


@pytest.fixture
def api(fleets: Fleets) -> Api:
    """Two hosts converged on the app's current release; the registry answering."""
    assert fleets.cloud.registry is not None
    fleets.cloud.registry.heal()
    return fleets.converged()


def converged_on(cloud: LocalCloud, app: str, digest: str) -> bool:
    report = cloud.consistency(app)
    return bool(report["consistent"]) and set(host_digests(cloud, app).values()) == {digest}


def test_the_same_push_delivered_twice_yields_one_release(cloud: LocalCloud, api: Api) -> None:
    app = api.app
    # Given a push whose event EventBridge delivers twice (at-least-once delivery)
    pushed = cloud.push(app, "dup", 2, app=app)
    wait_release(cloud, app, "dup", TERMINAL)
    assert cloud.bus is not None
    cloud.bus.put_event(copy.deepcopy(pushed.event))
    cloud.settle()
    # Then there is one release for that digest, and the fleet runs it
    assert [r["release"] for r in cloud.releases(app) if r["digest"] == pushed.digest] != []
    assert len([r for r in cloud.releases(app) if r["digest"] == pushed.digest]) == 1
    assert converged_on(cloud, app, pushed.digest)


def test_a_burst_of_pushes_ends_on_the_newest_and_supersedes_the_rest(cloud: LocalCloud, api: Api) -> None:
    app = api.app
    # Given five images pushed back to back while the first deploys
    assert cloud.bus is not None
    burst = [cloud.push(app, f"burst-{n}", 10 + n, app=app, emit=False) for n in range(5)]
    for pushed in burst:
        cloud.bus.put_event(pushed.event)
    cloud.wait_for(
        lambda: all((release_by_tag(cloud, app, p.tag) or {}).get("status") in TERMINAL for p in burst),
        180,
        "every burst release to end",
    )
    cloud.settle()
    # Then nothing is lost: the newest release is live everywhere, and releases that were still
    # pending when a newer one arrived were superseded. EventBridge does not keep push order: a
    # push whose event arrives after a newer push's is recorded SUPERSEDED on arrival, so the
    # newest release is the highest-numbered one not superseded
    releases = {p.tag: release_by_tag(cloud, app, p.tag) or {} for p in burst}
    newest = max(
        (r for r in releases.values() if r.get("status") != "SUPERSEDED"), key=lambda r: int(r["release"])
    )
    statuses = {tag: r.get("status") for tag, r in releases.items()}
    assert newest["status"] == "SUCCEEDED"
    assert "SUPERSEDED" in set(statuses.values())
    assert set(statuses.values()) <= {"SUCCEEDED", "SUPERSEDED"}
    assert converged_on(cloud, app, str(newest["digest"]))
    assert cloud.consistency(app)["pointer_release"] == newest["release"]


def test_a_registry_down_during_a_deploy_fails_the_release_and_hosts_keep_serving(
    cloud: LocalCloud, api: Api
) -> None:
    app = api.app
    # Given the fleet on one release, and a new image in the registry
    before = (cloud.pointer(app) or {})["digest"]
    bodies_before = served_bodies(cloud, app)
    assert cloud.registry is not None
    pushed = cloud.push(app, "while-down", 20, app=app, emit=False)
    # When the registry answers 503 to every pull during the deploy
    served_before = cloud.registry.failures_served
    cloud.registry.fail_always(503)
    try:
        assert cloud.bus is not None
        cloud.bus.put_event(pushed.event)
        rel = wait_release(cloud, app, "while-down", {"FAILED", "ROLLED_BACK"}, timeout=180)
        cloud.settle()
    finally:
        cloud.registry.heal()
    # Then the agents retried, gave up with the pull class, and nothing changed on the hosts
    sums = summaries(cloud, rel["command_id"])
    assert {s["failure_class"] for s in sums.values()} == {"pull"}
    assert all(s["pull_attempts"] > 1 for s in sums.values())
    assert cloud.registry.failures_served > served_before
    assert served_bodies(cloud, app) == bodies_before
    assert converged_on(cloud, app, before)


def test_a_host_that_fails_is_reported_and_the_release_rolled_back(cloud: LocalCloud, api: Api) -> None:
    app = api.app
    # Given one host whose spare colour port is taken by another process
    assert cloud.fleet is not None
    before = (cloud.pointer(app) or {})["digest"]
    sick = cloud.fleet.live(f"{app}-asg")[0]
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
        cloud.push(app, "sick-host", 30, app=app)
        rel = wait_release(cloud, app, "sick-host", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=120)
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
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(app, int(rel["release"]))}
    assert sick.instance_id in outcomes
    assert converged_on(cloud, app, before)


def test_a_host_ssm_cannot_reach_does_not_fail_the_release_and_gets_it_from_the_reconciler(
    cloud: LocalCloud, api: Api
) -> None:
    app = api.app
    # Given one host SSM cannot deliver to (as an instance scaled in after SSM resolved the
    # command's targets): the SSM stand-in answers Undeliverable for it
    assert cloud.fleet is not None
    assert cloud.ssm is not None
    away = cloud.fleet.live(f"{app}-asg")[0]
    away.state = "terminated"
    try:
        # When a good release is pushed (MaxErrors 0)
        pushed = cloud.push(app, "half-reached", 35, app=app)
        rel = wait_release(cloud, app, "half-reached", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=120)
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
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(app, int(rel["release"]))}
    assert outcomes[away.instance_id]["failure_class"] == "unreached"
    newer = [r for r in cloud.releases(app) if int(r["release"]) > int(rel["release"])]
    assert newer == []
    # And when the reconciler runs, that host gets the release too
    cloud.reconcile()
    cloud.settle()
    cloud.wait_for(lambda: converged_on(cloud, app, pushed.digest), 120, "the unreached host to converge")


def test_a_push_whose_event_was_lost_is_deployed_by_the_reconciler(cloud: LocalCloud, api: Api) -> None:
    app = api.app
    # Given a push whose ECR event never arrived
    pushed = cloud.push(app, "missed", 40, app=app, emit=False)
    cloud.settle()
    assert release_by_tag(cloud, app, "missed") is None
    # When the reconciler's schedule fires
    cloud.reconcile()
    rel = wait_release(cloud, app, "missed", {"SUCCEEDED", "FAILED", "ROLLED_BACK"}, timeout=180)
    cloud.settle()
    # Then the missed image is deployed like a push
    assert rel["status"] == "SUCCEEDED"
    assert converged_on(cloud, app, pushed.digest)
    assert set(served_bodies(cloud, app).values()) == {f"{app} release 40\n"}


def test_an_event_with_a_bad_digest_changes_nothing(cloud: LocalCloud, api: Api) -> None:
    app = api.app
    # Given a push event whose digest is not a sha256 digest
    releases_before = cloud.releases(app)
    pointer_before = cloud.pointer(app)
    assert cloud.bus is not None
    event = copy.deepcopy(api.v1.event)
    event["id"] = "bad-digest-event"
    event["detail"]["image-digest"] = "sha256:$(reboot)"
    event["detail"]["image-tag"] = "evil;tag"
    deliveries = cloud.bus.put_event(event)
    cloud.settle()
    # Then the handler refused it and no state moved
    assert [d.function for d in deliveries] == ["OnImagePushFunction"]
    assert cloud.releases(app) == releases_before
    assert cloud.pointer(app) == pointer_before
