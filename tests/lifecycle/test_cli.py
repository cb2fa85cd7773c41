"""The `deployer` CLI against the lifecycle's moto world: its --json answers are what the system
holds, a failed deploy followed with --wait ends in the documented exit code, cancel stops a
rollout through the rollback path, and every error is one line on stderr."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from deployer import cli
from deployer.admission import accept_push
from deployer.cli.context import INVOKE_CONFIG, CliClients
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseStatus
from moto.logs.responses import LogsResponse

from tests.conftest import read_template
from tests.lifecycle.conftest import GROUP, REGION, World, client

pytestmark = pytest.mark.unit


def run(world: World, *argv: str, sleep: Callable[[float], None] | None = None) -> tuple[int, Any, str]:
    """Run the CLI with --json; (exit code, parsed stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([*argv, "--json"], deps=world.core, out=out, err=err, sleep=sleep or (lambda _s: None))
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def two_good_releases(world: World) -> None:
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))


def newest(world: World) -> Any:
    return world.core.releases.list_recent("web", 1)[0]


# ------------------------------------------------------------------ status and history


def test_status_json_is_the_pointer_the_group_version_and_every_hosts_release(world: World) -> None:
    # Given two releases that succeeded on every host
    two_good_releases(world)

    # When an operator asks for the status
    code, view, err = run(world, "status", "web")

    # Then it is the system's pointer, the group's launch-template version and each host on release 2
    assert (code, err) == (0, "")
    pointer = world.core.pointer.get("web")
    assert pointer is not None
    assert view["current"]["release"] == pointer.release == 2
    assert view["current"]["digest"] == pointer.digest
    assert view["current"]["source"] == "push"
    group = world.core.launch_templates.current(world.config)
    assert view["launch_template"]["group_version"] == group.version
    assert view["launch_template"]["release_version"] == world.release(2).launch_template_version
    assert view["launch_template"]["in_sync"] is True
    assert [h["instance_id"] for h in view["hosts"]] == world.instances
    assert {h["release"] for h in view["hosts"]} == {2}
    assert {h["state"] for h in view["hosts"]} == {"serving"}
    assert view["drift"] == []


def test_status_highlights_a_failed_host_and_a_group_off_the_pointers_version(
    world_no_rollback: World,
) -> None:
    world = world_no_rollback
    # Given release 2 failed its health check on one host (no automatic rollback: pointer stays on 2)
    world.complete(world.push(1, "v1"))
    bad_host = world.instances[0]
    world.complete(world.push(2, "v2"), failures={bad_host: "health"})
    # and the group was moved back to an older launch-template version by hand
    client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=GROUP, LaunchTemplate={"LaunchTemplateName": "web-lt", "Version": "1"}
    )

    # When an operator asks for the status
    code, view, _ = run(world, "status", "web")

    # Then the failed host runs release 1 (its last serving outcome), marked as drift with its failure,
    # and the group's version is reported against the release's
    assert code == 0
    hosts = {h["instance_id"]: h for h in view["hosts"]}
    assert hosts[bad_host]["release"] == 1
    assert hosts[bad_host]["drift"] is True
    assert hosts[bad_host]["state"] == "failed"
    assert hosts[bad_host]["last_result"]["failure_class"] == "health"
    assert all(not h["drift"] for iid, h in hosts.items() if iid != bad_host)
    assert view["launch_template"] == {
        **view["launch_template"],
        "group_version": 1,
        "release_version": world.release(2).launch_template_version,
        "in_sync": False,
    }
    assert len(view["drift"]) == 2


def test_history_json_lists_what_the_releases_table_holds(world: World) -> None:
    # Given a good release and a release that failed and was rolled back
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"), failures={world.instances[0]: "health"})
    world.complete(newest(world))

    # When the history is listed
    code, rows, err = run(world, "history", "web", "--limit", "10")

    # Then each row is the stored release
    assert (code, err) == (0, "")
    stored = world.core.releases.list_recent("web", 10)
    assert [r["release"] for r in rows] == [r.release for r in stored] == [3, 2, 1]
    for row, release in zip(rows, stored, strict=True):
        assert row["status"] == release.status.value
        assert row["source"] == release.source.value
        assert row["hosts_ok"] == release.hosts_ok
        assert row["hosts_failed"] == release.hosts_failed
        assert row["reason"] == (release.status_reason or release.reason)
        assert row["duration_seconds"] is not None
    assert [r["status"] for r in rows] == ["SUCCEEDED", "ROLLED_BACK", "SUCCEEDED"]
    assert rows[1]["hosts_failed"] == 1


# ------------------------------------------------------------------ deploy --wait


def fleet_driver(world: World, failing_tag: str) -> Callable[[float], None]:
    """A `sleep` for the CLI's live view: each call lets the fleet finish the deploying release;
    hosts fail the health check on the release tagged `failing_tag`."""

    def sleep(_seconds: float) -> None:
        release = newest(world)
        if release.status is ReleaseStatus.DEPLOYING:
            failing = dict.fromkeys(world.instances, "health") if release.tag == failing_tag else {}
            world.complete(release, failures=failing)

    return sleep


def test_deploy_wait_of_a_release_failing_health_exits_2_and_names_the_health_failure(world: World) -> None:
    # Given release 1 live and image v2 in ECR, which fails its health check on every host
    world.complete(world.push(1, "v1"))
    world.image(2, "v2")

    # When an operator deploys v2 and waits
    code, result, err = run(world, "deploy", "web", "--tag", "v2", "--wait", sleep=fleet_driver(world, "v2"))

    # Then the deploy failed and was rolled back: exit 2, the health failure named per host
    assert (code, err) == (2, "")
    assert result["verdict"] == "failed and rolled back"
    assert result["failure_classes"] == ["health"]
    stored = world.core.host_outcomes.for_release("web#2")
    assert {h["instance_id"]: (h["failure_class"], h["message"]) for h in result["hosts"]} == {
        o.instance_id: (o.failure_class, o.message) for o in stored
    }
    assert all("GET /health answered 500" in h["message"] for h in result["hosts"])
    assert all(h["log_tail"] == ["GET /health 500"] for h in result["hosts"])
    # and the release and its rollback are as the system recorded them
    assert result["status"] == world.release(2).status.value == "ROLLED_BACK"
    assert result["rollback"]["release"] == 3
    assert world.release(3).status is ReleaseStatus.SUCCEEDED
    assert world.core.pointer.get("web").digest == world.release(1).digest  # type: ignore[union-attr]


def test_deploy_wait_of_a_good_release_exits_0(world: World) -> None:
    world.complete(world.push(1, "v1"))
    world.image(2, "v2")
    code, result, _ = run(world, "deploy", "web", "--tag", "v2", "--wait", sleep=fleet_driver(world, "none"))
    assert code == 0
    assert result["verdict"] == "succeeded"
    assert world.release(result["release"]).status is ReleaseStatus.SUCCEEDED
    assert {h["ok"] for h in result["hosts"]} == {True}


def test_wait_follows_a_deploy_a_push_started_and_exits_1_without_auto_rollback(
    world_no_rollback: World,
) -> None:
    world = world_no_rollback
    world.complete(world.push(1, "v1"))
    world.push(2, "v2")
    code, result, _ = run(world, "wait", "web", sleep=fleet_driver(world, "v2"))
    assert code == 1
    assert (result["release"], result["status"], result["verdict"]) == (2, "FAILED", "failed")


# ------------------------------------------------------------------ wait --digest: CI's own push


class Clock:
    """The CLI's clock and sleep: each sleep moves time on, then runs what happens meanwhile."""

    def __init__(self, meanwhile: Callable[[int], None] = lambda _n: None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self._meanwhile = meanwhile

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self._meanwhile(self.sleeps)


def run_timed(world: World, clock: Clock, *argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [*argv, "--json"], deps=world.core, out=out, err=err, sleep=clock.sleep, clock=lambda: clock.now
    )
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def push_arrives_then_fleet_runs(
    world: World, digest: str, tag: str, failing_tag: str
) -> Callable[[int], None]:
    """While the CLI waits: the push event is handled a few polls late, then the fleet finishes
    each deploying release (hosts fail health on `failing_tag`)."""
    finish = fleet_driver(world, failing_tag)

    def meanwhile(n: int) -> None:
        if n == 3:
            accept_push(world.core, parse_push_event(world.push_event(digest, tag)))
        elif n > 3:
            finish(0)

    return meanwhile


def test_wait_digest_issued_before_the_push_is_admitted_follows_that_push_and_exits_2_on_rollback(
    world: World,
) -> None:
    # Given release 1 live, and v2 pushed to ECR but its push event not handled yet
    world.complete(world.push(1, "v1"))
    digest = world.image(2, "v2")
    clock = Clock(push_arrives_then_fleet_runs(world, digest, "v2", failing_tag="v2"))

    # When CI waits for its digest (v2 fails its health check on every host)
    code, result, err = run_timed(world, clock, "wait", "web", "--digest", digest)

    # Then it waited for the push's release, not release 1, and ends as deploy --wait does: exit 2
    assert (code, err) == (2, "")
    assert clock.sleeps > 3
    assert result["release"] == 2
    assert world.release(2).digest == digest
    assert result["status"] == world.release(2).status.value == "ROLLED_BACK"
    assert result["verdict"] == "failed and rolled back"
    assert result["rollback"]["release"] == 3


def test_wait_digest_and_tag_of_a_push_that_succeeds_exits_0(world: World) -> None:
    world.complete(world.push(1, "v1"))
    digest = world.image(2, "v2")
    clock = Clock(push_arrives_then_fleet_runs(world, digest, "v2", failing_tag="none"))

    code, result, err = run_timed(world, clock, "wait", "web", "--digest", digest, "--tag", "v2")

    assert (code, err) == (0, "")
    assert (result["release"], result["verdict"]) == (2, "succeeded")
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    assert world.release(2).digest == digest


def test_wait_digest_of_a_tag_the_filter_ignores_exits_4_at_once_with_the_reason(world: World) -> None:
    # Given an app that deploys only v* tags, and an image pushed as `broken`
    world.core.apps.put(world.config.model_copy(update={"tag_filter": ("v*",)}))
    digest = world.image(2, "broken")
    clock = Clock()

    # When CI waits for it, by digest alone and with its tag
    by_digest = run_timed(world, clock, "wait", "web", "--digest", digest)
    by_tag = run_timed(world, clock, "wait", "web", "--digest", digest, "--tag", "broken")

    # Then both exit 4 without waiting, naming the filter, and nothing was recorded
    one_error_line(*by_digest, 4, "none of its tags (broken) passes the tag filter (v*)")
    one_error_line(*by_tag, 4, "does not deploy tag broken: it does not pass the tag filter (v*)")
    assert clock.sleeps == 0
    assert world.core.releases.list_recent("web", 5) == []


def test_wait_digest_of_an_untagged_image_exits_4_at_once(world: World) -> None:
    digest = world.image(2)
    clock = Clock()
    code, out, err = run_timed(world, clock, "wait", "web", "--digest", digest)
    one_error_line(code, out, err, 4, "is untagged in web: an untagged push is never deployed")
    assert clock.sleeps == 0


def test_wait_digest_of_a_refused_digest_pushed_under_a_new_tag_exits_4_at_once(world: World) -> None:
    # Given v2 failed and was rolled back (its digest is refused), then re-pushed as v2-retry
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"), failures=dict.fromkeys(world.instances, "health"))
    world.complete(newest(world))
    digest = world.image(2, "v2-retry")
    accept_push(world.core, parse_push_event(world.push_event(digest, "v2-retry")))
    clock = Clock()

    # When CI waits for the re-push by digest and tag
    code, out, err = run_timed(world, clock, "wait", "web", "--digest", digest, "--tag", "v2-retry")

    # Then it exits 4 at once: the push recorded no release, and will not
    one_error_line(code, out, err, 4, f"web refuses {digest} for automatic deploys: it failed before")
    assert clock.sleeps == 0
    assert [r.tag for r in world.core.releases.list_recent("web", 5)] == ["v1", "v2", "v1"]


def test_wait_digest_of_a_push_never_handled_times_out_with_exit_1(world: World) -> None:
    # Given v2 in ECR whose push event never arrives
    world.complete(world.push(1, "v1"))
    digest = world.image(2, "v2")
    clock = Clock()

    # When CI waits for it for 60 seconds
    code, result, err = run_timed(world, clock, "wait", "web", "--digest", digest, "--timeout", "60")

    # Then it gives up at the timeout with the timeout's exit code, naming no release
    assert (code, err) == (1, "")
    assert result["release"] is None
    assert result["verdict"] == f"no release was admitted for {digest} when the wait timed out"
    assert 60 <= clock.now <= 62
    assert [r.release for r in world.core.releases.list_recent("web", 5)] == [1]


def test_wait_digest_rejects_a_malformed_digest_naming_the_flag(world: World) -> None:
    for argv, fragment in (
        (("wait", "web", "--digest", "sha256:abc"), "argument --digest: 'sha256:abc' is not an image digest"),
        (("wait", "web", "--tag", "v2"), "--tag needs --digest"),
        (("wait", "web", "--digest", "sha256:" + "a" * 64, "--release", "1"), "not allowed with argument"),
    ):
        code, out, err = run(world, *argv)
        one_error_line(code, out, err, 4, fragment)


def test_plain_wait_follows_a_push_not_yet_admitted_instead_of_the_release_before_it(world: World) -> None:
    # Given release 1 live, then (a second later, as ECR times pushes in seconds) v2 pushed to ECR
    # with its event not handled yet
    world.complete(world.push(1, "v1"))
    time.sleep(1.05)
    digest = world.image(2, "v2")
    clock = Clock(push_arrives_then_fleet_runs(world, digest, "v2", failing_tag="v2"))

    # When an operator waits without naming anything
    code, result, _ = run_timed(world, clock, "wait", "web")

    # Then it followed the push's release (exit 2: it rolled back), not release 1 (exit 0)
    assert code == 2
    assert result["release"] == 2
    assert world.release(2).digest == digest


# ------------------------------------------------------------------ cancel


def test_cancel_stops_the_command_marks_the_release_and_rolls_the_swapped_hosts_back(world: World) -> None:
    # Given release 2 deploying, live on one host so far
    two_good_releases(world)
    world.image(3, "v3")
    code, started, _ = run(world, "deploy", "web", "--tag", "v3")
    assert code == 0
    release = world.release(started["release"])
    invocations, commands = world.run_command(release)
    world.deliver(invocations[0])

    # When an operator cancels it
    code, result, err = run(world, "cancel", "web", "--reason", "wrong build")

    # Then SSM's command is cancelled, the release is CANCELLED with the reason, and a rollback
    # release to release 2 took the lock and moved the pointer back
    assert (code, err) == (0, "")
    assert world.shim.cancelled == [release.command_id]
    cancelled = world.release(release.release)
    assert cancelled.status is ReleaseStatus.CANCELLED
    assert "wrong build" in cancelled.status_reason
    assert result["status"] == "CANCELLED"
    assert result["target"] == 2
    rollback = world.release(result["rollback_release"])
    assert rollback.status is ReleaseStatus.DEPLOYING
    assert rollback.digest == world.release(2).digest
    assert world.core.state.get("web").lock_owner == f"web#{rollback.release}"
    assert world.core.pointer.get("web").release == rollback.release  # type: ignore[union-attr]

    # And the cancelled command's own events no longer decide anything
    for event in [*invocations[1:], *commands]:
        world.deliver(event)
    assert world.release(release.release).status is ReleaseStatus.CANCELLED
    assert world.core.state.get("web").lock_owner == f"web#{rollback.release}"

    # And once the rollback has run, every host is back on release 2's image
    world.complete(rollback)
    assert world.release(rollback.release).status is ReleaseStatus.SUCCEEDED
    world.assert_agree()
    code, waited, _ = run(world, "wait", "web", "--release", str(release.release))
    assert (code, waited["verdict"]) == (3, "cancelled")


def test_cancel_with_nothing_deploying_is_one_error_line_and_changes_nothing(world: World) -> None:
    two_good_releases(world)
    before = [r.model_dump() for r in world.core.releases.list_recent("web", 10)]
    code, out, err = run(world, "cancel", "web")
    assert (code, out) == (4, None)
    assert err == "error: web has no deploy in progress: there is nothing to cancel\n"
    assert world.shim.cancelled == []
    assert [r.model_dump() for r in world.core.releases.list_recent("web", 10)] == before


# ------------------------------------------------------------------ config


def test_config_validate_and_put_use_the_functions_model(world: World, tmp_path: Path) -> None:
    document = {**world.config.to_document(), "retain": 5}
    path = tmp_path / "web.json"
    path.write_text(json.dumps(document))
    code, answer, _ = run(world, "config", "validate", str(path))
    assert (code, answer["valid"], answer["app"]) == (0, True, "web")
    code, _, _ = run(world, "config", "put", "web", str(path))
    assert code == 0
    assert world.core.apps.get("web").retain == 5


# ------------------------------------------------------------------ errors: one line, non-zero


def one_error_line(code: int, out: Any, err: str, expected_code: int, fragment: str) -> None:
    assert code == expected_code, (code, err)
    assert out is None
    assert err.count("\n") == 1, err
    assert err.startswith("error: "), err
    assert fragment in err, err
    assert "Traceback" not in err


def test_an_unknown_app_is_one_line_and_exit_4(world: World) -> None:
    for argv in (
        ("status", "nope"),
        ("history", "nope"),
        ("wait", "nope"),
        ("deploy", "nope", "--tag", "v1"),
    ):
        code, out, err = run(world, *argv)
        one_error_line(code, out, err, 4, "no app named 'nope'")


def test_an_invalid_config_is_one_line_exit_4_and_writes_nothing(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "web.json"
    bad.write_text(json.dumps({**world.config.to_document(), "retain": 0, "app": "web"}))
    before = world.core.apps.get("web")
    for argv in (("config", "validate", str(bad)), ("config", "put", "web", str(bad))):
        code, out, err = run(world, *argv)
        one_error_line(code, out, err, 4, "retain")
    assert world.core.apps.get("web") == before
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**world.config.to_document(), "app": "api"}))
    code, out, err = run(world, "config", "put", "web", str(other))
    one_error_line(code, out, err, 4, "configures app 'api', not 'web'")


def test_usage_errors_are_one_line_and_exit_4(world: World) -> None:
    for argv, fragment in (
        (("deploy", "web"), "one of the arguments --tag --digest --release --config-only is required"),
        (("logs", "web", "--since", "ten"), "is not a duration"),
        (("diagnose", "web", "--host", "web-1"), "is not an instance id"),
        (("frobnicate",), "invalid choice"),
    ):
        code, out, err = run(world, *argv)
        one_error_line(code, out, err, 4, fragment)


STACK_ENV = {
    "APPS_TABLE": "AppsTable",
    "APP_STATE_TABLE": "AppStateTable",
    "RELEASES_TABLE": "ReleasesTable",
    "HOST_OUTCOMES_TABLE": "HostOutcomesTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "SWAP_DOCUMENT_NAME": "deployer-Swap",
    "COMMAND_LOG_GROUP": "/deployer/commands",
    "AWS_REGION": REGION,
}


def cli_alone(*argv: str) -> tuple[int, str, str]:
    """The CLI wired from the environment, as an operator runs it (no moto, no injected deps)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in STACK_ENV.items():
        monkeypatch.setenv(name, value)


def test_no_credentials_is_one_line_and_exit_4(stack_env: None) -> None:
    code, out, err = cli_alone("status", "web", "--endpoint-url", "http://127.0.0.1:9")
    one_error_line(code, out or None, err, 4, "no AWS credentials found")


def test_an_unknown_profile_is_one_line_and_exit_4(stack_env: None) -> None:
    code, out, err = cli_alone("--profile", "nosuch", "status", "web")
    one_error_line(code, out or None, err, 4, "nosuch")


def test_an_unreachable_endpoint_is_one_line_and_exit_1(
    stack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    started = time.monotonic()
    code, out, err = cli_alone("status", "web", "--endpoint-url", "http://127.0.0.1:9")
    one_error_line(code, out or None, err, 1, "cannot reach http://127.0.0.1:9")
    assert time.monotonic() - started < 20  # interactive timeouts, not the functions' retries


def test_a_missing_stack_setting_is_read_from_the_stack_which_needs_credentials_one_line_exit_4(
    stack_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Without APPS_TABLE the CLI reads the stack's outputs (deployer.cli.stack), here without
    # credentials: one line naming what to set
    monkeypatch.delenv("APPS_TABLE")
    monkeypatch.setenv("DEPLOYER_STACK_CACHE", str(tmp_path / "cache.json"))
    code, out, err = cli_alone("status", "web")
    one_error_line(code, out or None, err, 4, "no AWS credentials found")


# ------------------------------------------------------------------ logs and diagnose


def put_log(group: str, stream: str, message: str) -> None:
    logs = client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": message}],
    )


@pytest.fixture
def stream_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """MOTO GAP: FilterLogEvents ignores logStreamNamePrefix; give it the streams it names."""
    original = LogsResponse.filter_log_events

    def filter_log_events(self: Any) -> Any:
        prefix = self._get_param("logStreamNamePrefix")
        if prefix:
            group = self.logs_backend.groups[self._get_param("logGroupName")]
            names = [n for n in group.streams if n.startswith(prefix)] or ["\0none"]
            get = self._get_param
            self._get_param = lambda name, if_none=None: (
                names if name == "logStreamNames" else get(name, if_none)
            )
        return original(self)

    monkeypatch.setattr(LogsResponse, "filter_log_events", filter_log_events)


@pytest.mark.usefixtures("stream_prefix")
def test_logs_json_reads_one_hosts_swap_output_and_container_logs(world: World) -> None:
    # Given release 2's swap output from two hosts, a stream of a command that is not the app's,
    # and each host's container logs in the app's log group
    two_good_releases(world)
    command = world.release(2).command_id
    first, second = world.instances[0], world.instances[1]
    group = world.core.settings.command_log_group
    put_log(group, f"{command}/{first}/swap/stdout", "release 2 is live")
    put_log(group, f"{command}/{second}/swap/stdout", "other host")
    put_log(group, f"00000000-0000-0000-0000-000000000000/{first}/swap/stdout", "not this app's command")
    put_log("/deployer/web", f"{first}/deployer-web-blue", "GET /health 200")
    put_log("/deployer/web", f"{second}/deployer-web-blue", "other host's app")

    # When an operator reads the first host's logs
    code, lines, err = run(world, "logs", "web", "--host", first, "--since", "1h")

    # Then exactly that host's swap output and app lines come back, by source
    assert (code, err) == (0, "")
    assert sorted((line["source"], line["instance_id"], line["message"]) for line in lines) == [
        ("app", first, "GET /health 200"),
        ("swap", first, "release 2 is live"),
    ]


def test_diagnose_runs_the_diagnose_document_on_the_host_and_reports_the_agents_layer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the stack's diagnose document and a host that will report its app failing
    content = read_template()["Resources"]["DiagnoseDocument"]["Properties"]["Content"]
    ssm = client("ssm")
    ssm.create_document(
        Name="deployer-Diagnose", Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
    )
    monkeypatch.setenv("DEPLOYER_DIAGNOSE_DOCUMENT", "deployer-Diagnose")
    host = world.instances[1]
    report = {
        "agent": "deployer",
        "host": "deployer",
        "app": "web",
        "release": 2,
        "layer": "app",
        "checks": [
            {"name": "docker engine", "layer": "docker", "ok": True, "detail": "server 27"},
            {"name": "live container", "layer": "app", "ok": False, "detail": "deployer-web-blue: exited"},
        ],
        "log_tail": ["panic: db unreachable"],
    }

    def host_answers(_seconds: float) -> None:
        for command in world.shim.commands():
            if command.document_name == "deployer-Diagnose":
                world.shim.invocation(command.command_id, host, "Success", json.dumps(report) + "\n")

    # When an operator diagnoses that host
    code, answer, err = run(world, "diagnose", "web", "--host", host, sleep=host_answers)

    # Then the command went to that host only, with the app's health path, and the agent's
    # verdict is the answer
    assert (code, err) == (0, "")
    sent = [c for c in world.shim.commands() if c.document_name == "deployer-Diagnose"]
    assert len(sent) == 1
    assert sent[0].instance_ids == [host]
    assert sent[0].parameters == {"app": ["web"], "healthPath": ["/health"]}
    assert answer["layer"] == "app"
    assert answer["checks"] == report["checks"]
    assert answer["command_id"] == sent[0].command_id


def test_diagnose_lists_every_container_of_the_app_with_its_role(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a canary host whose agent reports its live container and its standby
    content = read_template()["Resources"]["DiagnoseDocument"]["Properties"]["Content"]
    client("ssm").create_document(
        Name="deployer-Diagnose", Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
    )
    monkeypatch.setenv("DEPLOYER_DIAGNOSE_DOCUMENT", "deployer-Diagnose")
    host = world.instances[0]
    report = {
        "agent": "deployer",
        "app": "web",
        "release": 2,
        "layer": "none",
        "checks": [{"name": "standby container", "layer": "app", "ok": True, "detail": "drained"}],
        "containers": [
            {"name": "deployer-web-blue", "state": "running", "release": 1, "role": "standby"},
            {"name": "deployer-web-green", "state": "running", "release": 2, "role": "live"},
        ],
        "container_bound": 2,
    }

    def host_answers(_seconds: float) -> None:
        for command in world.shim.commands():
            if command.document_name == "deployer-Diagnose":
                world.shim.invocation(command.command_id, host, "Success", json.dumps(report) + "\n")

    # When an operator diagnoses it without --json
    out, err = io.StringIO(), io.StringIO()
    argv = ["diagnose", "web", "--host", host]
    code = cli.main(argv, deps=world.core, out=out, err=err, sleep=host_answers)

    # Then each container is a row with its role and release, under the bound
    assert (code, err.getvalue()) == (0, "")
    rows = [" ".join(line.replace("│", " ").split()) for line in out.getvalue().splitlines()]
    assert "containers of web (at most 2: live and standby)" in rows
    assert "deployer-web-blue standby 1 running" in rows
    assert "deployer-web-green live 2 running" in rows


def test_diagnose_of_a_host_that_gives_no_report_is_one_error_line(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = read_template()["Resources"]["DiagnoseDocument"]["Properties"]["Content"]
    client("ssm").create_document(
        Name="deployer-Diagnose", Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
    )
    monkeypatch.setenv("DEPLOYER_DIAGNOSE_DOCUMENT", "deployer-Diagnose")
    host = world.instances[0]

    def host_fails(_seconds: float) -> None:
        for command in world.shim.commands():
            if command.document_name == "deployer-Diagnose":
                world.shim.invocation(command.command_id, host, "Failed", "", 127)

    code, out, err = run(world, "diagnose", "web", "--host", host, sleep=host_fails)
    one_error_line(code, out, err, 1, f"diagnose on {host} gave no report (Failed)")


# ------------------------------------------------------------------ through the rollback function


def stub_lambda(world: World, answer: dict[str, Any], error: bool = False) -> Any:
    """The rollback function as the CLI sees it: botocore's Stubber on the lambda client."""
    lambda_client = boto3.session.Session(region_name=REGION).client("lambda", config=INVOKE_CONFIG)
    world.core.clients._clients["lambda"] = lambda_client
    stubber = Stubber(lambda_client)
    response: dict[str, Any] = {
        "StatusCode": 200,
        "Payload": StreamingBody(io.BytesIO(json.dumps(answer).encode()), len(json.dumps(answer))),
    }
    if error:
        response["FunctionError"] = "Unhandled"
    stubber.add_response("invoke", response, {"FunctionName": "deployer-Rollback", "Payload": ANY})
    stubber.activate()
    return stubber


def test_with_a_function_name_the_action_is_one_invocation_of_the_rollback_function(world: World) -> None:
    stubber = stub_lambda(
        world, {"status": "ok", "action": "promote", "app": "web", "release": 7, "digest": "d"}
    )
    code, result, err = run(world, "deploy", "web", "--tag", "v2", "--function", "deployer-Rollback")
    assert (code, err) == (0, "")
    assert result["release"] == 7
    stubber.assert_no_pending_responses()
    # and the CLI's own lambda client makes one attempt: a timeout never starts a second deploy
    clients = CliClients(boto3.session.Session(region_name=REGION), None)
    assert clients.client("lambda").meta.config.retries["total_max_attempts"] == 1


def test_a_function_error_is_one_line(world: World) -> None:
    stub_lambda(
        world, {"errorType": "AppNotFound", "errorMessage": "no app named 'nope' is registered"}, error=True
    )
    code, out, err = run(world, "pause", "nope", "--function", "deployer-Rollback")
    one_error_line(code, out, err, 4, "deployer-Rollback: no app named 'nope' is registered")
