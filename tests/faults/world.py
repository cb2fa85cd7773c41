"""The world a fault case runs in: the lifecycle harness's moto world (tables from template.yaml, ECR,
an Auto Scaling group with its launch hook, SNS → SQS), driven only through the Lambda handlers in
functions/*/app.py, with simulated hosts that run what the swap commands carry.

The platform's own recovery is modelled here too: a failed or killed invocation is delivered again
(EventBridge / Lambda async retries; the operator's retry for direct invocations), running commands
complete (the hosts answer and SSM's events are delivered), and the reconciler ticks after the deploy
lock's lease has expired (the suite's clock is advanced, nothing sleeps).
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from deployer.agent_contract import EXIT_CODE_BY_CLASS, FailureClass
from deployer.settings import ENV_NAMES
from moto.ecr.models import ecr_backends
from moto.sqs.models import sqs_backends

from localcloud.aws import permissions
from localcloud.aws.ratecontrol import ERROR_STATUSES, command_status, invocation_status, max_errors
from tests.conftest import read_template
from tests.faults import CLOCK
from tests.faults.inject import Injector, InvocationDied
from tests.lifecycle import conftest as harness
from tests.lifecycle.conftest import Carried, SimHost, boot_flags

APP = "web"
GROUP = harness.GROUP
POINTER = f"/deployer/{APP}/release"
LEASE_SECONDS = 3600
# Lambda's asynchronous retries come about a minute apart; a function runs for at most 60 s.
RETRY_DELAY_SECONDS = 61
RETRIES = 2  # Lambda retries a failed asynchronous invocation twice, then gives up (dead letters)
RECONCILER_TICKS = 3
SETTLE_ROUNDS = 12

# Functions whose reserved concurrency is 1 (template.yaml): two deliveries never overlap.
SERIAL_FUNCTIONS = frozenset({"reconciler"})


@dataclass
class Delivery:
    """One event for one function: EventBridge's, a direct invocation's payload, or the schedule's."""

    function: str
    event: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.function}:{self.event.get('detail-type') or self.event.get('action') or 'invoke'}"


class Context:
    """The Lambda context the Powertools decorators read."""

    def __init__(self, function: str) -> None:
        self.function_name = function
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{harness.REGION}:{harness.ACCOUNT}:function:{function}"
        self.aws_request_id = f"req-{function}"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def _handler(name: str) -> Any:
    return importlib.import_module(f"functions.{name}.app").handler


_deserialize = TypeDeserializer().deserialize


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserialize(v) for k, v in item.items()}


class FaultWorld:
    def __init__(self, hosts: int = 3, auto_rollback: bool = True, injector: Injector | None = None) -> None:
        self.patch = pytest.MonkeyPatch()  # never undone: each world lives in its own process
        self.base = harness.build_world(self.patch, hosts=hosts, auto_rollback=auto_rollback)
        self.injector = injector or Injector()
        # Every handler's calls are checked against its own role (template.yaml), as on AWS.
        names = {"SwapDocument": harness.DOCUMENT, "TaskDocument": harness.TASK_DOCUMENT}
        enforcer = permissions.Enforcer(read_template(), harness.REGION, harness.ACCOUNT, names=names)
        self.enforcer = permissions.install(enforcer)
        settings = self.base.core.settings
        for name, env in ENV_NAMES.items():
            value = getattr(settings, name)
            os.environ[env] = "" if value is None else str(value)
        self.hosts = {iid: SimHost(release=None, image=None) for iid in self.base.instances}
        self.failed: list[Delivery] = []
        self.log: list[str] = []
        self.event_seq = 0
        self._messages: list[dict[str, Any]] = []
        self.mark_commands = 0
        # The release task: digests whose task fails, and how often each release's task ran on a host.
        self.task_fails: set[str] = set()
        self.task_runs: dict[int, int] = {}

    # -- invoking the functions ----------------------------------------------------------------
    def _run(self, delivery: Delivery) -> str:
        try:
            with self.enforcer.acting_as(permissions.logical_id(delivery.function)):
                handler = _handler(delivery.function)
                answer = handler(copy.deepcopy(delivery.event), Context(delivery.function))
        except InvocationDied as exc:
            self.log.append(f"{delivery.label} died: {exc}")
            return "died"
        except Exception as exc:  # any error fails the invocation, as on Lambda
            self.log.append(f"{delivery.label} failed: {traceback.format_exception_only(exc)[-1].strip()}")
            return "failed"
        self.log.append(f"{delivery.label} -> {json.dumps(answer, default=str)[:300]}")
        return "ok"

    def invoke(self, delivery: Delivery, *, injected: bool = False) -> str:
        """Run one delivery; a failed or killed one is kept for the platform's retry."""
        deferred: list[Delivery] = []
        if injected:
            # The reconciler's reserved concurrency is 1: its duplicate waits for the first run.
            if delivery.function in SERIAL_FUNCTIONS:
                self.injector.redeliver = lambda: deferred.append(delivery)
            else:
                self.injector.redeliver = lambda: self._duplicate(delivery)
            with self.injector.armed():
                result = self._run(delivery)
        else:
            result = self._run(delivery)
        if result != "ok":
            self.failed.append(delivery)
        for twin in deferred:
            self._duplicate(twin)
        return result

    def _duplicate(self, delivery: Delivery) -> None:
        twin = Delivery(delivery.function, copy.deepcopy(delivery.event))
        if self._run(twin) != "ok":
            self.failed.append(twin)

    def retry_failed(self) -> None:
        """Lambda's async retries (and an operator's re-run): each failed delivery, a minute later."""
        for _ in range(RETRIES):
            if not self.failed:
                return
            CLOCK.advance(RETRY_DELAY_SECONDS)
            again, self.failed = self.failed, []
            for delivery in again:
                if self._run(delivery) != "ok":
                    self.failed.append(delivery)
        for delivery in self.failed:  # dead letters: the platform gives up on them
            self.log.append(f"{delivery.label} dead-lettered")
        self.failed = []

    # -- events --------------------------------------------------------------------------------
    def _event_id(self) -> str:
        self.event_seq += 1
        return f"f0000000-0000-4000-8000-{self.event_seq:012d}"

    def push_event(self, digest: str, tag: str) -> Delivery:
        event = harness.load_event("ecr_image_push.json")
        event["id"] = self._event_id()
        # A second apart, in push order: the events say which push is the newest.
        event["time"] = (datetime.now(UTC) + timedelta(seconds=self.event_seq)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event["detail"].update(
            {"repository-name": harness.REPOSITORY, "image-digest": digest, "image-tag": tag}
        )
        return Delivery("on_image_push", event)

    def operator(self, sample: str, **changes: Any) -> Delivery:
        return Delivery("rollback", {**harness.load_event(sample), **changes})

    def schedule_event(self) -> Delivery:
        return Delivery(
            "reconciler",
            {
                "version": "0",
                "id": self._event_id(),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": harness.ACCOUNT,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": harness.REGION,
                "resources": [f"arn:aws:events:{harness.REGION}:{harness.ACCOUNT}:rule/ReconcileSchedule"],
                "detail": {},
            },
        )

    def launch_event(self, instance_id: str) -> Delivery:
        event = harness.load_event("asg_instance_launch.json")
        event["id"] = self._event_id()
        token = self.base.shim.lifecycle.token_for(instance_id, harness.LAUNCH_HOOK)
        event["detail"].update(
            {
                "EC2InstanceId": instance_id,
                "LifecycleActionToken": token,
                "AutoScalingGroupName": harness.GROUP,
            }
        )
        return Delivery("on_instance_launch", event)

    # -- setup helpers (uninjected, through the same handlers) ---------------------------------
    def image(self, n: int, tag: str) -> str:
        """Image n pushed to ECR, recorded (whole seconds, as ECR does) a second after the one before:
        the reconciler's "newest image" must not depend on how fast the set-up ran."""
        digest = self.base.image(n, tag)
        images = ecr_backends[harness.ACCOUNT][harness.REGION].repositories[harness.REPOSITORY].images
        earlier = [i.image_pushed_at for i in images if i.image_digest != digest]
        for image in images:
            if image.image_digest == digest and earlier:
                image.image_pushed_at = max(image.image_pushed_at, max(earlier) + 1)
        return digest

    def push(self, n: int, tag: str) -> str:
        digest = self.image(n, tag)
        assert self.invoke(self.push_event(digest, tag)) == "ok", self.log[-1]
        return digest

    def deploy(self, n: int, tag: str) -> str:
        """Push image n and let the fleet run it to the end."""
        digest = self.push(n, tag)
        self.settle()
        return digest

    def invoke_ok(self, delivery: Delivery) -> None:
        assert self.invoke(delivery) == "ok", self.log[-1]

    def set_release_task(self, argv: list[str]) -> None:
        """The app's config gains a release task (an operator's `deployer config put`)."""
        config = self.base.core.apps.get(APP)
        self.base.core.apps.put(config.model_copy(update={"release_task": tuple(argv)}))

    def set_stages(self, stages: list[dict[str, Any]]) -> None:
        """The app's config gains stages (an operator's `deployer config put`)."""
        config = self.base.core.apps.get(APP)
        rollout = config.rollout.model_dump()
        self.base.core.apps.put(
            type(config).parse({**config.to_document(), "rollout": {**rollout, "stages": stages}})
        )

    def put_proxy_metrics(
        self, release: int, seconds: int, requests: int, errors: int, p99_ms: float
    ) -> None:
        """What the hosts' meters send for `release` over the next `seconds` seconds (one flush a
        second; Latency as Values/Counts), straight to moto's CloudWatch."""
        dims = [{"Name": "App", "Value": APP}, {"Name": "Release", "Value": str(release)}]
        start = int(CLOCK.time())
        for second in range(start + 1, start + seconds + 1):
            stamp = datetime.fromtimestamp(second, UTC)
            common = {"Dimensions": dims, "Timestamp": stamp, "StorageResolution": 1}
            harness.client("cloudwatch").put_metric_data(
                Namespace="Deployer/Proxy",
                MetricData=[
                    {"MetricName": "Requests", "Value": requests, "Unit": "Count", **common},
                    {"MetricName": "Errors5xx", "Value": errors, "Unit": "Count", **common},
                    {
                        "MetricName": "Latency",
                        "Values": [p99_ms / 2, p99_ms],
                        "Counts": [float(requests - 1), 1.0],
                        "Unit": "Milliseconds",
                        **common,
                    },
                ],
            )
    def set_alarms(self, *names: str) -> None:
        """The app's config names alarm gates (each created OK in CloudWatch)."""
        for name in names:
            harness.client("cloudwatch").put_metric_alarm(
                AlarmName=name,
                Namespace="Deployer/Proxy",
                MetricName="Errors5xx",
                Dimensions=[{"Name": "App", "Value": APP}],
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=10,
                ComparisonOperator="GreaterThanThreshold",
            )
            self.set_alarm_state(name, "OK", "quiet")
        config = self.base.core.apps.get(APP)
        rollout = {**config.rollout.model_dump(), "alarms": list(names)}
        self.base.core.apps.put(type(config).parse({**config.to_document(), "rollout": rollout}))

    @staticmethod
    def set_alarm_state(name: str, state: str, reason: str) -> None:
        harness.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)

    def alarm_event(self, name: str, state: str = "ALARM") -> Delivery:
        """CloudWatch's documented state-change event for `name` (events/)."""
        event = harness.load_event("cloudwatch_alarm_state_change.json")
        event["id"] = self._event_id()
        event["account"], event["region"] = harness.ACCOUNT, harness.REGION
        event["resources"] = [f"arn:aws:cloudwatch:{harness.REGION}:{harness.ACCOUNT}:alarm:{name}"]
        event["detail"]["alarmName"] = name
        event["detail"]["state"]["value"] = state
        return Delivery("on_command_status", event)

    # -- the stage tick queue ------------------------------------------------------------------
    @staticmethod
    def _tick_queue() -> Any:
        return sqs_backends[harness.ACCOUNT][harness.REGION].queues["StageTickQueue"]

    def ticks(self) -> list[dict[str, Any]]:
        """Every tick the queue holds (delayed or not): its body and its DelaySeconds."""
        return [
            {**json.loads(m.body), "delay": round((m.delayed_until - m.sent_timestamp) / 1000)}
            for m in self._tick_queue()._messages
        ]

    def take_ticks(self) -> list[Delivery]:
        """The ticks the queue holds, each as the mapping delivers it (BatchSize 1), taken off the
        queue (as a handled batch is deleted): the tick that was due, whatever its delay."""
        queue = self._tick_queue()
        taken = list(queue._messages)
        queue._messages.clear()
        return [
            Delivery(
                "on_command_status",
                {"Records": [{"messageId": m.id, "body": m.body, "eventSource": "aws:sqs"}]},
            )
            for m in taken
        ]

    def scale_out(self) -> str:
        """One more instance: it waits in Pending:Wait and boots what its launch-template version says."""
        autoscaling = harness.client("autoscaling")
        before = set(self.group_instances())
        group = self.group()
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=harness.GROUP, DesiredCapacity=group["DesiredCapacity"] + 1
        )
        (new,) = set(self.group_instances()) - before
        release, image = self.launch_template_release()
        self.hosts[new] = SimHost(release=release, image=image)
        return new

    def register(self, instance_id: str) -> None:
        """The instance's SSM agent comes online; commands sent before never reach it."""
        self.hosts[instance_id].unregistered_for = {c.command_id for c in self.base.shim.commands()}
        self.base.shim.online.add(instance_id)

    def let_in_by_hand(self, instance_id: str) -> None:
        """An operator completes the launch action (CONTINUE) without any swap."""
        harness.client("autoscaling").complete_lifecycle_action(
            LifecycleHookName=harness.LAUNCH_HOOK,
            AutoScalingGroupName=harness.GROUP,
            LifecycleActionToken=self.base.shim.lifecycle.token_for(instance_id, harness.LAUNCH_HOOK),
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )

    def mark(self) -> None:
        """The end of setup: commands and notifications from here on belong to the flow."""
        self.mark_commands = len(self.base.shim.commands())
        self._messages = []
        harness.notifications(self.base)

    # -- the simulated fleet -------------------------------------------------------------------
    def run_hosts(self) -> list[Delivery]:
        """Every host runs the commands sent to it: it swaps to the image and release the command
        carries unless that image fails its health check there. Returns SSM's events, undelivered."""
        events: list[Delivery] = []
        in_group = set(self.group_instances())
        for command in self.base.shim.commands():
            if command.status != "Pending":
                continue
            if command.document_name == harness.TASK_DOCUMENT:
                events += self._run_task(command)
                continue
            carried = Carried.of(command)
            details = []
            for iid in sorted(command.instance_ids):
                host = self.hosts.get(iid)
                if host is None or iid not in in_group or command.command_id in host.unregistered_for:
                    detail = "Undeliverable"
                    self.base.shim.invocation(command.command_id, iid, detail, "", -1)
                else:
                    ok = carried.digest not in host.refuses
                    host.run(command.command_id, carried, ok)
                    cls = "none" if ok else "health"
                    detail = "Success" if ok else "Failed"
                    summary = harness.summary_line(
                        iid,
                        carried,
                        cls,
                        "GET /health answered 500 for 60s" if not ok else "",
                    )
                    code = int(EXIT_CODE_BY_CLASS[FailureClass(cls)])
                    self.base.shim.invocation(command.command_id, iid, detail, summary + "\n", code)
                details.append(detail)
                events.append(
                    Delivery(
                        "on_command_status",
                        self.base.invocation_event(command.command_id, iid, invocation_status(detail)),
                    )
                )
            allowed = max_errors(command.max_errors or "0", len(details))
            status = self.base.shim.command(
                command.command_id,
                command_status(details, allowed),
                completed=len(details),
                errors=sum(1 for d in details if d in ERROR_STATUSES),
                delivery_timed_out=details.count("Delivery Timed Out"),
            )
            events.append(Delivery("on_command_status", self.base.command_event(command.command_id, status)))
        return events

    def _run_task(self, command: Any) -> list[Delivery]:
        """The task's one host runs it: exit 0, or 3 for a digest in `task_fails`."""
        carried = Carried.of(command)
        (iid,) = command.instance_ids
        self.task_runs[carried.release] = self.task_runs.get(carried.release, 0) + 1
        code = 3 if carried.digest in self.task_fails else 0
        summary = json.dumps(
            {
                "agent": "deployer",
                "app": carried.app,
                "release": carried.release,
                "digest": carried.digest,
                "outcome": "task_succeeded" if code == 0 else "failed",
                "failure_class": "none" if code == 0 else "task",
                "exit_code": 0 if code == 0 else 9,
                "message": f"exit code {code}",
                "container_exit": code,
                "log_tail": ["migrating", "done" if code == 0 else "relation users does not exist"],
            }
        )
        detail = "Success" if code == 0 else "Failed"
        self.base.shim.invocation(command.command_id, iid, detail, summary + "\n", 0 if code == 0 else 9)
        status = self.base.shim.command(command.command_id, detail, completed=1, errors=int(code != 0))
        invocation = self.base.invocation_event(command.command_id, iid, invocation_status(detail))
        ended = self.base.command_event(command.command_id, status)
        for event in (invocation, ended):
            event["detail"]["document-name"] = harness.TASK_DOCUMENT
        return [Delivery("on_command_status", invocation), Delivery("on_command_status", ended)]

    def settle(self) -> None:
        """Let running commands finish and deliver their events (retrying failed deliveries)."""
        for _ in range(SETTLE_ROUNDS):
            events = self.run_hosts()
            if not events and not self.failed:
                return
            for delivery in events:
                self.invoke(delivery)
            self.retry_failed()

    def tick(self) -> None:
        """A reconciler run after the lock's lease has expired, then the fleet settles."""
        CLOCK.advance(LEASE_SECONDS + 1)
        self.invoke(self.schedule_event())
        self.retry_failed()
        self.settle()

    def recover(self) -> None:
        self.retry_failed()
        self.settle()
        for _ in range(RECONCILER_TICKS):
            self.tick()

    # -- observing the world -------------------------------------------------------------------
    def group(self) -> dict[str, Any]:
        groups = harness.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[harness.GROUP]
        )
        group: dict[str, Any] = groups["AutoScalingGroups"][0]
        return group

    def group_instances(self, state: str | None = None) -> list[str]:
        return sorted(
            i["InstanceId"]
            for i in self.group()["Instances"]
            if state is None or i["LifecycleState"] == state
        )

    def launch_template_release(self) -> tuple[int | None, str | None]:
        """The release and image the group's launch-template version boots (read from its user data)."""
        spec = self.group()["LaunchTemplate"]
        versions = harness.client("ec2").describe_launch_template_versions(
            LaunchTemplateId=spec["LaunchTemplateId"], Versions=[str(spec["Version"])]
        )["LaunchTemplateVersions"]
        encoded = versions[0]["LaunchTemplateData"].get("UserData") if versions else None
        if not encoded:
            return None, None
        flags = boot_flags(base64.b64decode(encoded).decode())
        if not flags:
            return None, None
        return int(flags["release"]), flags["image"]

    def pointer(self) -> dict[str, Any] | None:
        try:
            value = harness.client("ssm").get_parameter(Name=POINTER)["Parameter"]["Value"]
        except harness.client("ssm").exceptions.ParameterNotFound:
            return None
        data: dict[str, Any] = json.loads(value)
        return data

    def releases(self) -> list[dict[str, Any]]:
        items = harness.client("dynamodb").scan(TableName="ReleasesTable")["Items"]
        return sorted((_plain(i) for i in items), key=lambda r: int(r["release"]))

    def lock(self) -> dict[str, Any]:
        item = (
            harness.client("dynamodb")
            .get_item(TableName="AppStateTable", Key={"app": {"S": APP}})
            .get("Item")
        )
        return _plain(item) if item else {}

    def commands_since_mark(self) -> list[Any]:
        return self.base.shim.commands()[self.mark_commands :]

    def messages(self) -> list[dict[str, Any]]:
        self._messages += harness.notifications(self.base)
        return self._messages
