"""The demo's story, end to end: real containers, real nginx, a real registry, the real
handlers, user data and swap document from template.yaml.

The story is five steps on one app (boot on v1, v2, broken v3, v4 while scaling out, rollback
to v1); each test is one step. A test does not rely on the one before it: it asks the `story`
fixture for the state its step starts from (`story.at(k)`: steps 1..k done, nothing else). The
fixture reads that state back from the cloud; when the current app is exactly there (the tests
ran in file order and passed) it is used as is, when it is short of it the missing steps are
played, and otherwise (another order, a failed test) a fresh app plays steps 1..k. The local
cloud itself (moto, the stack, the Lambda workers, the registry) is shared by the module."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localcloud.cloud import LocalCloud
from localcloud.hosts.load import LoadGenerator
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

APP = "web"
CONFIG: dict[str, Any] = {"max_concurrency": "1", "max_errors": "0", "retain": 3}
ENDED = {"SUCCEEDED", "FAILED", "ROLLED_BACK"}
# After step k: the tags pushed so far, the live host count, the tag whose image the pointer names.
AFTER: dict[int, tuple[tuple[str, ...], int, str]] = {
    1: (("v1",), 3, "v1"),
    2: (("v1", "v2"), 3, "v2"),
    3: (("v1", "v2", "v3"), 3, "v2"),
    4: (("v1", "v2", "v3", "v4"), 4, "v4"),
    5: (("v1", "v2", "v3", "v4"), 4, "v1"),
}


# -------------------------------------------------------------------------- the steps
def boot(cloud: LocalCloud, app: str) -> dict[str, Any]:
    """1. The app with an empty group; v1 pushed; the group scales to 3 (hosts boot v1)."""
    return boot_fleet(cloud, app, 3, **CONFIG)


def push_v2(cloud: LocalCloud, app: str) -> dict[str, Any]:
    """2. v2 pushed: a good release."""
    cloud.push(app, "v2", 2, app=app)
    v2 = wait_release(cloud, app, "v2", ENDED)
    cloud.settle()
    return v2


def push_broken_v3(cloud: LocalCloud, app: str) -> dict[str, Any]:
    """3. v3, whose health endpoint is missing, pushed: rolled back."""
    cloud.push(app, "v3", 3, kind="broken", app=app)
    wait_release(cloud, app, "v3", {"FAILED", "ROLLED_BACK"})
    cloud.settle()
    v3 = release_by_tag(cloud, app, "v3")
    assert v3 is not None
    return v3


def push_v4_while_scaling_to_4(cloud: LocalCloud, app: str) -> tuple[dict[str, Any], list[Any]]:
    """4. v4 pushed, and the group scales out to 4 while it deploys."""
    cloud.push(app, "v4", 4, app=app)
    new = cloud.scale(app, 4)
    v4 = wait_release(cloud, app, "v4", ENDED)
    assert cloud.fleet is not None
    cloud.fleet.wait_settled(240)
    cloud.settle()
    return v4, new


def roll_back_to_v1(cloud: LocalCloud, app: str) -> dict[str, Any]:
    """5. The operator invokes the rollback function with a tag."""
    v1 = release_by_tag(cloud, app, "v1")
    assert v1 is not None
    answer: dict[str, Any] = cloud.invoke("RollbackFunction", {"app": app, "to": "v1", "reason": "e2e"})
    cloud.wait_for(lambda: set(host_digests(cloud, app).values()) == {v1["digest"]}, 120, "every host on v1")
    cloud.settle()
    return answer


STEPS = {1: boot, 2: push_v2, 3: push_broken_v3, 4: push_v4_while_scaling_to_4, 5: roll_back_to_v1}


# -------------------------------------------------------------------------- the fixture
class Story:
    """Hands each test an app whose story is at the step the test starts from."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.app: str | None = None
        self.apps = 0
        self.dead_letters_before: dict[str, int] = {}

    def at(self, step: int) -> str:
        """An app with exactly steps 1..`step` done, read back from the cloud; the registry up."""
        assert self.cloud.registry is not None
        self.cloud.registry.heal()
        reached = self.reached() if self.app is not None else None
        if reached is None or reached > step or (step == 0 and self.app is not None):
            self.app, reached = self._fresh(), 0
        assert self.app is not None
        for k in range(reached + 1, step + 1):
            STEPS[k](self.cloud, self.app)
            if self.reached() != k:
                raise AssertionError(f"setting up {self.app}: step {k} ({STEPS[k].__name__}) did not end "
                                     f"in its state: {self.cloud.consistency(self.app)}")
        return self.app

    def dead_letters(self, app: str) -> list[str]:
        """Functions whose deliveries were dead-lettered since `app` was started."""
        assert self.cloud.bus is not None
        return [d.function for d in self.cloud.bus.dead_letters[self.dead_letters_before[app]:]]

    def reached(self) -> int | None:
        """The step the current app is at, or None when its state is none of the story's."""
        cloud, app = self.cloud, self.app
        assert app is not None
        assert cloud.fleet is not None
        cloud.settle()
        pushes = sorted((r for r in cloud.releases(app) if r.get("source", "push") == "push"),
                        key=lambda r: int(r["release"]))
        hosts = cloud.fleet.live(f"{app}-asg")
        if not pushes or any(h.state != "running" for h in hosts) or not cloud.consistency(app)["consistent"]:
            return None
        tags = tuple(r.get("tag") for r in pushes)
        digest = {r.get("tag"): r.get("digest") for r in pushes}
        pointer = (cloud.pointer(app) or {}).get("digest")
        for k, (wanted, count, on) in AFTER.items():
            if tags == wanted and len(hosts) == count and pointer == digest[on]:
                return k
        return None

    def _fresh(self) -> str:
        """A new app name; the previous app's hosts are terminated."""
        if self.app is not None:
            retire(self.cloud, self.app)
        self.apps += 1
        app = APP if self.apps == 1 else f"{APP}-{self.apps}"
        assert self.cloud.bus is not None
        self.dead_letters_before[app] = len(self.cloud.bus.dead_letters)
        return app


@pytest.fixture(scope="module")
def story(cloud: LocalCloud) -> Story:
    return Story(cloud)


# -------------------------------------------------------------------------- the tests
def test_a_fleet_of_three_boots_on_v1_from_user_data(cloud: LocalCloud, story: Story) -> None:
    # Given an app whose group is empty
    app = story.at(0)
    # When v1 is pushed and the group scales to 3
    v1 = boot(cloud, app)
    # Then every host booted from the launch template's user data and serves v1
    assert cloud.fleet is not None
    hosts = cloud.fleet.live(f"{app}-asg")
    assert len(hosts) == 3
    assert all(h.boot is not None and h.boot.exit_code == 0 for h in hosts)
    # (the launch hook's swap races the boot for the host lock; whichever runs second no-ops)
    boots = [h.boot_summary() or {} for h in hosts]
    assert all(
        b.get("outcome") in {"live", "already_live"} and b.get("digest") == v1["digest"] for b in boots
    )
    assert all(v1["digest"] in h.user_data for h in hosts)
    assert set(served_bodies(cloud, app).values()) == {f"{app} release 1\n"}
    assert cloud.consistency(app)["consistent"]


def test_pushing_v2_rolls_every_host_with_no_failed_request(cloud: LocalCloud, story: Story) -> None:
    # Given three hosts on v1, with keep-alive load on every host's proxy
    app = story.at(1)
    assert cloud.fleet is not None
    gens = [
        LoadGenerator("127.0.0.1", h.sandbox.listen_port, rate=100, connections=4, max_seconds=120).start()
        for h in cloud.fleet.live(f"{app}-asg")
    ]
    time.sleep(0.5)
    # When v2 is pushed
    try:
        v2 = push_v2(cloud, app)
    finally:
        results = [g.stop() for g in gens]
    # Then the release succeeded, every host serves v2, and no request failed
    assert v2["status"] == "SUCCEEDED"
    assert set(served_bodies(cloud, app).values()) == {f"{app} release 2\n"}
    assert sum(r.sent for r in results) > 500
    assert sum(r.failed for r in results) == 0, [dict(r.errors) for r in results]
    assert all(r.bodies.keys() <= {f"{app} release 1\n", f"{app} release 2\n"} for r in results)


def test_a_release_that_fails_its_health_check_is_rolled_back_with_the_reason(
    cloud: LocalCloud, story: Story
) -> None:
    # Given three hosts on v2
    app = story.at(2)
    v2 = release_by_tag(cloud, app, "v2")
    assert v2 is not None
    # When v3, whose health endpoint is missing, is pushed
    v3 = push_broken_v3(cloud, app)
    # Then the first host failed the health gate and said why, with the app's last log line
    run = cloud.ssm.runs[v3["command_id"]]  # type: ignore[union-attr]
    failed = [h for h in run.hosts if h.status == "Failed"]
    assert len(failed) == 1
    summary = summaries(cloud, v3["command_id"])[failed[0].instance_id]
    assert summary["failure_class"] == "health"
    assert any("health endpoint is missing" in line for line in summary["log_tail"])
    outcomes = {o["instance_id"]: o for o in cloud.host_outcomes(app, int(v3["release"]))}
    assert "health" in str(outcomes[failed[0].instance_id])
    # and the pointer, the group and every host are back on v2's image
    pointer = cloud.pointer(app) or {}
    assert pointer["digest"] == v2["digest"]
    assert set(host_digests(cloud, app).values()) == {v2["digest"]}
    assert cloud.consistency(app)["consistent"]


def test_an_instance_launched_during_a_deploy_ends_on_the_newest_release(
    cloud: LocalCloud, story: Story
) -> None:
    # Given three hosts on v2 (v3 was rolled back)
    app = story.at(3)
    # When v4 is pushed and the group scales out to 4 while it deploys
    v4, new = push_v4_while_scaling_to_4(cloud, app)
    assert cloud.fleet is not None
    # Then the launch hook was completed with CONTINUE and the new host serves v4 like the rest
    assert v4["status"] == "SUCCEEDED"
    assert len(new) == 1
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
    assert host_digests(cloud, app)[new[0].instance_id] == v4["digest"]
    assert set(served_bodies(cloud, app).values()) == {f"{app} release 4\n"}
    assert cloud.consistency(app)["consistent"]


def test_rollback_to_v1_needs_no_registry(cloud: LocalCloud, story: Story) -> None:
    # Given four hosts on v4, and the registry down (every request answers 503)
    app = story.at(4)
    assert cloud.registry is not None
    cloud.registry.fail_always(503)
    try:
        # When the operator invokes the rollback function with a tag
        answer = roll_back_to_v1(cloud, app)
    finally:
        cloud.registry.heal()
    # Then every host serves v1 again from the image kept on the machine, without one pull
    assert answer["status"] == "ok"
    assert set(served_bodies(cloud, app).values()) == {f"{app} release 1\n"}
    sums = summaries(cloud, answer["command_id"])
    assert len(sums) == 4
    assert {s["outcome"] for s in sums.values()} == {"live"}
    assert {s["pull_attempts"] for s in sums.values()} == {0}


def test_after_every_step_pointer_group_and_hosts_agree(cloud: LocalCloud, story: Story) -> None:
    # Given the whole story played on one app
    app = story.at(5)
    # Then the invariant holds: pointer = launch-template version's release = every host's
    report = cloud.consistency(app)
    assert report["consistent"], report
    v1 = release_by_tag(cloud, app, "v1")
    assert v1 is not None
    assert (cloud.pointer(app) or {})["digest"] == v1["digest"]
    # and nothing was dead-lettered along the way
    assert story.dead_letters(app) == []


def test_every_call_of_the_story_was_allowed_by_the_callers_role(cloud: LocalCloud, story: Story) -> None:
    # Given the whole story played, every function's calls checked against its own role (as the
    # stack created it), the SSM agent's CloudWatch calls and the hosts' own AWS CLI calls (through
    # the hosts' gate) against the hosts' role
    app = story.at(5)

    # Then no call was refused, and the swap output reached the command log group as the host
    assert cloud.denied() == []
    assert cloud.gate is not None
    assert any(line.endswith(": ssm:GetDocument") for line in cloud.gate.allowed), "no host boot was checked"
    assert cloud.stack is not None
    logs = cloud.moto.client("logs")
    group = cloud.stack.outputs["CommandLogGroupName"]
    assert logs.describe_log_streams(logGroupName=group)["logStreams"], app
