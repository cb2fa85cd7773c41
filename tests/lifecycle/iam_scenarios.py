"""IAM coverage scenarios of the lifecycle functions (rows of tests/iam/test_iam_coverage.py).

Each scenario drives one function's handler through its paths. Everything the scenario itself
sets up goes through clients that the operation recorder does not see: the `World`'s adapters
(created before recording starts) and `SETUP`, a session created at import time.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from deployer import controller, runtime
from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand, TrackedCommands
from deployer.admission import accept_push
from deployer.builders import swap_parameters
from deployer.models.events import parse_push_event
from deployer.models.records import Release, ReleaseStatus

from functions.on_command_status.app import handler as on_command_status
from functions.on_instance_launch.app import handler as on_instance_launch
from functions.reconciler.app import handler as reconciler
from functions.rollback.app import handler as rollback
from localcloud import moto_gaps
from tests.lifecycle.conftest import summary_line

REGION = "us-east-1"
ACCOUNT = "123456789012"
# Created before any recorder is installed: setup calls made with it are not the function's.
SETUP = boto3.session.Session(region_name=REGION)

# Operations each scenario must have made (proof that it reached the paths that matter).
EXPECTED_OPERATIONS: dict[str, set[str]] = {
    "OnImagePushFunction": {
        "SendCommand",
        "CreateLaunchTemplateVersion",
        "DeleteLaunchTemplateVersions",
        "PutItem",
        "Publish",
        "ListCommands",
        "ListCommandInvocations",
        "Query",
        "DescribeImages",
        "DescribeParameters",
        "DescribeSecret",
    },
    "OnCommandStatusFunction": {
        "GetCommandInvocation",
        "ListCommands",
        "CompleteLifecycleAction",
        "Publish",
        "SendCommand",
        "CreateLaunchTemplateVersion",
        "PutItem",
        "TransactWriteItems",
    },
    "RollbackFunction": {
        "ListCommands",
        "ListCommandInvocations",
        "Query",
        "CancelCommand",
        "DescribeImages",
        "SendCommand",
        "CreateLaunchTemplateVersion",
        "Publish",
        "TransactWriteItems",
        "DescribeParameters",
        "DescribeSecret",
    },
    "OnInstanceLaunchFunction": {
        "DescribeInstanceInformation",
        "SendCommand",
        "PutItem",
        "SendMessage",
        "RecordLifecycleActionHeartbeat",
        "CompleteLifecycleAction",
        "Scan",
        "GetItem",
    },
    "ReconcilerFunction": {
        "DescribeImages",
        "SendCommand",
        "CreateLaunchTemplateVersion",
        "PutItem",
        "TransactWriteItems",
        "DescribeParameters",
        "DescribeSecret",
    },
}


class FakeContext:
    function_name = "fn"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fn"
    aws_request_id = "req"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


@contextlib.contextmanager
def lifecycle(world: Any, env: dict[str, str] | None = None) -> Iterator[moto_gaps.MotoGaps]:
    """moto's gaps (`world.gaps`, filled by the `aws` fixture), a notification topic, and handler
    wiring rebuilt from env."""
    patcher = pytest.MonkeyPatch()
    try:
        SETUP.client("ecr").create_repository(repositoryName=world.config.repository)
        topic = SETUP.client("sns").create_topic(Name="DeployNotificationsTopic")["TopicArn"]
        patcher.setenv("NOTIFICATION_TOPIC_ARN", topic)
        for name, value in (env or {}).items():
            patcher.setenv(name, value)
        runtime.reset()
        yield world.gaps
    finally:
        patcher.undo()
        runtime.reset()


def push_event(world: Any, n: int, tag: str) -> dict[str, Any]:
    """ECR's push event of image n (the digest `push` puts in ECR)."""
    event = copy.deepcopy(world.load_event("ecr_image_push"))
    event["id"] = f"00000000-0000-4000-8000-{n:012d}"
    event["detail"]["image-digest"] = "sha256:" + f"{n:x}".rjust(64, "0")
    event["detail"]["image-tag"] = tag
    return event


def push(world: Any, n: int, tag: str) -> Release:
    """Image n in ECR and its push accepted through the World's (unrecorded) adapters."""
    digest = "sha256:" + f"{n:x}".rjust(64, "0")
    put_image(world, digest, tag)
    outcome = accept_push(world.deps, parse_push_event(push_event(world, n, tag)))
    number = outcome.results[0].release
    assert number is not None
    release: Release = world.deps.releases.get(world.config.app, number)
    return release


def succeed(world: Any, shim: moto_gaps.MotoGaps, release: Release) -> None:
    """Setup for scenarios that start from a deployed app: the release's command succeeds in SSM
    and the controller, run through the World's (unrecorded) adapters, records its end."""
    command_id = world.deps.releases.get(release.app, release.release).command_id
    assert command_id, f"release {release.release} sent no command"
    shim.command(command_id, "Success", completed=len(shim.targets(command_id)))
    controller.converge(world.deps, release.app)
    done = world.deps.releases.get(release.app, release.release)
    assert done.status is ReleaseStatus.SUCCEEDED, done


def put_image(world: Any, digest: str, tag: str) -> None:
    """An image in the app's ECR repository (setup: unrecorded)."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "layers": [],
            "config": {"digest": digest, "size": 1},
        }
    )
    SETUP.client("ecr").put_image(
        repositoryName=world.config.repository, imageManifest=manifest, imageDigest=digest, imageTag=tag
    )


def run_failing(world: Any, shim: moto_gaps.MotoGaps, release: Release) -> None:
    """Setup: the release's command fails in SSM on its first host (health), succeeds on the
    others; no event reaches any function, so the next trigger's converge finds the ending."""
    command_id = world.deps.releases.get(release.app, release.release).command_id
    assert command_id, f"release {release.release} sent no command"
    targets = shim.targets(command_id)
    for iid in targets:
        failed = iid == targets[0]
        line = summary_line(iid, release, "health" if failed else "none")
        shim.invocation(command_id, iid, "Failed" if failed else "Success", line)
    shim.command(command_id, "Failed", completed=len(targets), errors=1)


def _envelope(detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "10000000-0000-4000-8000-000000000001",
        "detail-type": detail_type,
        "source": "aws.ssm",
        "account": ACCOUNT,
        "time": datetime.now(UTC).isoformat(),
        "region": REGION,
        "resources": [],
        "detail": {"document-name": "SwapDocument", **detail},
    }


def _run(shim: moto_gaps.MotoGaps, release: Release, failing: str | None = None) -> None:
    """Hosts run the release's command; every status event goes to on-command-status."""
    command_id = release.command_id or ""
    targets = shim.targets(command_id)
    for iid in targets:
        cls = "health" if iid == failing else "none"
        status = "Failed" if failing == iid else "Success"
        shim.invocation(command_id, iid, status, summary_line(iid, release, cls))
        on_command_status(
            _envelope(
                "EC2 Command Invocation Status-change Notification",
                {"command-id": command_id, "instance-id": iid, "status": status},
            ),
            FakeContext(),
        )
    failed = failing is not None
    shim.command(command_id, "Failed" if failed else "Success", completed=len(targets), errors=int(failed))
    on_command_status(
        _envelope(
            "EC2 Command Status-change Notification",
            {"command-id": command_id, "status": "Failed" if failed else "Success"},
        ),
        FakeContext(),
    )


def drive_on_command_status(world: Any) -> None:
    """Success, a failure with auto-rollback, progress, and a launch swap completing its action."""
    with lifecycle(world) as shim:
        first = push(world, 1, "v1")
        _run(shim, first)
        second = push(world, 2, "v2")
        on_command_status(
            _envelope(
                "EC2 Command Invocation Status-change Notification",
                {
                    "command-id": second.command_id,
                    "instance-id": shim.targets(second.command_id or "")[0],
                    "status": "InProgress",
                },
            ),
            FakeContext(),
        )
        _run(shim, second, failing=shim.targets(second.command_id or "")[0])
        # a new instance's swap, tracked with its lifecycle token
        iid = shim.targets(second.command_id or "")[0]
        release = world.deps.releases.get(world.config.app, 1)
        command_id = world.deps.fleet.send_swap_to_instances(
            world.config, [iid], swap_parameters(world.config, release), "launch"
        )
        TrackedCommands(world.deps.clients.client("dynamodb"), world.deps.settings.host_outcomes_table).put(
            TrackedCommand(
                command_id=command_id,
                instance_id=iid,
                purpose=CommandPurpose.LAUNCH,
                app=world.config.app,
                release=3,
                group=world.config.auto_scaling_group,
                hook="deployer-launch",
                token="87654321-4321-4321-4321-210987654321",
            )
        )
        shim.invocation(command_id, iid, "Success", summary_line(iid, release))
        on_command_status(
            _envelope(
                "EC2 Command Invocation Status-change Notification",
                {"command-id": command_id, "instance-id": iid, "status": "Success"},
            ),
            FakeContext(),
        )
        on_command_status({"detail-type": "nope"}, FakeContext())


def drive_rollback(world: Any) -> None:
    """Rollback (default and refused), promote, cancel, pause, resume, status."""
    with lifecycle(world) as shim:
        succeed(world, shim, push(world, 1, "v1"))
        succeed(world, shim, push(world, 2, "v2"))
        rolled = rollback({"app": world.config.app, "reason": "bad"}, FakeContext())
        succeed(world, shim, world.deps.releases.get(world.config.app, rolled["release"]))
        with contextlib.suppress(Exception):
            rollback({"app": world.config.app, "to": "v9"}, FakeContext())
        rollback({"action": "promote", "app": world.config.app, "to": "v2"}, FakeContext())
        cancelled = rollback({"action": "cancel", "app": world.config.app, "reason": "wrong"}, FakeContext())
        succeed(world, shim, world.deps.releases.get(world.config.app, cancelled["rollback_release"]))
        rollback({"action": "pause", "app": world.config.app}, FakeContext())
        rollback({"action": "resume", "app": world.config.app}, FakeContext())
        # resume while a deploy runs: its converge reads the command, which failed (counts,
        # per-host StatusDetails, host outcomes for the notice, the rollback target's image)
        running = push(world, 7, "v7")
        rollback({"action": "resume", "app": world.config.app}, FakeContext())
        run_failing(world, shim, running)
        rollback({"action": "resume", "app": world.config.app}, FakeContext())
        rollback({"action": "status", "app": world.config.app}, FakeContext())


def drive_on_instance_launch(world: Any) -> None:
    """Not online yet (heartbeat, re-check queued), online (swap sent), unknown group (CONTINUE)."""
    queue = SETUP.client("sqs").create_queue(QueueName="LaunchRecheckQueue")["QueueUrl"]
    with lifecycle(world, {"LAUNCH_RECHECK_QUEUE_URL": queue}) as shim:
        first = push(world, 1, "v1")
        succeed(world, shim, first)
        event = copy.deepcopy(world.load_event("asg_instance_launch"))
        event["detail"]["AutoScalingGroupName"] = world.config.auto_scaling_group
        event["detail"]["EC2InstanceId"] = shim.targets(first.command_id or "")[0]
        on_instance_launch(event, FakeContext())
        shim.online.add(event["detail"]["EC2InstanceId"])
        on_instance_launch(event, FakeContext())
        # the launch swap's heartbeat, delivered by the delay queue
        tick = {
            "kind": "launch-heartbeat",
            "command_id": shim.commands()[-1].command_id,
            "instance_id": event["detail"]["EC2InstanceId"],
            "deadline": "2999-01-01T00:00:00Z",
        }
        on_instance_launch({"Records": [{"body": json.dumps(tick)}]}, FakeContext())
        other = copy.deepcopy(event)
        other["detail"]["AutoScalingGroupName"] = "another-asg"
        other["detail"]["NotificationMetadata"] = ""
        other["detail"]["LifecycleActionToken"] = "12345678-4321-4321-4321-210987654321"
        on_instance_launch(other, FakeContext())


def drive_reconciler(world: Any) -> None:
    """A missed push deployed, then host drift repaired."""
    with lifecycle(world) as shim:
        succeed(world, shim, push(world, 1, "v1"))
        time.sleep(1.1)  # moto records push times in whole seconds; v2 must be the newer one
        digest = "sha256:" + "2".rjust(64, "0")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "layers": [],
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            }
        )
        SETUP.client("ecr").put_image(
            repositoryName=world.config.repository, imageManifest=manifest, imageDigest=digest, imageTag="v2"
        )
        reconciler({"source": "aws.events"}, FakeContext())
        succeed(world, shim, world.deps.releases.get(world.config.app, 2))
        reconciler({"source": "aws.events"}, FakeContext())


LIFECYCLE_SCENARIOS = {
    "OnCommandStatusFunction": drive_on_command_status,
    "RollbackFunction": drive_rollback,
    "OnInstanceLaunchFunction": drive_on_instance_launch,
    "ReconcilerFunction": drive_reconciler,
}
