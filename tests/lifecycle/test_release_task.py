"""The release task through the controller and moto: sent once, to one instance, before the
pointer, the launch template, the group or any host moves; its end decides whether the swap
follows or the release FAILS with nothing changed; redeliveries and rollbacks do not run it again."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from deployer.command_events import CommandNotRecordedYet
from deployer.entry.events import handle_operation
from deployer.models.config import AppConfig
from deployer.models.records import TASK_FAILED, TASK_SUCCEEDED, Release, ReleaseSource, ReleaseStatus

from tests.lifecycle.conftest import DOCUMENT, TASK_DOCUMENT, World, client
from tests.lifecycle.test_cli import put_log, run

pytestmark = pytest.mark.unit

MIGRATE = ["python", "manage.py", "migrate"]


def with_task(world: World, **overrides: Any) -> None:
    """The app's config gains a release task (as `deployer config put` would store it)."""
    world.config = AppConfig.parse({**world.config.to_document(), "release_task": MIGRATE, **overrides})
    world.core.apps.put(world.config)


def sent(document: str) -> list[dict[str, Any]]:
    """Every command SendCommand started with `document`, oldest first (what SSM was sent)."""
    commands = client("ssm").list_commands()["Commands"]
    return sorted(
        (c for c in commands if c["DocumentName"] == document), key=lambda c: c["RequestedDateTime"]
    )


def tasks_of(release: int) -> list[dict[str, Any]]:
    return [c for c in sent(TASK_DOCUMENT) if c["Comment"] == f"deployer task web release {release}"]


def swaps_of(release: int) -> list[dict[str, Any]]:
    return [c for c in sent(DOCUMENT) if c["Comment"] == f"deployer web release {release}"]


def task_summary(release: Release, exit_code: int, tail: list[str]) -> str:
    ok = exit_code == 0
    return json.dumps(
        {
            "agent": "deployer",
            "app": "web",
            "release": release.release,
            "digest": release.digest,
            "outcome": "task_succeeded" if ok else "failed",
            "failure_class": "none" if ok else "task",
            "exit_code": 0 if ok else 9,
            "message": "exit code 0"
            if ok
            else f"release task of release {release.release} ran: it exited with code {exit_code}",
            "container_exit": exit_code,
            "log_tail": tail,
        }
    )


def end_task(
    world: World, release: Release, exit_code: int = 0, tail: list[str] | None = None
) -> dict[str, Any]:
    """The task's host ran it: its invocation and command end in moto as SSM ends them; returns
    the command's status event (not delivered)."""
    assert release.task_command_id
    assert release.task_instance
    lines = tail if tail is not None else ["Applying users.0002_email... OK"]
    details = "Success" if exit_code == 0 else "Failed"
    world.shim.invocation(
        release.task_command_id,
        release.task_instance,
        details,
        task_summary(release, exit_code, lines) + "\n",
        0 if exit_code == 0 else 9,
    )
    status = world.shim.command(release.task_command_id, details, completed=1, errors=int(exit_code != 0))
    event = world.command_event(release.task_command_id, status)
    event["detail"]["document-name"] = TASK_DOCUMENT
    return event


def deployed_one(world: World) -> Release:
    """Release 1 live everywhere, deployed before the app had a task."""
    first = world.push(1, "v1")
    world.complete(first)
    return world.release(1)


def test_a_push_sends_the_task_once_to_one_instance_and_nothing_else_moves(world: World) -> None:
    # Given release 1 live, then the app gains a release task
    one = deployed_one(world)
    group_version = world.core.launch_templates.current(world.config).version
    with_task(world)
    # When image 2 is pushed
    two = world.push(2, "v2")
    # Then exactly one task command went out, to the lowest InService instance id, carrying the
    # release's image and the argv; no swap was sent
    (task,) = tasks_of(2)
    assert task["InstanceIds"] == [min(world.instances)]
    assert task["Parameters"]["image"] == [two.image]
    assert task["Parameters"]["release"] == ["2"]
    assert json.loads(base64.b64decode(task["Parameters"]["argv"][0])) == MIGRATE
    assert swaps_of(2) == []
    # and the release records it
    assert (two.status, two.task_command_id, two.task_instance) == (
        ReleaseStatus.DEPLOYING,
        task["CommandId"],
        min(world.instances),
    )
    assert two.command_id is None
    # and the pointer, the group's version and every host are still on release 1
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == group_version
    assert world.assert_agree().release == one.release


def test_a_task_that_succeeded_lets_the_swap_go_out_and_the_release_succeeds(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    # When the task's command ends Success and its event arrives
    answer = world.deliver(end_task(world, two))
    # Then the release records the task and the swap is sent to the group
    after = world.release(2)
    assert (after.task_result, after.task_exit_code) == (TASK_SUCCEEDED, 0)
    assert answer["task_result"] == TASK_SUCCEEDED
    (swap,) = swaps_of(2)
    assert after.command_id == swap["CommandId"]
    assert world.core.pointer.get("web").release == 2  # type: ignore[union-attr]
    # When the swap completes, the release succeeded and everything agrees on it
    world.complete(after)
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    assert world.assert_agree().release == 2
    assert len(tasks_of(2)) == 1


def test_a_failed_task_fails_the_release_with_its_exit_code_and_last_lines_and_changes_nothing(
    world: World,
) -> None:
    one = deployed_one(world)
    group_version = world.core.launch_templates.current(world.config).version
    with_task(world)
    two = world.push(2, "v2")
    # When the task exits 3
    tail = [f"line {i}" for i in range(10)] + [
        "django.db.utils.ProgrammingError: relation users does not exist"
    ]
    answer = world.deliver(end_task(world, two, 3, tail))
    # Then the release FAILED, naming the exit code and the last lines
    after = world.release(2)
    assert after.status is ReleaseStatus.FAILED
    assert (after.task_result, after.task_exit_code) == (TASK_FAILED, 3)
    assert "exit code 3" in after.status_reason
    assert after.status_reason.endswith(
        "line 9 | django.db.utils.ProgrammingError: relation users does not exist"
    )
    assert answer["release_status"] == "FAILED"
    # and no swap went out; pointer, group and hosts never left release 1
    assert swaps_of(2) == []
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]
    assert world.core.launch_templates.current(world.config).version == group_version
    assert world.assert_agree().release == one.release
    # and the app is free, wanting release 1, with the failed digest refused
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired) == (None, 1)
    assert two.digest in state.refused_digests


def test_a_redelivered_task_event_or_another_trigger_never_sends_the_task_again(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    # While the task runs, the reconciler's tick (or any trigger) converges the app again
    from deployer.controller import converge  # noqa: PLC0415

    converge(world.core, "web")
    assert len(tasks_of(2)) == 1
    # When the task's end is delivered twice
    event = end_task(world, two)
    world.deliver(event)
    world.deliver(event)
    # Then one task command and one swap command, ever
    assert len(tasks_of(2)) == 1
    assert len(swaps_of(2)) == 1
    # and the swap's end is decided once
    world.complete(world.release(2))
    world.deliver(event)
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    assert (len(tasks_of(2)), len(swaps_of(2))) == (1, 1)


def test_a_rollback_skips_the_task_unless_asked(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    world.deliver(end_task(world, two))
    world.complete(world.release(2))
    # When an operator rolls back to release 1
    answer = handle_operation(world.ld, {"action": "rollback", "app": "web"})
    rollback = world.release(answer["release"])
    # Then it swaps at once, without a task
    assert (rollback.source, rollback.skip_task) == (ReleaseSource.ROLLBACK, True)
    assert tasks_of(rollback.release) == []
    assert len(swaps_of(rollback.release)) == 1
    world.complete(rollback)
    # When an operator rolls back again with the CLI, asking for the task
    code, answer, err = run(world, "rollback", "web", "--to", "2", "--with-task")
    assert (code, err) == (0, ""), answer
    asked = world.release(answer["release"])
    assert asked.skip_task is False
    # Then the task goes first and nothing is swapped yet
    assert len(tasks_of(asked.release)) == 1
    assert swaps_of(asked.release) == []


def test_an_automatic_rollback_does_not_run_the_task(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    world.deliver(end_task(world, two))
    # When release 2's swap fails on a host
    answer = world.complete(world.release(2), failures={world.instances[0]: "health"})
    # Then the automatic rollback swaps straight back, without a task
    rollback = world.release(answer["rollback_release"])
    assert rollback.skip_task is True
    assert tasks_of(rollback.release) == []
    assert len(swaps_of(rollback.release)) == 1


def test_a_group_without_an_in_service_instance_fails_the_release_before_anything_moves(world: World) -> None:
    deployed_one(world)
    with_task(world)
    client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=world.config.auto_scaling_group, MinSize=0
    )
    for instance in world.instances:
        client("autoscaling").detach_instances(
            InstanceIds=[instance],
            AutoScalingGroupName=world.config.auto_scaling_group,
            ShouldDecrementDesiredCapacity=True,
        )
    two = world.push(2, "v2")
    assert two.status is ReleaseStatus.FAILED
    assert "needs an InService instance" in two.status_reason
    assert tasks_of(2) == []
    assert swaps_of(2) == []
    assert world.core.pointer.get("web").release == 1  # type: ignore[union-attr]


def test_logs_task_shows_the_release_tasks_output_and_nothing_else(world: World) -> None:
    # Given release 2's task failed, its output in the command log group beside release 1's swap
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    world.deliver(end_task(world, two, 3))
    group = world.core.settings.command_log_group
    put_log(
        group, f"{two.task_command_id}/{two.task_instance}/task/stderr", "task| relation users does not exist"
    )
    put_log(group, f"{world.release(1).command_id}/{world.instances[0]}/swap/stdout", "release 1 is live")
    # When an operator reads release 2's task output, and every task's of the last hour
    by_release = run(world, "logs", "web", "--task", "--release", "2")
    recent = run(world, "logs", "web", "--task", "--since", "1h")
    # Then exactly the task's lines come back, from its host
    expected = [("task", two.task_instance, "task| relation users does not exist")]
    for code, lines, err in (by_release, recent):
        assert (code, err) == (0, "")
        assert [(line["source"], line["instance_id"], line["message"]) for line in lines] == expected
    # and a release without a task, or --release without --task, is a usage error naming why
    code, _, err = run(world, "logs", "web", "--task", "--release", "1")
    assert (code, "ran no release task" in err) == (4, True)
    code, _, err = run(world, "logs", "web", "--release", "2")
    assert (code, "add --task" in err) == (4, True)


def test_a_push_during_the_task_waits_and_starts_with_its_own_task_when_the_task_fails(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    # Given image 3 pushed while release 2's task runs
    three = world.push(3, "v3")
    assert three.status is ReleaseStatus.PENDING
    assert tasks_of(3) == []
    # When release 2's task fails
    world.deliver(end_task(world, two, 1))
    # Then release 2 FAILED and release 3 started in its place, with its own task first
    assert world.release(2).status is ReleaseStatus.FAILED
    started = world.release(3)
    assert started.status is ReleaseStatus.DEPLOYING
    assert started.replaces == 1
    assert len(tasks_of(3)) == 1
    assert swaps_of(2) == []
    assert swaps_of(3) == []


def test_the_tasks_invocation_event_records_no_host_outcome(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    end_task(world, two)
    assert two.task_command_id
    assert two.task_instance
    # When the task's invocation event arrives
    answer = world.deliver(world.invocation_event(two.task_command_id, two.task_instance, "Success"))
    # Then it is acknowledged and changes nothing: no outcome for release 2, still waiting on its task
    assert answer["action"] == "ignored"
    assert world.core.host_outcomes.for_release("web#2") == []
    assert world.release(2).task_result is None


def test_a_task_event_before_its_command_is_recorded_is_retried(world: World) -> None:
    deployed_one(world)
    with_task(world)
    two = world.push(2, "v2")
    event = end_task(world, two)
    # Given the sender had not recorded the task's command id yet when SSM reported its end
    client("dynamodb").update_item(
        TableName=world.core.settings.releases_table,
        Key={"app": {"S": "web"}, "release": {"N": "2"}},
        UpdateExpression="REMOVE task_command_id, task_instance",
    )
    # When the event arrives, the delivery fails so that it is delivered again
    with pytest.raises(CommandNotRecordedYet):
        world.deliver(event)
    assert world.release(2).task_result is None
