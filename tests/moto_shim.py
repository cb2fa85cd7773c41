"""MOTO SHIM: fills moto 5.x gaps for the unit tests. Test-only; product code never imports it.

Each patch goes through pytest's monkeypatch, so it is undone after the test that asked for it.

1. Launch-template versions created with UserData make later Auto Scaling launches crash
   (moto asserts its own wrapper type on the stored value): the stored string is wrapped.
2. `send_command(InstanceIds=[...])` returns every instance of the region (moto resolves an
   empty Targets list as "no filter"): Targets are resolved only when given.
3. Every SSM command reports Success at once: with `pending_commands=True` commands start
   Pending, as SSM reports them right after SendCommand.
4. `create_launch_template_version` ignores `SourceVersion` and `delete_launch_template_versions`
   is missing: the local cloud's gap-filler for both (`localcloud.moto_gaps`, gap 8) is applied.
5. moto puts launches straight into InService and has no `complete_lifecycle_action` /
   `record_lifecycle_action_heartbeat`: `localcloud.lifecycle_actions` keeps a launch in a group
   with a launch hook in Pending:Wait until its action completes, and refuses tokens that were
   never issued, were completed or timed out (ValidationError), as Auto Scaling does.

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

from localcloud import lifecycle_actions, moto_gaps


def install(monkeypatch: pytest.MonkeyPatch, pending_commands: bool = False) -> None:
    def user_data(self: Any) -> Any:
        value = self.data.get("UserData")
        return Base64EncodedString(value) if isinstance(value, str) else value

    monkeypatch.setattr(LaunchTemplateVersion, "user_data", property(user_data))
    install_launch_template_versions(monkeypatch)
    # Launch lifecycle actions as Auto Scaling runs them (gap 5).
    for owner, name, value in lifecycle_actions.patches(lifecycle_actions.LifecycleActions()):
        monkeypatch.setattr(owner, name, value, raising=False)

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


def install_launch_template_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """SourceVersion and DeleteLaunchTemplateVersions, as EC2 documents them (gap 4)."""
    for owner, name, value in moto_gaps.launch_template_version_patches():
        monkeypatch.setattr(owner, name, value, raising=False)


def ssm_commands() -> list[Any]:
    """Every command moto holds (all accounts and regions), oldest first."""
    return [c for regions in ssm_models.ssm_backends.values() for b in regions.values() for c in b._commands]
