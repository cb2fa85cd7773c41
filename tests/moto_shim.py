"""MOTO SHIM: fills moto 5.x gaps for the unit tests. Test-only; product code never imports it.

Each patch goes through pytest's monkeypatch, so it is undone after the test that asked for it.

1. Launch-template versions created with UserData make later Auto Scaling launches crash
   (moto asserts its own wrapper type on the stored value): the stored string is wrapped.
2. `send_command(InstanceIds=[...])` returns every instance of the region (moto resolves an
   empty Targets list as "no filter"): Targets are resolved only when given.
3. Every SSM command reports Success at once: with `pending_commands=True` commands start
   Pending, as SSM reports them right after SendCommand.

(The lifecycle and local-cloud shims, `tests/lifecycle/moto_shim.py` and
`localcloud/moto_gaps.py`, also fill `complete_lifecycle_action`, `list_command_invocations`
and driven command outcomes.)
"""

from __future__ import annotations

from typing import Any

import pytest
from moto.core.types import Base64EncodedString
from moto.ec2.models.launch_templates import LaunchTemplateVersion
from moto.ssm import models as ssm_models


def install(monkeypatch: pytest.MonkeyPatch, pending_commands: bool = False) -> None:
    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        return Base64EncodedString(value) if isinstance(value, str) else value

    monkeypatch.setattr(LaunchTemplateVersion, "user_data", property(user_data))

    original_targets = ssm_models.Command._get_instance_ids_from_targets

    def targets_only_when_given(self: Any) -> list[str]:
        return original_targets(self) if self.targets else []

    monkeypatch.setattr(ssm_models.Command, "_get_instance_ids_from_targets", targets_only_when_given)

    if pending_commands:
        original_init = ssm_models.Command.__init__

        def pending_init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.status = "Pending"
            self.status_details = "Pending"
            self.completed_count = 0

        monkeypatch.setattr(ssm_models.Command, "__init__", pending_init)


def ssm_commands() -> list[Any]:
    """Every command moto holds (all accounts and regions), oldest first."""
    return [c for regions in ssm_models.ssm_backends.values() for b in regions.values() for c in b._commands]
