"""The lifecycle's moto world, built from the one harness's blocks (`tests/conftest.py`: tables
and the swap document from template.yaml, a fleet), plus an ECR repository with images, the
stack's launch hook, an SNS topic with an SQS subscription, and simulated hosts that run what the
swap commands carry, whose SSM results the tests decide (through `localcloud.moto_gaps`).

Observations read the world, never the test's own expectations: a host records the release and
image of the SendCommand parameters it received (`SimHost`, `Carried`), and `assert_agree`
reads the agent's boot line in the group's launch-template user data (`boot_flags`)."""

from __future__ import annotations

import functools
import inspect
import json
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3
import botocore.session
import pytest
from deployer.adapters.apps import AppsStore
from deployer.admission import accept_push
from deployer.agent_contract import EXIT_CODE_BY_CLASS, FailureClass
from deployer.entry.events import handle_command_status
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import Release
from deployer.settings import Settings
from deployer.wiring import Adapters
from moto import mock_aws

from localcloud import moto_gaps
from localcloud.aws import permissions
from localcloud.aws.ratecontrol import ERROR_STATUSES, command_status, invocation_status, max_errors
from tests.conftest import (
    ACCOUNT,
    GROUP,
    REGION,
    create_fleet,
    create_swap_document,
    create_tables,
    create_task_document,
    fake_aws_environment,
    read_event,
    read_template,
)

REPOSITORY = "web"
LAUNCH_TEMPLATE = "web-lt"
LAUNCH_HOOK = "deployer-launch"
DOCUMENT = "deployer-Swap"
TASK_DOCUMENT = "deployer-Task"

# The values SSM reports in `Status` and in its EventBridge events' `status`: botocore's enums.
# The finer StatusDetails values (Incomplete, Undeliverable, Delivery Timed Out, Terminated)
# never appear there.
_SSM_MODEL = botocore.session.get_session().get_service_model("ssm")
INVOCATION_STATUSES = frozenset(_SSM_MODEL.shape_for("CommandInvocationStatus").enum)
COMMAND_STATUSES = frozenset(_SSM_MODEL.shape_for("CommandStatus").enum)


_SESSION: list[boto3.session.Session] = []


def session() -> boto3.session.Session:
    """One boto3 session for every test of the process: botocore loads each service model once
    (moto resets boto3's default session on every mock start, which reloads them)."""
    if not _SESSION:
        _SESSION.append(boto3.session.Session(region_name=REGION))
    return _SESSION[0]


def client(service: str) -> Any:
    return session().client(service, region_name=REGION)  # type: ignore[call-overload]


def load_event(name: str) -> dict[str, Any]:
    """A sample event from events/ (`tests.conftest.read_event`, the one loader)."""
    return read_event(name.removesuffix(".json"))


def digest_of(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


class Ran(Protocol):
    """What an agent reports having run: a `Release`, or what a command carried (`Carried`)."""

    @property
    def app(self) -> str: ...
    @property
    def release(self) -> int: ...
    @property
    def digest(self) -> str: ...


def summary_line(
    instance_id: str,
    release: Ran,
    failure_class: str = "none",
    message: str = "",
    warning: str | None = None,
) -> str:
    """The agent's summary line; a `warning` (e.g. "cleanup") is a live host with exit 0."""
    ok = failure_class == "none"
    return json.dumps(
        {
            "agent": "deployer",
            "version": 1,
            "host": instance_id,
            "app": release.app,
            "release": release.release,
            "digest": release.digest,
            "outcome": "live" if ok else "failed",
            "failure_class": failure_class,
            "warning": warning,
            "exit_code": int(EXIT_CODE_BY_CLASS[FailureClass(failure_class)]),
            "message": message or ("live" if ok else f"{failure_class} failed"),
            "previous_release": None,
            "timings": {"total": 1.5},
            "pull_attempts": 1,
            "container_exit": None,
            "log_tail": ["GET /health 500"] if not ok else [],
        }
    )


# ------------------------------------------------------------------ what the world says
@dataclass(frozen=True)
class Carried:
    """What a swap command carries: its SendCommand parameters `app`, `release` and `image`, as
    the agent on a host reads them."""

    app: str
    release: int
    image: str
    keep_standby: bool = False  # `keepStandby` (a stage before the last)

    @property
    def digest(self) -> str:
        return self.image.rpartition("@")[2]

    @classmethod
    def of(cls, command: Any) -> Carried:
        """From moto's command (its `parameters`, as SendCommand received them)."""
        params = command.parameters
        return cls(
            app=params["app"][0],
            release=int(params["release"][0]),
            image=params["image"][0],
            keep_standby=params.get("keepStandby", ["false"])[0] == "true",
        )


@dataclass
class SimHost:
    """A host as the agent keeps it: the release and image it serves (from the last swap command
    it ran to the end), and every swap it was sent."""

    release: int | None = None
    image: str | None = None
    refuses: set[str] = field(default_factory=set)  # digests whose health check fails here
    # Commands sent before the host registered with SSM: SSM cannot deliver them (Undeliverable).
    unregistered_for: set[str] = field(default_factory=set)
    received: list[tuple[str, str, int, bool]] = field(default_factory=list)  # (command, digest, release, ok)
    # The image of the container kept running, drained, beside the live one (`keepStandby`).
    standby: str | None = None

    @property
    def digest(self) -> str | None:
        return self.image.rpartition("@")[2] if self.image else None

    def run(self, command_id: str, carried: Carried, ok: bool) -> None:
        """Run a swap command: record it; when it went live, serve what it carried."""
        self.received.append((command_id, carried.digest, carried.release, ok))
        if not ok:
            return
        # As the agent: with keepStandby the replaced image stays as the standby; without it the
        # host converges on the one live container (a switch back to the standby included).
        if not carried.keep_standby:
            self.standby = None
        elif self.image is not None and self.image != carried.image:
            self.standby = self.image
        self.release, self.image = carried.release, carried.image


def boot_flags(user_data: str) -> dict[str, str]:
    """The `--name=value` flags of the agent's boot line (`python3 .../agent.py boot ...`) in a
    launch-template user data script; {} when it has none."""
    lines = [line for line in user_data.splitlines() if "agent.py" in line and " boot " in line]
    assert len(lines) <= 1, f"more than one boot line in the user data: {lines}"
    words = shlex.split(lines[0]) if lines else []
    if "boot" not in words:
        return {}
    flags = [w[2:].partition("=") for w in words[words.index("boot") + 1 :] if w.startswith("--")]
    return {name: value for name, sep, value in flags if sep}


def assert_boots(user_data: str, release: int, image: str) -> None:
    """The user data boots exactly `release` with exactly `image` (not a substring match)."""
    flags = boot_flags(user_data)
    booted = (flags.get("release"), flags.get("image"))
    assert booted == (str(release), image), f"user data boots {booted}, expected {(str(release), image)}"


@dataclass
class World:
    core: Adapters
    ld: Adapters
    shim: moto_gaps.MotoGaps
    config: AppConfig
    topic_arn: str
    queue_url: str
    instances: list[str]
    # the simulated hosts: instance id -> what it serves and what it was sent
    hosts: dict[str, SimHost] = field(default_factory=dict)
    pushes: int = 0
    event_seq: int = 0

    @property
    def running(self) -> dict[str, str]:
        """What each serving host runs: instance id -> digest (from the commands it ran)."""
        return {iid: host.digest for iid, host in self.hosts.items() if host.digest}

    # -- ECR ------------------------------------------------------------------------------
    def image(self, n: int, tag: str | None = None) -> str:
        digest = digest_of(n)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "layers": [],
                "config": {"digest": digest, "size": n},
            }
        )
        kwargs: dict[str, Any] = {
            "repositoryName": REPOSITORY,
            "imageManifest": manifest,
            "imageDigest": digest,
        }
        if tag:
            kwargs["imageTag"] = tag
        client("ecr").put_image(**kwargs)
        return digest

    def push_event(self, digest: str, tag: str | None) -> dict[str, Any]:
        self.pushes += 1
        detail: dict[str, Any] = {
            "result": "SUCCESS",
            "repository-name": REPOSITORY,
            "image-digest": digest,
            "action-type": "PUSH",
        }
        if tag:
            detail["image-tag"] = tag
        return {
            "version": "0",
            "id": f"00000000-0000-4000-8000-{self.pushes:012d}",
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": ACCOUNT,
            "time": datetime.now(UTC).isoformat(),
            "region": REGION,
            "resources": [],
            "detail": detail,
        }

    def push(self, n: int, tag: str | None = None) -> Release:
        """Push image n to ECR and deliver its push event; returns the release it recorded."""
        digest = self.image(n, tag)
        outcome = accept_push(self.core, parse_push_event(self.push_event(digest, tag)))
        number = outcome.results[0].release
        assert number is not None, outcome
        return self.release(number)

    def release(self, number: int) -> Release:
        return self.core.releases.get(self.config.app, number)

    # -- SSM events -----------------------------------------------------------------------
    def _from_sample(self, sample: str, detail: dict[str, Any]) -> dict[str, Any]:
        """AWS's documented sample event (events/) for this world's command: only the ids, the
        document, the time and the status differ."""
        self.event_seq += 1
        event = load_event(sample)
        event["id"] = f"10000000-0000-4000-8000-{self.event_seq:012d}"
        event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event["region"] = REGION
        event["account"] = ACCOUNT
        event["detail"].update({"document-name": DOCUMENT, **detail})
        return event

    def invocation_event(self, command_id: str, instance_id: str, status: str) -> dict[str, Any]:
        """An invocation's event; `status` is SSM's coarse Status, never a StatusDetails value."""
        assert status in INVOCATION_STATUSES, f"{status!r} is not a Status SSM puts in an event"
        event = self._from_sample(
            "ssm_command_invocation_success.json",
            {"command-id": command_id, "instance-id": instance_id, "status": status},
        )
        event["resources"] = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"]
        return event

    def command_event(self, command_id: str, status: str) -> dict[str, Any]:
        """A command's event; `status` is SSM's coarse Status, never a StatusDetails value."""
        assert status in COMMAND_STATUSES, f"{status!r} is not a Status SSM puts in an event"
        return self._from_sample(
            "ssm_command_status_success.json", {"command-id": command_id, "status": status}
        )

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        return handle_command_status(self.ld, event)

    def run_command(
        self,
        release: Release,
        failures: dict[str, str] | None = None,
        unreached: tuple[str, ...] = (),
        *,
        not_run: dict[str, str] | None = None,
        warnings: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Let the simulated hosts run `release`'s command: record every invocation's result in
        moto and return (invocation events, command event) without delivering them. Each host
        runs what the command carries (its `app`, `release` and `image` parameters), whatever
        `release` the test expects; `release` only names the command.

        `failures`: host -> the agent's failure class; `unreached`: hosts whose invocation ends
        Delivery Timed Out; `not_run`: host -> the StatusDetails of an invocation that never ran
        (Undeliverable, Delivery Timed Out, Terminated); `warnings`: host -> the warning of a
        host that went live (exit 0). The command's StatusDetails follows SSM's rules for the
        app's MaxErrors (`localcloud.aws.ratecontrol`); every event carries the coarse Status."""
        failures = failures or {}
        skipped = dict.fromkeys(unreached, "Delivery Timed Out") | (not_run or {})
        warnings = warnings or {}
        command_id = release.command_id
        assert command_id, f"release {release.release} has no command"
        carried = Carried.of(self.shim.find(command_id))
        invocation_events = []
        details = []
        for iid in self.shim.targets(command_id):
            if iid in skipped:
                detail = skipped[iid]
                self.shim.invocation(command_id, iid, detail, "", -1)
            else:
                cls = failures.get(iid, "none")
                line = summary_line(
                    iid,
                    carried,
                    cls,
                    "GET /health answered 500 for 60s" if cls == "health" else "",
                    warning=warnings.get(iid),
                )
                self.hosts.setdefault(iid, SimHost()).run(command_id, carried, ok=cls == "none")
                detail = "Success" if cls == "none" else "Failed"
                code = int(EXIT_CODE_BY_CLASS[FailureClass(cls)])
                self.shim.invocation(command_id, iid, detail, line + "\n", code)
            details.append(detail)
            invocation_events.append(self.invocation_event(command_id, iid, invocation_status(detail)))
        allowed = max_errors(self.config.rollout.max_errors, len(details))
        command_detail = command_status(details, allowed)
        status = self.shim.command(
            command_id,
            command_detail,
            completed=len(details),
            errors=sum(1 for d in details if d in ERROR_STATUSES),
            delivery_timed_out=details.count("Delivery Timed Out"),
        )
        return invocation_events, [self.command_event(command_id, status)]

    def complete(self, release: Release, failures: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the release's command and deliver its events in order; the command event's answer."""
        invocations, commands = self.run_command(release, failures)
        for event in invocations:
            self.deliver(event)
        return self.deliver(commands[0])

    # -- invariant ------------------------------------------------------------------------
    def assert_agree(self) -> Release:
        """The pointer, the group's launch-template version, what that version boots (the
        agent's `--release=` and `--image=` in its user data) and what every serving host runs
        (from the commands it ran) name the same release and image, exactly."""
        pointer = self.core.pointer.get(self.config.app)
        assert pointer is not None
        release = self.release(pointer.release)
        assert (release.image, release.digest) == (pointer.image, pointer.digest), (release, pointer)
        group = self.core.launch_templates.current(self.config)
        assert group.version == release.launch_template_version, (group.version, release)
        user_data = self.core.launch_templates.user_data(group.template_id, group.version) or ""
        assert_boots(user_data, pointer.release, pointer.image)
        serving = {iid: (h.release, h.image) for iid, h in self.hosts.items() if h.image}
        assert serving, "no host serves anything"
        assert set(serving.values()) == {(pointer.release, pointer.image)}, (
            f"hosts serve {serving}, the pointer says {(pointer.release, pointer.image)}"
        )
        return release


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_environment(monkeypatch)


def _entry_roles() -> dict[Any, str]:
    """The core entry points the lifecycle tests run, and the function whose role each runs
    under on AWS (functions/*/app.py)."""
    from deployer import operations  # noqa: PLC0415
    from deployer.entry.events import (  # noqa: PLC0415
        handle_instance_launch,
        handle_operation,
        handle_reconcile,
    )
    from deployer.entry.push import handle_push_event  # noqa: PLC0415
    from deployer.reconcile import reconcile_app  # noqa: PLC0415

    return {
        accept_push: "OnImagePushFunction",
        handle_push_event: "OnImagePushFunction",
        handle_command_status: "OnCommandStatusFunction",
        handle_instance_launch: "OnInstanceLaunchFunction",
        handle_reconcile: "ReconcilerFunction",
        reconcile_app: "ReconcilerFunction",
        handle_operation: "RollbackFunction",
        operations.run: "RollbackFunction",
    }


@pytest.fixture(autouse=True)
def enforced(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[permissions.Enforcer]:
    """Every entry point a lifecycle test runs makes its AWS calls under its function's role as
    template.yaml defines it (`localcloud.aws.permissions`), refused as AWS refuses them; the
    test's own calls (setting up, observing) are not checked. A refused call fails the test."""
    enforcer = permissions.install(
        permissions.Enforcer(
            read_template(), REGION, ACCOUNT, names={"SwapDocument": DOCUMENT, "TaskDocument": TASK_DOCUMENT}
        )
    )
    roles = _entry_roles()

    def as_role(entry: Any, function: str) -> Any:
        @functools.wraps(entry)
        def run(*args: Any, **kwargs: Any) -> Any:
            with enforcer.acting_as(function):
                return entry(*args, **kwargs)

        return run

    for module in {sys.modules[__name__], request.module}:
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and value in roles:
                monkeypatch.setattr(module, name, as_role(value, roles[value]))
    try:
        yield enforcer
    finally:
        permissions.uninstall()
    assert enforcer.denied == [], f"calls the functions' roles do not allow: {enforcer.denied}"


def build_world(monkeypatch: pytest.MonkeyPatch, hosts: int = 3, auto_rollback: bool = True) -> World:
    """The lifecycle's world in moto (inside `mock_aws`), from the one harness's blocks."""
    shim = moto_gaps.install(monkeypatch)
    template = read_template()
    tables = create_tables(template, clients=client)
    create_swap_document(template, name=DOCUMENT, clients=client)
    create_task_document(template, name=TASK_DOCUMENT, clients=client)
    client("ecr").create_repository(repositoryName=REPOSITORY)
    fleet = create_fleet(
        hosts,
        GROUP,
        launch_template=LAUNCH_TEMPLATE,
        min_size=0,
        max_size=max(hosts, 1) * 2,
        clients=client,
    )
    # The stack's launch hook (template.yaml LaunchHook): later launches wait in Pending:Wait.
    client("autoscaling").put_lifecycle_hook(
        LifecycleHookName=LAUNCH_HOOK,
        AutoScalingGroupName=GROUP,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=900,
        DefaultResult="ABANDON",
        NotificationMetadata=json.dumps({"app": "web"}),
    )
    topic_arn = client("sns").create_topic(Name="DeployNotificationsTopic")["TopicArn"]
    # The delay queue on-instance-launch schedules its re-checks and swap heartbeats on.
    recheck_queue = client("sqs").create_queue(QueueName="LaunchRecheckQueue")["QueueUrl"]
    # The stage tick delay queue on-command-status consumes (template.yaml StageTickQueue).
    tick_queue = client("sqs").create_queue(QueueName="StageTickQueue")["QueueUrl"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns").subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    settings = Settings(
        apps_table=tables["AppsTable"],
        app_state_table=tables["AppStateTable"],
        releases_table=tables["ReleasesTable"],
        host_outcomes_table=tables["HostOutcomesTable"],
        idempotency_table=tables["IdempotencyTable"],
        swap_document_name=DOCUMENT,
        task_document_name=TASK_DOCUMENT,
        command_log_group="/deployer/commands",
        notification_topic_arn=topic_arn,
        launch_recheck_queue_url=recheck_queue,
        stage_tick_queue_url=tick_queue,
        region=REGION,
    )
    core = Adapters.from_settings(settings, session=session())
    config = AppConfig.parse(
        {
            "app": "web",
            "repository": REPOSITORY,
            "auto_scaling_group": GROUP,
            "launch_template": LAUNCH_TEMPLATE,
            "container": {"port": 8080, "health_path": "/health"},
            "auto_rollback": auto_rollback,
        }
    )
    AppsStore(core.clients.client("dynamodb"), settings.apps_table).put(config)
    ld = core
    return World(
        core=core,
        ld=ld,
        shim=shim,
        config=config,
        topic_arn=topic_arn,
        queue_url=queue_url,
        instances=fleet.instance_ids,
        hosts={iid: SimHost() for iid in fleet.instance_ids},
    )


@pytest.fixture
def world(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    with mock_aws():
        yield build_world(monkeypatch)


@pytest.fixture
def world_no_rollback(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    with mock_aws():
        yield build_world(monkeypatch, auto_rollback=False)


def notifications(world: World) -> list[dict[str, Any]]:
    sqs = client("sqs")
    out = []
    while True:
        r = sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10)
        msgs = r.get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=world.queue_url, ReceiptHandle=m["ReceiptHandle"])


def snapshot(world: World) -> dict[str, Any]:
    """Everything an operator action could change, to assert that a refused one changed nothing."""
    core = world.core
    pointer = core.pointer.get(world.config.app)
    state = core.state.get(world.config.app)
    group = core.launch_templates.current(world.config)
    versions = client("ec2").describe_launch_template_versions(LaunchTemplateId=group.template_id)[
        "LaunchTemplateVersions"
    ]
    return {
        "releases": [(r.release, r.status.value, r.digest) for r in core.releases.list_recent("web", 100)],
        "pointer": pointer.model_dump(mode="json") if pointer else None,
        "lock": (state.lock_owner, state.last_release, state.paused, sorted(state.refused_digests)),
        "group_version": group.version,
        "template_versions": len(versions),
        "commands": len(world.shim.commands()),
    }
