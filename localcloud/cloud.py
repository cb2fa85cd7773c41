"""The local cloud: the stack of the deployable template (build/template.yaml) on this machine.

`LocalCloud` wires the stand-ins together:
- AWS APIs: an in-process moto server on 127.0.0.1 (`localcloud.aws.motoserver`) with the gaps
  filled (`localcloud.moto_gaps`, `localcloud.aws.invoke_gap`);
- the stack: deployed as AWS would (`localcloud.aws.stack`: package, SAM transform, CloudFormation
  `create_stack`, then `localcloud.aws.cfn_gaps`); every stand-in acts on what the stack created;
- EventBridge: `localcloud.aws.eventbridge` with the stack's rules, read with the events API;
- Lambda: `localcloud.aws.lambdas`, one warm worker process per function of the stack;
- ECR: the Debian registry (`localcloud.hosts.registry`); `push()` builds an image, pushes it, stores
  the same manifest in moto's repository and emits the ECR push event with the real digest;
- CloudWatch alarms: `localcloud.aws.alarms` evaluates moto's metric alarms against moto's metric
  data and emits their state-change events on the bus;
- EC2 / Auto Scaling / SSM: `localcloud.aws.fleet` (hosts are `HostSandbox`es booting the real user
  data) and `localcloud.aws.ssm_agent` (runs the real document on them).
Development tooling only: no Lambda code imports it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcloud import moto_gaps
from localcloud.aws import invoke_gap, permissions
from localcloud.aws.alarms import AlarmStandIn
from localcloud.aws.eventbridge import Delivery, EventBus, envelope
from localcloud.aws.fleet import Fleet
from localcloud.aws.host_gate import HostGate, customer_key_reads, secret_arns
from localcloud.aws.host_role import HOST_ROLE, create_host_role
from localcloud.aws.lambdas import LambdaService
from localcloud.aws.motoserver import ACCOUNT, MotoServer
from localcloud.aws.push_events import PushEvents
from localcloud.aws.sqs_source import SqsSource
from localcloud.aws.ssm_agent import CommandRun, SsmAgents
from localcloud.aws.stack import Stack, deploy
from localcloud.hosts.images import build_app_image, push_image, remove_images
from localcloud.hosts.registry import Registry
from tools.render_template import ensure_built

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def pad_image(tag: str, megabytes: int) -> str:
    """Rebuild `tag` with an extra layer of `megabytes` of random data (a realistically sized
    app image for benchmarks); returns the new image id, tagged `tag`."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="localcloud-pad-") as tmp:
        with open(Path(tmp) / "pad.bin", "wb") as f:
            for _ in range(megabytes):
                f.write(os.urandom(1024 * 1024))
        (Path(tmp) / "Dockerfile").write_text(f"FROM {tag}\nCOPY pad.bin /pad.bin\n")
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        subprocess.run(["docker", "build", "-q", "-t", tag, tmp], check=True, capture_output=True, env=env)
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@dataclass
class Pushed:
    repository: str
    tag: str
    digest: str
    reference: str
    image_id: str
    kind: str
    event: dict[str, Any]


class Timeline:
    """A readable, timestamped log of what the cloud did."""

    def __init__(self, echo: bool = False, stream: Any = None) -> None:
        self.start = time.monotonic()
        self.echo = echo
        self.stream = stream or sys.stdout
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        t = time.monotonic() - self.start
        with self._lock:
            self.lines.append((t, text))
            if self.echo:
                print(f"  [{t:6.1f}s] {text}", file=self.stream, flush=True)


class LocalCloud:
    def __init__(
        self,
        root_dir: str | Path | None = None,
        template: str | Path | None = None,
        stack: str = "deployer",
        timeline: Timeline | None = None,
        sandbox_settings: dict[str, Any] | None = None,
        *,
        parameters: dict[str, str] | None = None,
        registry_events: bool = False,
    ) -> None:
        """`registry_events`: a `docker push` to the registry emits ECR's push event
        (`localcloud.aws.push_events`; the playground). Leave it off where `push()` is used: it
        mirrors and emits itself."""
        self._own_root = root_dir is None
        self.root = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="localcloud-"))
        # By default the rendered template, so the hosts run the current host/agent.py.
        self.template_path = Path(template) if template is not None else ensure_built()
        self.stack_name = stack
        self.parameters = dict(parameters or {})
        self.registry_events = registry_events
        self.push_events: PushEvents | None = None
        self.log = timeline or Timeline()
        # The boot reads the pointer with the aws CLI, which takes seconds on a loaded 2-core
        # machine; a real host answers faster. Give it room so boots do not fall back needlessly.
        self.sandbox_settings = {"pointer_timeout": 30, **(sandbox_settings or {})}
        self.moto = MotoServer()
        self.registry: Registry | None = None
        self.stack: Stack | None = None
        self.lambdas: LambdaService | None = None
        self.bus: EventBus | None = None
        self.fleet: Fleet | None = None
        self.ssm: SsmAgents | None = None
        self.gate: HostGate | None = None
        self._iam: Any = None
        self.pushed: list[Pushed] = []
        self.sqs_sources: list[SqsSource] = []
        self.alarms: AlarmStandIn | None = None
        self._built: list[str] = []
        self._started = False
        self._gaps = False
        self._invoke_gap = False

    # -- permissions ---------------------------------------------------------------------
    def _write_roles(self, stk: Stack) -> Path:
        """Each function's role as the stack created it in IAM (CloudFormation resolved its
        ARNs), for the workers' permission checks (`localcloud.aws.permissions`)."""
        roles = self.root / "roles"
        roles.mkdir(parents=True, exist_ok=True)
        iam, lam, sns = self.moto.client("iam"), self.moto.client("lambda"), self.moto.client("sns")
        topic_keys = {}
        for topic in stk.of_type("AWS::SNS::Topic").values():
            key = sns.get_topic_attributes(TopicArn=topic)["Attributes"].get("KmsMasterKeyId")
            if key and not key.startswith("alias/aws/"):
                arn = key if key.startswith("arn:") else f"arn:aws:kms:{self.moto.region}:{ACCOUNT}:key/{key}"
                topic_keys[topic] = arn
        for lid, fn in stk.functions.items():
            role = lam.get_function(FunctionName=fn.name)["Configuration"]["Role"].rsplit("/", 1)[-1]
            document = {
                "function": lid,
                "statements": permissions.role_statements(iam, role),
                "region": self.moto.region,
                "account": ACCOUNT,
                "topic_keys": topic_keys,
                "denied_log": str(roles / "denied.log"),
            }
            (roles / f"{lid}.json").write_text(json.dumps(document, indent=1))
        return roles

    def _host_role(self) -> permissions.RoleCheck | None:
        """The hosts' role (README; `localcloud.aws.host_role`) for the SSM agent's own calls."""
        if self._iam is None:
            self._iam = self.moto.client("iam")
        iam = self._iam
        try:
            statements = permissions.role_statements(iam, HOST_ROLE)
        except iam.exceptions.NoSuchEntityException:
            return None
        return permissions.RoleCheck(HOST_ROLE, statements, self.moto.region, ACCOUNT)

    def denied(self) -> list[str]:
        """Every call a function's or a host's role refused so far (one line each)."""
        log = self.root / "roles" / "denied.log"
        functions = log.read_text().splitlines() if log.exists() else []
        agents = list(self.ssm.denied) if self.ssm is not None else []
        return functions + agents + (list(self.gate.denied) if self.gate is not None else [])

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> LocalCloud:
        moto_gaps.install_process_wide()
        self._gaps = True
        self.moto.start()
        self.log(f"moto server on {self.moto.endpoint}")
        self.stack = stk = deploy(self.moto, self.template_path, self.stack_name, self.parameters)
        self.log(
            f"stack {stk.name} {stk.status}: {len(stk.physical)} resources; "
            f"{len(stk.gap_filled)} filled in by localcloud.aws.cfn_gaps"
        )
        if stk.outputs.get("HostPolicyArn"):
            create_host_role(self.moto.client("iam"), stk.outputs["HostPolicyArn"])
        for topic in stk.of_type("AWS::SNS::Topic").values():
            self.notifications_queue(topic)
        notify_url = None
        if self.registry_events:
            self.push_events = PushEvents(self._registry_push).start()
            notify_url = self.push_events.url
        self.registry = Registry(self.root / "registry", notify_url=notify_url).start()
        self.log(f"registry on {self.registry.address}")
        self.lambdas = LambdaService(
            stk.functions,
            self.moto.env(),
            self.root / "logs",
            extra_env={"LOCALCLOUD_ACCOUNT": ACCOUNT},
            roles_dir=self._write_roles(stk),
        )
        invoke_gap.install(self.lambdas)
        self._invoke_gap = True
        # Every host process (boot script, swap, diagnose, the launch hook's swap) reaches AWS
        # through the gate, under the hosts' role (read from IAM on each call).
        self.gate = HostGate(
            self.moto.endpoint,
            self._host_role,
            ACCOUNT,
            resolve=secret_arns(self.moto.client("secretsmanager")),
            implied=customer_key_reads(
                self.moto.client("ssm"), self.moto.client("secretsmanager"), self.moto.client("kms")
            ),
            log=self.root / "roles" / "host-denied.log",
        ).start()
        self.log(f"hosts' AWS endpoint {self.gate.endpoint} (calls checked against role {HOST_ROLE})")
        self.bus = EventBus(stk.rules, self.lambdas)
        self.bus.listeners.append(self._on_delivery)
        self.fleet = Fleet(
            self.moto, self.root / "hosts", self.bus, self.host_env, sandbox_settings=self.sandbox_settings
        )
        self.ssm = SsmAgents(
            ACCOUNT,
            self.moto.region,
            stk.documents,
            self.fleet.host_for,
            host_env=self.host_env,
            bus=self.bus,
            logs_client=self.moto.client("logs"),
            host_role=self._host_role(),
        )
        self.ssm.listeners.append(self._on_command)
        self.ssm.start()
        sqs = self.moto.client("sqs")
        for mapping in stk.sqs_mappings:
            src = SqsSource(
                sqs,
                mapping.queue_url,
                mapping.queue_arn,
                mapping.function,
                self.lambdas,
                batch_size=mapping.batch_size,
                region=self.moto.region,
            )
            self.sqs_sources.append(src.start())
        # Users' metric alarms are evaluated and their state changes go through the stack's rules.
        self.alarms = AlarmStandIn(
            self.moto.client("cloudwatch"), self.bus, region=self.moto.region, account=ACCOUNT
        ).start()
        self.lambdas.warm(*stk.functions)
        self._started = True
        return self

    def stop(self) -> None:
        """Remove everything this cloud started: hosts, containers, nginx, registry, moto."""
        if self.alarms:
            self.alarms.stop()
        for src in self.sqs_sources:
            src.stop()
        if self.ssm:
            self.ssm.stop()
        if self.bus:
            self.bus.close()
        if self.fleet:
            self.fleet.teardown()
        if self.gate:
            self.gate.stop()
        if self._invoke_gap:
            invoke_gap.uninstall()
            self._invoke_gap = False
        if self.lambdas:
            self.lambdas.close()
        if self.registry:
            self.registry.stop()
        if self.push_events:
            self.push_events.stop()
        remove_images(self._built)
        self._remove_pulled_images()
        self.moto.stop()
        if self._gaps:
            moto_gaps.uninstall_process_wide()
            self._gaps = False
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self._started = False

    def _remove_pulled_images(self) -> None:
        import subprocess  # noqa: PLC0415

        if self.registry is None:
            return
        out = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}@{{.Digest}} {{.ID}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        ids = [
            line.split()[1]
            for line in out.splitlines()
            if line.startswith(self.registry.address + "/") or line.startswith(self.registry.push_address)
        ]
        remove_images(sorted(set(ids)))

    def __enter__(self) -> LocalCloud:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- stack ---------------------------------------------------------------------------
    def notifications_queue(self, topic_arn: str) -> str:
        """Subscribe an SQS queue to a topic so tests and the demo can read the notifications."""
        sqs = self.moto.client("sqs")
        name = "localcloud-" + topic_arn.rsplit(":", 1)[1]
        url = sqs.create_queue(QueueName=name[:80])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.moto.client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        return url

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification published so far (each SNS topic of the stack)."""
        sqs = self.moto.client("sqs")
        out: list[dict[str, Any]] = []
        for url in sqs.list_queues(QueueNamePrefix="localcloud-").get("QueueUrls", []):
            while True:
                msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                if not msgs:
                    break
                for m in msgs:
                    try:
                        out.append(json.loads(m["Body"]))
                    except ValueError:
                        out.append({"raw": m["Body"]})
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return out

    def host_env(self, sandbox: Any) -> dict[str, str]:
        """What a host's processes see: its settings file and its instance-profile credentials,
        whose calls the gate checks against the hosts' role."""
        gated = self.gate.credentials(sandbox.host_id) if self.gate is not None else {}
        return {**self.moto.env(), **gated, "DEPLOYER_HOST_CONFIG": str(sandbox.config_path)}

    # -- apps ----------------------------------------------------------------------------
    def create_app(
        self,
        app: str = "web",
        *,
        repository: str | None = None,
        port: int | None = None,
        max_concurrency: str = "1",
        max_errors: str = "0",
        auto_rollback: bool = True,
        retain: int = 3,
        health_timeout: int = 15,
        command_timeout: int = 120,
        lifecycle_hook: bool | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """ECR repository, launch template, an empty Auto Scaling group (with the launch hook)
        and the app's config in the apps table, as an operator would set them up."""
        assert self.registry is not None
        assert self.stack is not None
        from localcloud.hosts.sandbox import free_port  # noqa: PLC0415

        repository = repository or app
        group = f"{app}-asg"
        lt = f"{app}-lt"
        self.moto.client("ecr").create_repository(repositoryName=repository)
        ec2 = self.moto.client("ec2")
        ec2.create_launch_template(
            LaunchTemplateName=lt,
            LaunchTemplateData={
                "ImageId": "ami-12c6146b",
                "InstanceType": "t3.micro",
                "IamInstanceProfile": {"Name": "deployer-host"},
            },
        )
        asg = self.moto.client("autoscaling")
        asg.create_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateName": lt, "Version": "1"},
            MinSize=0,
            MaxSize=20,
            DesiredCapacity=0,
            AvailabilityZones=[f"{self.moto.region}a"],
        )
        hook_name = str(self.stack.parameters.get("LaunchHookName") or f"{self.stack_name}-launch")
        if lifecycle_hook is None:  # only when the stack handles the launch event
            assert self.bus is not None
            probe = envelope(
                "EC2 Instance-launch Lifecycle Action",
                "aws.autoscaling",
                {
                    "AutoScalingGroupName": group,
                    "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                    "EC2InstanceId": "i-0123456789abcdef0",
                    "LifecycleHookName": hook_name,
                    "LifecycleActionToken": "00000000-0000-0000-0000-000000000000",
                },
                region=self.moto.region,
            )
            lifecycle_hook = bool(self.bus.matching_rules(probe))
        if lifecycle_hook:
            asg.put_lifecycle_hook(
                LifecycleHookName=hook_name,
                AutoScalingGroupName=group,
                LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                HeartbeatTimeout=300,
                DefaultResult="ABANDON",
                NotificationMetadata=json.dumps({"app": app}),
            )
        config = {
            "app": app,
            "repository": repository,
            "registry": self.registry.address,
            "registry_login": "none",
            "auto_scaling_group": group,
            "launch_template": lt,
            "container": {
                "port": port or free_port(),
                "health_path": "/health",
                "health_timeout": health_timeout,
            },
            "rollout": {
                "max_concurrency": max_concurrency,
                "max_errors": max_errors,
                "command_timeout": command_timeout,
            },
            "auto_rollback": auto_rollback,
            "retain": retain,
        }
        config.update(overrides)
        self.put_app(config)
        self.log(f"app {app}: repository {repository}, group {group}, launch template {lt}")
        return config

    def put_app(self, config: dict[str, Any]) -> None:
        from deployer.adapters.apps import AppsStore  # noqa: PLC0415
        from deployer.models.config import AppConfig  # noqa: PLC0415

        assert self.stack is not None
        table = self.stack.physical["AppsTable"]
        AppsStore(self.moto.client("dynamodb"), table).put(AppConfig.parse(config))

    # -- ECR -----------------------------------------------------------------------------
    def push(
        self,
        repository: str,
        tag: str,
        release: int,
        *,
        kind: str = "good",
        app: str = "web",
        emit: bool = True,
        slow_seconds: float = 3.0,
        pad_mb: int = 0,
    ) -> Pushed:
        """Build a test image, push it to the registry, mirror it into moto's ECR, and (unless
        `emit` is False, a lost event) emit the ECR push event."""
        assert self.registry is not None
        assert self.bus is not None
        local = f"localcloud/{repository}:{tag}-{release}-{kind}"
        image_id = build_app_image(local, release, kind=kind, app=app, slow_seconds=slow_seconds)
        self._built.append(image_id)
        if pad_mb:
            image_id = pad_image(local, pad_mb)
            self._built.append(image_id)
        digest = push_image(local, self.registry.push_address, repository)
        manifest, media_type = self._manifest(repository, digest)
        ecr = self.moto.client("ecr")
        ecr.put_image(
            repositoryName=repository,
            imageManifest=manifest,
            imageManifestMediaType=media_type,
            imageTag=tag,
            imageDigest=digest,
        )
        # Hosts must pull it: drop the local copy (the cloud removes pulled images at the end).
        remove_images([image_id])
        event = self._push_event(repository, digest, tag)
        pushed = Pushed(
            repository, tag, digest, f"{self.registry.address}/{repository}@{digest}", image_id, kind, event
        )
        self.pushed.append(pushed)
        self.log(f"pushed {repository}:{tag} ({kind}) {digest[:19]}…" + ("" if emit else " (no event sent)"))
        if emit:
            self.bus.put_event(event)
        return pushed

    def _registry_push(self, repository: str, tag: str, digest: str) -> None:
        """A `docker push` reached the registry: mirror it into ECR and emit ECR's push event."""
        ecr = self.moto.client("ecr")
        try:
            manifest, media_type = self._manifest(repository, digest)
            ecr.put_image(
                repositoryName=repository,
                imageManifest=manifest,
                imageManifestMediaType=media_type,
                imageTag=tag,
                imageDigest=digest,
            )
        except ecr.exceptions.RepositoryNotFoundException:
            self.log(f"docker push {repository}:{tag}: no ECR repository {repository}, no event")
            return
        except ecr.exceptions.ImageAlreadyExistsException:
            pass  # the same image under the same tag: ECR still reports the push
        assert self.bus is not None
        self.log(f"docker push {repository}:{tag} {digest[:19]}… → ECR push event")
        self.bus.put_event(self._push_event(repository, digest, tag))

    def _push_event(self, repository: str, digest: str, tag: str) -> dict[str, Any]:
        """ECR's "ECR Image Action" event for a successful push (AWS's documented shape)."""
        detail = {
            "result": "SUCCESS",
            "repository-name": repository,
            "image-digest": digest,
            "action-type": "PUSH",
            "image-tag": tag,
        }
        return envelope("ECR Image Action", "aws.ecr", detail, region=self.moto.region)

    def _manifest(self, repository: str, digest: str) -> tuple[str, str]:
        assert self.registry is not None
        req = urllib.request.Request(
            f"http://{self.registry.push_address}/v2/{repository}/manifests/{digest}",
            headers={"Accept": MANIFEST_TYPES},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
            return body, resp.headers.get(
                "Content-Type", "application/vnd.docker.distribution.manifest.v2+json"
            )

    # -- operating -----------------------------------------------------------------------
    def invoke(self, function: str, payload: Any) -> Any:
        """Invoke a function directly (aws lambda invoke): returns its result or raises LambdaError."""
        assert self.lambdas is not None
        self.log(f"invoke {function} {json.dumps(payload)}")
        return self.lambdas.call(function, payload)

    def reconcile(self) -> list[Delivery]:
        """Fire the scheduled rules (the reconciler) once."""
        assert self.bus is not None
        self.log("schedule fires (reconciler)")
        return self.bus.fire_schedule()

    def scale(self, app: str, desired: int) -> list[Any]:
        assert self.fleet is not None
        hosts = self.fleet.scale(f"{app}-asg", desired)
        for h in hosts:
            self.log(f"instance {h.instance_id} launched (nginx on :{h.sandbox.listen_port})")
        return hosts

    def settle(self, timeout: float = 180.0, quiet: float = 0.3) -> None:
        """Wait until no event, command or launch is in flight (and it stays so for `quiet`)."""
        assert self.bus is not None
        assert self.ssm is not None
        assert self.fleet is not None
        deadline = time.monotonic() + timeout
        calm_since: float | None = None
        while True:
            busy = (
                self.bus.busy()
                or self.ssm.busy()
                or any(t.is_alive() for t in self.fleet._threads)
                or any(src.busy for src in self.sqs_sources)
            )
            now = time.monotonic()
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = now
            elif now - calm_since >= quiet:
                return
            if now > deadline:
                raise TimeoutError(f"local cloud still busy after {timeout}s")
            time.sleep(0.05)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 120.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    # -- observing -----------------------------------------------------------------------
    def pointer(self, app: str) -> dict[str, Any] | None:
        assert self.stack is not None
        prefix = self.stack.parameters["ParameterPrefix"]
        ssm = self.moto.client("ssm")
        try:
            value = ssm.get_parameter(Name=f"{prefix}/{app}/release")["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return None
        return dict(json.loads(value))

    def releases(self, app: str) -> list[dict[str, Any]]:
        assert self.stack is not None
        from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

        des = TypeDeserializer()
        ddb = self.moto.client("dynamodb")
        items = ddb.query(
            TableName=self.stack.physical["ReleasesTable"],
            KeyConditionExpression="app = :a",
            ExpressionAttributeValues={":a": {"S": app}},
        )["Items"]
        return [{k: _plain(des.deserialize(v)) for k, v in item.items()} for item in items]

    def host_outcomes(self, app: str, release: int) -> list[dict[str, Any]]:
        assert self.stack is not None
        from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

        des = TypeDeserializer()
        ddb = self.moto.client("dynamodb")
        items = ddb.query(
            TableName=self.stack.physical["HostOutcomesTable"],
            KeyConditionExpression="release_key = :k",
            ExpressionAttributeValues={":k": {"S": f"{app}#{release}"}},
        )["Items"]
        return [{k: _plain(des.deserialize(v)) for k, v in item.items()} for item in items]

    def group_version(self, app: str) -> tuple[str, str]:
        """(launch template version the group is on, that version's user data)."""
        import base64  # noqa: PLC0415

        asg = self.moto.client("autoscaling")
        g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[f"{app}-asg"])["AutoScalingGroups"][0]
        lt = g["LaunchTemplate"]
        ec2 = self.moto.client("ec2")
        name_or_id = (
            {"LaunchTemplateId": lt["LaunchTemplateId"]}
            if lt.get("LaunchTemplateId")
            else {"LaunchTemplateName": lt["LaunchTemplateName"]}
        )
        versions = ec2.describe_launch_template_versions(**name_or_id, Versions=[str(lt["Version"])])
        data = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        ud = base64.b64decode(data.get("UserData", "")).decode() if data.get("UserData") else ""
        return str(lt["Version"]), ud

    def host_releases(self, app: str) -> dict[str, int | None]:
        assert self.fleet is not None
        out: dict[str, int | None] = {}
        for h in self.fleet.live(f"{app}-asg"):
            state = h.sandbox.state(app) or {}
            rel = state.get("release")
            out[h.instance_id] = int(rel) if rel is not None else None
        return out

    def host_digests(self, app: str) -> dict[str, str | None]:
        assert self.fleet is not None
        return {
            h.instance_id: (h.sandbox.state(app) or {}).get("digest") for h in self.fleet.live(f"{app}-asg")
        }

    def consistency(self, app: str) -> dict[str, Any]:
        """The invariant: pointer = group's launch-template version = every host, compared by
        image digest (a rollback is a new release number for an image a host may already run)."""
        pointer = self.pointer(app) or {}
        version, user_data = self.group_version(app)
        digest = str(pointer.get("digest") or "")
        lt_has = bool(digest) and digest in user_data
        hosts = self.host_digests(app)
        ok = lt_has and bool(hosts) and all(d == digest for d in hosts.values())
        return {
            "pointer_release": pointer.get("release"),
            "pointer_digest": digest,
            "lt_version": version,
            "lt_matches": lt_has,
            "host_releases": self.host_releases(app),
            "host_digests": hosts,
            "consistent": ok,
        }

    def commands(self) -> dict[str, CommandRun]:
        assert self.ssm is not None
        return dict(self.ssm.runs)

    # -- timeline hooks ------------------------------------------------------------------
    def _on_delivery(self, d: Delivery) -> None:
        last = d.attempts[-1] if d.attempts else None
        detail = d.event.get("detail-type", "direct") if isinstance(d.event, dict) else "direct"
        if last is None:
            return
        if last.error:
            self.log(
                f"{d.function} ← {detail}: ERROR {last.error.get('errorType')}: "
                f"{last.error.get('errorMessage')} (attempt {len(d.attempts)})"
            )
        else:
            self.log(f"{d.function} ← {detail}: {_short(last.result)}")

    def _on_command(self, run: CommandRun) -> None:
        hosts = ", ".join(f"{h.instance_id}={h.status}" for h in run.hosts)
        rel = run.parameters.get("release", "?")
        self.log(f"SSM command {run.command_id[:8]} (release {rel}) {run.status}: {hosts or 'no targets'}")


def _plain(v: Any) -> Any:
    from decimal import Decimal  # noqa: PLC0415

    if isinstance(v, Decimal):
        return int(v) if v == int(v) else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | set):
        return [_plain(x) for x in v]
    return v


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
