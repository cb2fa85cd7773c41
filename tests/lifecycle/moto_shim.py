"""MOTO SHIM for the lifecycle tests: fills moto 5.x gaps, test-only, undone after each test.

Every patch is applied with pytest's monkeypatch, so nothing leaks into other tests:

1. Every SSM command reports Success at once: commands start Pending here, and the test drives
   each invocation's status and stdout (`invocation`) and the command's status and counts
   (`command`), which get_command_invocation / list_commands then report like SSM does.
2. `send_command(InstanceIds=[...])` targets every instance of the region in moto: Targets are
   resolved only when given.
3. `describe_instance_information`, `complete_lifecycle_action` and
   `record_lifecycle_action_heartbeat` are missing: served from `SsmShim.online` and recorded in
   `SsmShim.completed` / `SsmShim.heartbeats`; completing an action twice is refused with
   ValidationError as Auto Scaling does.
4. Launch-template versions whose UserData is given crash later Auto Scaling launches: the
   stored string is wrapped in moto's own type.
5. moto evaluates a DynamoDB condition and then writes, with nothing in between held: two
   threads can both pass the same condition. DynamoDB applies each conditional write
   atomically, so the writes are serialized here (what the lock-race tests rely on).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.core.types import Base64EncodedString
from moto.dynamodb.models import DynamoDBBackend
from moto.ec2.models.launch_templates import LaunchTemplateVersion
from moto.ssm import models as ssm_models
from moto.ssm.models import ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse


@dataclass
class SsmShim:
    online: set[str] = field(default_factory=set)
    completed: list[dict[str, str]] = field(default_factory=list)
    heartbeats: list[dict[str, str]] = field(default_factory=list)

    # -- driving SSM outcomes -------------------------------------------------------------
    @staticmethod
    def _command(command_id: str) -> Any:
        for regions in ssm_backends.values():
            for backend in regions.values():
                for command in backend._commands:
                    if command.command_id == command_id:
                        return command
        raise KeyError(command_id)

    def commands(self) -> list[Any]:
        return [c for regions in ssm_backends.values() for b in regions.values() for c in b._commands]

    def targets(self, command_id: str) -> list[str]:
        return sorted(self._command(command_id).instance_ids)

    def invocation(
        self, command_id: str, instance_id: str, status: str, stdout: str = "", response_code: int = 0
    ) -> None:
        command = self._command(command_id)
        for inv in command.invocations:
            if inv["InstanceId"] == instance_id:
                inv.update(
                    Status=status,
                    StatusDetails=status,
                    ResponseCode=response_code,
                    StandardOutputContent=stdout,
                )
                return
        raise KeyError(f"{command_id} has no invocation on {instance_id}")

    def command(
        self,
        command_id: str,
        status: str,
        *,
        completed: int,
        errors: int = 0,
        delivery_timed_out: int = 0,
        details: str | None = None,
    ) -> None:
        command = self._command(command_id)
        command.status = status
        command.status_details = details or status
        command.completed_count = completed
        command.error_count = errors
        command.delivery_timed_out_count = delivery_timed_out


def install(monkeypatch: pytest.MonkeyPatch) -> SsmShim:

    shim = SsmShim()
    original_init = ssm_models.Command.__init__
    original_targets = ssm_models.Command._get_instance_ids_from_targets
    original_response = ssm_models.Command.response_object

    def pending_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.status = "Pending"
        self.status_details = "Pending"
        self.completed_count = 0
        self.target_count = len(self.instance_ids)
        self.delivery_timed_out_count = 0
        for inv in self.invocations:
            inv.update(Status="Pending", StatusDetails="Pending", ResponseCode=-1, StandardOutputContent="")

    def targets_when_given(self: Any) -> list[str]:
        return original_targets(self) if self.targets else []

    def response_object(self: Any) -> dict[str, Any]:
        data = original_response(self)
        data["DeliveryTimedOutCount"] = getattr(self, "delivery_timed_out_count", 0)
        return data

    monkeypatch.setattr(ssm_models.Command, "__init__", pending_init)
    monkeypatch.setattr(ssm_models.Command, "_get_instance_ids_from_targets", targets_when_given)
    monkeypatch.setattr(ssm_models.Command, "response_object", response_object)

    def describe_instance_information(self: Any) -> Any:
        wanted: set[str] | None = None
        for flt in self._get_param("Filters") or []:
            if flt.get("Key") == "InstanceIds":
                wanted = set(flt.get("Values") or [])
        infos = [
            {
                "InstanceId": iid,
                "PingStatus": "Online",
                "PlatformType": "Linux",
                "ResourceType": "EC2Instance",
            }
            for iid in sorted(shim.online)
            if wanted is None or iid in wanted
        ]
        return ActionResult({"InstanceInformationList": infos})

    monkeypatch.setattr(
        SimpleSystemManagerResponse,
        "describe_instance_information",
        describe_instance_information,
        raising=False,
    )

    def _call(self: Any, *names: str) -> dict[str, str]:
        return {n: self._get_param(n) for n in names}

    def complete_lifecycle_action(self: Any) -> Any:
        call = _call(
            self,
            "AutoScalingGroupName",
            "LifecycleHookName",
            "LifecycleActionToken",
            "LifecycleActionResult",
            "InstanceId",
        )
        if any(c["LifecycleActionToken"] == call["LifecycleActionToken"] for c in shim.completed):
            raise ValidationError("No active Lifecycle Action found with token")
        shim.completed.append(call)
        return EmptyResult()

    def record_lifecycle_action_heartbeat(self: Any) -> Any:
        shim.heartbeats.append(
            _call(self, "AutoScalingGroupName", "LifecycleHookName", "LifecycleActionToken", "InstanceId")
        )
        return EmptyResult()

    monkeypatch.setattr(
        AutoScalingResponse, "complete_lifecycle_action", complete_lifecycle_action, raising=False
    )
    monkeypatch.setattr(
        AutoScalingResponse,
        "record_lifecycle_action_heartbeat",
        record_lifecycle_action_heartbeat,
        raising=False,
    )

    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        return Base64EncodedString(value) if isinstance(value, str) else value

    monkeypatch.setattr(LaunchTemplateVersion, "user_data", property(user_data), raising=False)

    writes = threading.Lock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with writes:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)
    return shim
