"""MOTO GAP-FILLER: Auto Scaling launch lifecycle actions as AWS documents them. Development
tooling only; applied with every other gap by `localcloud.moto_gaps` (gap 9), for the tests and
for the local cloud alike.

moto 5.x puts every new instance straight into InService, and has no CompleteLifecycleAction
or RecordLifecycleActionHeartbeat. What AWS does instead, and what these patches do:

- an instance launched into a group with an `autoscaling:EC2_INSTANCE_LAUNCHING` hook waits in
  `Pending:Wait`, with one lifecycle action per hook, each with its own token;
- CompleteLifecycleAction and RecordLifecycleActionHeartbeat answer `ValidationError` ("No
  active Lifecycle Action found ...") unless group, hook, token and instance name an action
  still active: never issued, already completed, or timed out;
- a heartbeat restarts the hook's HeartbeatTimeout; the action also ends at its global timeout
  (100 x HeartbeatTimeout or 48 hours, whichever is smaller);
- when an action times out, the hook's DefaultResult applies;
- CONTINUE moves the instance to InService (once all its actions continued); ABANDON
  terminates it.

Launching instances count toward the group's capacity, as on AWS. The clock is injectable
(`LifecycleActions.advance`), so tests can let an action expire.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
GLOBAL_TIMEOUT_MAX = 48 * 3600


@dataclass
class LifecycleAction:
    token: str
    group: str
    hook: str
    instance_id: str
    heartbeat_timeout: int
    default_result: str
    deadline: float
    global_deadline: float
    state: Any = field(repr=False)  # moto's InstanceState
    result: str | None = None  # CONTINUE / ABANDON once completed
    timed_out: bool = False

    @property
    def active(self) -> bool:
        return self.result is None


class LifecycleActions:
    """Every launch lifecycle action moto's groups have issued, by token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.offset = 0.0
        self.actions: dict[str, LifecycleAction] = {}
        self._lock = threading.RLock()

    def now(self) -> float:
        return self._clock() + self.offset

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass for every action (heartbeat and global timeouts)."""
        with self._lock:
            self.offset += seconds
            self.expire_due()

    # -- queries ---------------------------------------------------------------------------
    def for_instance(self, instance_id: str) -> list[LifecycleAction]:
        return [a for a in self.actions.values() if a.instance_id == instance_id]

    def token_for(self, instance_id: str, hook: str | None = None) -> str | None:
        """The token of the instance's (active, else latest) action for `hook`."""
        found = [a for a in self.for_instance(instance_id) if hook is None or a.hook == hook]
        active = [a for a in found if a.active]
        chosen = (active or found)[-1:] if found else []
        return chosen[0].token if chosen else None

    # -- moto side -------------------------------------------------------------------------
    def issue(self, state: Any, hook: Any) -> LifecycleAction:
        timeout = int(hook.heartbeat_timeout or 3600)
        now = self.now()
        action = LifecycleAction(
            token=str(uuid.uuid4()),
            group=hook.auto_scaling_group_name,
            hook=hook.name,
            instance_id=state.instance.id,
            heartbeat_timeout=timeout,
            default_result=hook.default_result or "ABANDON",
            deadline=now + timeout,
            global_deadline=now + min(100 * timeout, GLOBAL_TIMEOUT_MAX),
            state=state,
        )
        with self._lock:
            state.lifecycle_state = "Pending:Wait"
            self.actions[action.token] = action
        return action

    def _active(self, group: str, hook: str, token: str | None, instance_id: str | None) -> LifecycleAction:
        self.expire_due()
        for action in self.actions.values():
            if (
                action.active
                and action.group == group
                and action.hook == hook
                and (token is None or action.token == token)
                and (instance_id is None or action.instance_id == instance_id)
                and (token is not None or instance_id is not None)
            ):
                return action
        raise LookupError(f"No active Lifecycle Action found with token {token} for instance {instance_id}")

    def complete(
        self, group: str, hook: str, token: str | None, instance_id: str | None, result: str
    ) -> None:
        with self._lock:
            action = self._active(group, hook, token, instance_id)
            self._end(action, result)

    def heartbeat(self, group: str, hook: str, token: str | None, instance_id: str | None) -> None:
        with self._lock:
            action = self._active(group, hook, token, instance_id)
            action.deadline = min(self.now() + action.heartbeat_timeout, action.global_deadline)

    def expire_due(self) -> None:
        with self._lock:
            now = self.now()
            for action in list(self.actions.values()):
                if action.active and now >= min(action.deadline, action.global_deadline):
                    action.timed_out = True
                    self._end(action, action.default_result)

    def expire(self, token: str) -> None:
        """Time the action out now (a stand-in that stopped waiting for it)."""
        with self._lock:
            action = self.actions.get(token)
            if action is not None and action.active:
                action.timed_out = True
                self._end(action, action.default_result)

    def _end(self, action: LifecycleAction, result: str) -> None:
        action.result = result
        state = action.state
        if result == "ABANDON":
            group = state.auto_scaling_group
            if state in group.instance_states:
                group.instance_states.remove(state)
                group.autoscaling_backend.ec2_backend.terminate_instances([action.instance_id])
            state.lifecycle_state = "Terminated"
            return
        if all(a.result == "CONTINUE" for a in self.for_instance(action.instance_id)):
            state.lifecycle_state = "InService"


def patches(
    actions: LifecycleActions,
    on_complete: Callable[[dict[str, Any]], None] | None = None,
    on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for each moto patch; the caller applies and undoes them."""
    from moto.autoscaling.exceptions import ValidationError  # noqa: PLC0415
    from moto.autoscaling.models import FakeAutoScalingGroup  # noqa: PLC0415
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415
    from moto.core.responses import EmptyResult  # noqa: PLC0415

    original_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances

    def replace_autoscaling_group_instances(self: Any, *args: Any, **kwargs: Any) -> None:
        before = set(map(id, self.instance_states))
        original_replace(self, *args, **kwargs)
        hooks = [
            h
            for h in self.autoscaling_backend.lifecycle_hooks.values()
            if h.auto_scaling_group_name == self.name and h.lifecycle_transition == LAUNCHING
        ]
        for state in self.instance_states:
            if id(state) not in before:
                for hook in hooks:
                    actions.issue(state, hook)

    def active_instances(self: Any) -> list[Any]:
        # Launching instances count toward capacity, as on AWS (moto counts only InService).
        return [s for s in self.instance_states if s.lifecycle_state in ("InService", "Pending:Wait")]

    def _call(self: Any, *names: str) -> dict[str, Any]:
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
        try:
            actions.complete(
                call["AutoScalingGroupName"],
                call["LifecycleHookName"],
                call["LifecycleActionToken"],
                call["InstanceId"],
                call["LifecycleActionResult"],
            )
        except LookupError as exc:
            raise ValidationError(str(exc)) from exc
        if on_complete is not None:
            on_complete(call)
        return EmptyResult()

    def record_lifecycle_action_heartbeat(self: Any) -> Any:
        call = _call(self, "AutoScalingGroupName", "LifecycleHookName", "LifecycleActionToken", "InstanceId")
        try:
            actions.heartbeat(
                call["AutoScalingGroupName"],
                call["LifecycleHookName"],
                call["LifecycleActionToken"],
                call["InstanceId"],
            )
        except LookupError as exc:
            raise ValidationError(str(exc)) from exc
        if on_heartbeat is not None:
            on_heartbeat(call)
        return EmptyResult()

    return [
        (FakeAutoScalingGroup, "replace_autoscaling_group_instances", replace_autoscaling_group_instances),
        (FakeAutoScalingGroup, "active_instances", active_instances),
        (AutoScalingResponse, "complete_lifecycle_action", complete_lifecycle_action),
        (AutoScalingResponse, "record_lifecycle_action_heartbeat", record_lifecycle_action_heartbeat),
    ]
