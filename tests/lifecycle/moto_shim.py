"""MOTO SHIM for the lifecycle tests: fills moto 5.x gaps, test-only, undone after each test.

Every patch is applied with pytest's monkeypatch, so nothing leaks into other tests:

1. Every SSM command reports Success at once: commands start Pending here, and the test drives
   each invocation's StatusDetails and stdout (`invocation`) and the command's StatusDetails and
   counts (`command`), which get_command_invocation / list_commands / list_command_invocations
   then report in SSM's two vocabularies: the detail in `StatusDetails`, the coarse enum value
   botocore documents in `Status` (`localcloud.ratecontrol` holds the mapping for both stand-ins).
2. `send_command(InstanceIds=[...])` targets every instance of the region in moto: Targets are
   resolved only when given.
3. `describe_instance_information` is missing: served from `SsmShim.online`.
   `complete_lifecycle_action` and `record_lifecycle_action_heartbeat` are missing and moto puts
   launches straight into InService: `localcloud.lifecycle_actions` (`SsmShim.lifecycle`) keeps
   a launch in a hooked group in Pending:Wait until its action completes, refuses a token that
   was never issued, was completed or has timed out (ValidationError, as Auto Scaling does),
   and lets a test expire actions (`shim.lifecycle.advance(seconds)`); accepted calls are
   recorded in `SsmShim.completed` / `SsmShim.heartbeats`.
4. Launch-template versions whose UserData is given crash later Auto Scaling launches: the
   stored string is wrapped in moto's own type. `SourceVersion` and
   `delete_launch_template_versions` are filled as in `tests/moto_shim.py`.
5. moto evaluates a DynamoDB condition and then writes, with nothing in between held: two
   threads can both pass the same condition. DynamoDB applies each conditional write
   atomically, so the writes are serialized here (what the lock-race tests rely on).
6. `list_command_invocations` is missing: served from the same invocations, 50 per page with
   NextToken as SSM pages them.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.core.types import Base64EncodedString
from moto.dynamodb.models import DynamoDBBackend
from moto.ec2.models.launch_templates import LaunchTemplateVersion
from moto.ssm import models as ssm_models
from moto.ssm.models import ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from localcloud import lifecycle_actions
from localcloud.ratecontrol import command_status_of, invocation_status
from tests.moto_shim import install_launch_template_versions


@dataclass
class SsmShim:
    online: set[str] = field(default_factory=set)
    completed: list[dict[str, str]] = field(default_factory=list)
    heartbeats: list[dict[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # command ids given to CancelCommand
    lifecycle: lifecycle_actions.LifecycleActions = field(default_factory=lifecycle_actions.LifecycleActions)

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
        self, command_id: str, instance_id: str, details: str, stdout: str = "", response_code: int = 0
    ) -> None:
        """One invocation ends with StatusDetails `details` (Success, Failed, Execution Timed Out,
        Delivery Timed Out, Undeliverable, Terminated, Cancelled)."""
        command = self._command(command_id)
        for inv in command.invocations:
            if inv["InstanceId"] == instance_id:
                inv.update(
                    Status=invocation_status(details),
                    StatusDetails=details,
                    ResponseCode=response_code,
                    StandardOutputContent=stdout,
                )
                return
        raise KeyError(f"{command_id} has no invocation on {instance_id}")

    def command(
        self,
        command_id: str,
        details: str,
        *,
        completed: int,
        errors: int = 0,
        delivery_timed_out: int = 0,
    ) -> str:
        """The command ends with StatusDetails `details` (Success, Failed, Incomplete, Delivery
        Timed Out, ...); returns the coarse Status SSM reports beside it (and in its event)."""
        command = self._command(command_id)
        command.status = command_status_of(details)
        command.status_details = details
        command.completed_count = completed
        command.error_count = errors
        command.delivery_timed_out_count = delivery_timed_out
        return str(command.status)


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

    def list_command_invocations(self: Any) -> Any:
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        size = int(self._get_param("MaxResults") or 50)
        start = int(self._get_param("NextToken") or 0)
        page = command.invocations[start : start + size]
        result: dict[str, Any] = {
            "CommandInvocations": [
                {
                    "CommandId": command.command_id,
                    "InstanceId": inv["InstanceId"],
                    "DocumentName": command.document_name,
                    "Status": inv["Status"],
                    "StatusDetails": inv["StatusDetails"],
                }
                for inv in page
            ]
        }
        if start + size < len(command.invocations):
            result["NextToken"] = str(start + size)
        return ActionResult(result)

    monkeypatch.setattr(
        SimpleSystemManagerResponse, "list_command_invocations", list_command_invocations, raising=False
    )

    def cancel_command(self: Any) -> Any:
        # Missing in moto: SSM stops the invocations that have not finished (Cancelled).
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        shim.cancelled.append(command.command_id)
        for inv in command.invocations:
            if inv["Status"] in {"Pending", "InProgress", "Delayed"}:
                inv.update(Status="Cancelled", StatusDetails="Cancelled")
        return ActionResult({})

    monkeypatch.setattr(SimpleSystemManagerResponse, "cancel_command", cancel_command, raising=False)

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

    # Lifecycle actions as AWS runs them: launches wait in Pending:Wait, tokens are checked and
    # expire (`localcloud.lifecycle_actions`); accepted calls are recorded for the tests.
    for owner, name, value in lifecycle_actions.patches(
        shim.lifecycle, on_complete=shim.completed.append, on_heartbeat=shim.heartbeats.append
    ):
        monkeypatch.setattr(owner, name, value, raising=False)

    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        return Base64EncodedString(value) if isinstance(value, str) else value

    monkeypatch.setattr(LaunchTemplateVersion, "user_data", property(user_data), raising=False)
    install_launch_template_versions(monkeypatch)

    writes = threading.RLock()  # transact_write_items calls update_item inside
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with writes:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)
    return shim
