"""EC2 + Auto Scaling stand-in: every instance of a group is a `HostSandbox` on this machine.

moto keeps the group, its launch-template versions and its instances; this module gives each
running instance a body. When instances appear (group created, scaled out), it:
1. creates the host (own nginx on its own loopback port, own state dir) and marks its SSM agent
   online (`describe_instance_information`);
2. when the group has an `autoscaling:EC2_INSTANCE_LAUNCHING` hook, emits the
   `EC2 Instance-launch Lifecycle Action` event and waits for `complete_lifecycle_action`
   (CONTINUE → InService; ABANDON or the hook's timeout with DefaultResult ABANDON →
   terminated);
3. runs the user data of the launch-template version the instance was launched from (the real
   boot script, decoded from moto) with the interpreter of its `#!` line, then starts the proxy
   meter (`agent.py meter`) of every app the boot brought up, as the boot's systemd unit does.
Terminating an instance removes its containers and nginx.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcloud import moto_gaps
from localcloud.aws.eventbridge import EventBus, envelope
from localcloud.hosts.hostexec import ScriptResult, run_script
from localcloud.hosts.sandbox import HostSandbox


@dataclass
class Host:
    instance_id: str
    group: str
    sandbox: HostSandbox
    user_data: str
    launched_at: float = field(default_factory=time.monotonic)
    state: str = "booting"  # booting | running | terminated
    boot: ScriptResult | None = None
    booted: threading.Event = field(default_factory=threading.Event)
    lifecycle: dict[str, Any] | None = None  # the complete_lifecycle_action call
    lifecycle_done: threading.Event = field(default_factory=threading.Event)
    token: str = ""

    @property
    def root(self) -> Path:
        return self.sandbox.root

    def boot_summary(self) -> dict[str, Any] | None:
        """The agent's JSON summary from the boot log, if the boot script wrote one."""
        import json  # noqa: PLC0415

        log = self.sandbox.root / "var-log" / "deployer-boot.log"
        try:
            lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
        except OSError:
            return None
        for line in reversed(lines):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("agent") == "deployer":
                return data
        return None


def interpreter(script: str) -> str:
    first = script.splitlines()[0] if script else ""
    m = re.match(r"#!\s*(\S+)(?:\s+(\S+))?", first)
    if not m:
        return "/bin/sh"
    if m.group(1).endswith("/env") and m.group(2):
        return m.group(2)
    return m.group(1)


def boot_scripts(user_data: str) -> list[tuple[str, str]]:
    """The scripts cloud-init would run from `user_data`, in its order: plain user data is one
    script; a MIME multi-part document gives its shell-script parts (text/x-shellscript, or
    text/plain starting with #!) sorted by file name. Other parts (#cloud-config...) configure
    packages the sandbox already has."""
    if not user_data:
        return []
    if "mime-version:" not in user_data[:4096].lower():
        return [("user-data", user_data)]
    import email  # noqa: PLC0415

    scripts = []
    for index, part in enumerate(email.message_from_string(user_data).walk()):
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        text = payload.decode() if isinstance(payload, bytes) else str(part.get_payload())
        kind = part.get_content_type()
        if kind == "text/x-shellscript" or (kind == "text/plain" and text.startswith("#!")):
            scripts.append((part.get_filename() or f"part-{index:03d}", text))
    return sorted(scripts)


class Fleet:
    def __init__(
        self,
        moto: Any,
        root: Path,
        bus: EventBus,
        host_env: Callable[[Any], dict[str, str]],
        *,
        sandbox_settings: dict[str, Any] | None = None,
        boot_timeout: float = 300.0,
    ) -> None:
        self.moto = moto
        self.root = root
        self.bus = bus
        self.host_env = host_env
        self.sandbox_settings = sandbox_settings or {}
        self.boot_timeout = boot_timeout
        self.hosts: dict[str, Host] = {}
        self.lifecycle_calls: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self.asg = moto.client("autoscaling")
        self.ec2 = moto.client("ec2")
        moto_gaps.CLOUD.on_complete = self._on_complete
        moto_gaps.CLOUD.on_heartbeat = self.heartbeats.append

    # -- lookups -------------------------------------------------------------------------
    def host_for(self, instance_id: str) -> HostSandbox | None:
        host = self.hosts.get(instance_id)
        if host is None or host.state == "terminated":
            return None
        return host.sandbox

    def live(self, group: str | None = None) -> list[Host]:
        return [
            h for h in self.hosts.values() if h.state != "terminated" and (group is None or h.group == group)
        ]

    def group_instances(self, group: str) -> list[dict[str, Any]]:
        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
        return list(groups[0]["Instances"]) if groups else []

    # -- scaling -------------------------------------------------------------------------
    def scale(self, group: str, desired: int) -> list[Host]:
        """Set the group's desired capacity; returns the hosts launched."""
        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=desired)
        return self.sync(group)

    def sync(self, group: str) -> list[Host]:
        """Give a body to every instance moto launched for `group` that has none yet."""
        new = []
        with self._lock:
            for inst in self.group_instances(group):
                iid = inst["InstanceId"]
                if iid in self.hosts:
                    continue
                host = self._create(iid, group)
                self.hosts[iid] = host
                new.append(host)
        hooks = self._launch_hooks(group)
        for host in new:
            t = threading.Thread(
                target=self._launch, args=(host, hooks), name=f"boot-{host.instance_id}", daemon=True
            )
            self._threads.append(t)
            t.start()
        return new

    def _create(self, iid: str, group: str) -> Host:
        attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        raw = (attr.get("UserData") or {}).get("Value") or ""
        user_data = base64.b64decode(raw).decode() if raw else ""
        sandbox = HostSandbox(iid, self.root / iid, **self.sandbox_settings)
        sandbox.start()
        moto_gaps.CLOUD.online.add(iid)
        return Host(iid, group, sandbox, user_data)

    def _launch_hooks(self, group: str) -> list[dict[str, Any]]:
        hooks = self.asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
        return [h for h in hooks if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_LAUNCHING"]

    def _launch(self, host: Host, hooks: list[dict[str, Any]]) -> None:
        for hook in hooks:
            # the token Auto Scaling (moto_gaps.CLOUD.lifecycle) issued for this launch's action
            issued = moto_gaps.CLOUD.lifecycle.token_for(host.instance_id, hook["LifecycleHookName"])
            host.token = issued or str(uuid.uuid4())
            self.bus.put_event(
                envelope(
                    "EC2 Instance-launch Lifecycle Action",
                    "aws.autoscaling",
                    {
                        "LifecycleActionToken": host.token,
                        "AutoScalingGroupName": host.group,
                        "LifecycleHookName": hook["LifecycleHookName"],
                        "EC2InstanceId": host.instance_id,
                        "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                        "NotificationMetadata": hook.get("NotificationMetadata", ""),
                        "Origin": "EC2",
                        "Destination": "AutoScalingGroup",
                    },
                    [
                        f"arn:aws:autoscaling:{self.moto.region}:123456789012:autoScalingGroup:local:"
                        f"autoScalingGroupName/{host.group}"
                    ],
                    region=self.moto.region,
                )
            )
        self._boot(host)
        if hooks:
            # Wait while Auto Scaling keeps the action (heartbeats extend it), at most boot_timeout.
            deadline = time.monotonic() + self.boot_timeout
            while not host.lifecycle_done.wait(1.0):
                moto_gaps.CLOUD.lifecycle.expire_due()
                action = moto_gaps.CLOUD.lifecycle.actions.get(host.token)
                if action is None or not action.active or time.monotonic() >= deadline:
                    break
            if not host.lifecycle_done.is_set():
                moto_gaps.CLOUD.lifecycle.expire(host.token)
                action = moto_gaps.CLOUD.lifecycle.actions.get(host.token)
                default = action.result if action else hooks[0].get("DefaultResult", "ABANDON")
                host.lifecycle = {"LifecycleActionResult": default, "timeout": True}
                host.lifecycle_done.set()
            result = (host.lifecycle or {}).get("LifecycleActionResult")
            if result == "ABANDON":
                self.terminate(host.instance_id, decrement=False)
                return
        if host.state == "booting":
            host.state = "running"

    def _boot(self, host: Host) -> None:
        for name, script in boot_scripts(host.user_data):
            host.boot = run_script(
                host.root,
                script,
                self.host_env(host.sandbox),
                self.boot_timeout,
                name=name,
                shell=interpreter(script),
            )
            if host.boot.exit_code != 0:
                break
        else:
            self._start_meters(host)
        host.booted.set()

    def _start_meters(self, host: Host) -> None:
        """What the boot's systemd unit does on a real host: run the meter of every app the boot
        brought up, with the host's credentials (its calls pass the gate)."""
        state_dir = Path(host.sandbox.config["state_dir"])
        for state in sorted(state_dir.glob("*/state.json")):
            host.sandbox.start_meter(state.parent.name, env=self.host_env(host.sandbox))

    def _on_complete(self, call: dict[str, Any]) -> None:
        self.lifecycle_calls.append(call)
        host = self.hosts.get(call.get("InstanceId") or "")
        if host is None:
            for h in self.hosts.values():
                if h.token and h.token == call.get("LifecycleActionToken"):
                    host = h
        if host is not None:
            host.lifecycle = call
            host.lifecycle_done.set()

    def wait_booted(self, timeout: float = 300.0, group: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        for host in list(self.live(group)):
            if not host.booted.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{host.instance_id} did not finish booting in {timeout}s")

    def wait_settled(self, timeout: float = 300.0) -> None:
        """Wait until every launch (boot + lifecycle hook) has finished."""
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TimeoutError(f"{t.name} still running after {timeout}s")

    # -- termination ---------------------------------------------------------------------
    def terminate(self, instance_id: str, decrement: bool = True) -> None:
        host = self.hosts.get(instance_id)
        if host is None or host.state == "terminated":
            return
        host.state = "terminated"
        moto_gaps.CLOUD.online.pop(instance_id, None)
        try:
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
            )
        except Exception:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        host.sandbox.teardown()

    def teardown(self) -> None:
        for host in list(self.hosts.values()):
            moto_gaps.CLOUD.online.pop(host.instance_id, None)
            if host.state != "terminated":
                host.state = "terminated"
                host.sandbox.teardown()
        if moto_gaps.CLOUD.on_complete == self._on_complete:
            moto_gaps.CLOUD.on_complete = None
        if moto_gaps.CLOUD.on_heartbeat == self.heartbeats.append:
            moto_gaps.CLOUD.on_heartbeat = None
