"""New instances: bring a launching instance onto the app's current pointer, then let it in.

No invocation waits for minutes (docs/lifecycle.md, "New instances"):

1. the lifecycle event arrives while the instance boots (Pending:Wait);
2. not yet online in SSM: heartbeat the action and check again later through a delay queue
   (`recheck` message, DelaySeconds), up to a deadline, after which the launch is ABANDONED;
3. online: send the swap for the **current pointer** to that one instance and track the command
   (the lifecycle token travels in the tracked-command record);
4. while the swap runs (a pull plus the health gate may take longer than the hook's heartbeat
   timeout), a `heartbeat` message through the same delay queue records a lifecycle heartbeat
   every HEARTBEAT_INTERVAL_SECONDS until the swap has ended or its commands' timeouts have
   passed;
5. on-command-status, at that invocation's terminal status, completes the action: CONTINUE when
   the host serves the release, ABANDON when it does not. If the pointer moved meanwhile, the
   instance gets one more swap for the new pointer before it is let in.

An action that is gone when we complete or heartbeat it (Auto Scaling timed it out and applied
the hook's default result) is logged and counted (`LaunchActionExpired`), never retried.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from deployer import markers
from deployer.adapters.lifecycle_hooks import LifecycleResult
from deployer.adapters.tracked_commands import CommandPurpose, TrackedCommand
from deployer.builders import swap_parameters
from deployer.errors import AppNotFound, DeployerError
from deployer.metrics_names import DeployMetric
from deployer.models.lifecycle_events import InstanceLaunchEvent, LifecycleActionDetail
from deployer.models.records import utcnow
from deployer.observability import count, logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from deployer.models.config import AppConfig
    from deployer.wiring import Adapters

# How long a launch may wait for the instance to register with SSM, and how often to look.
ONLINE_DEADLINE = timedelta(minutes=15)
RECHECK_DELAY_SECONDS = 20
# Swaps of the same instance when the pointer keeps moving while it launches.
MAX_SWAPS = 3
# Lifecycle heartbeats while a launch swap runs: well inside the hook's HeartbeatTimeout (900 s
# in the stack), so one late or lost message does not let the action time out.
HEARTBEAT_INTERVAL_SECONDS = 300
FOLLOWED = "FOLLOWED"


class Recheck(BaseModel):
    """A delayed re-check of a launching instance (body of a delay-queue message)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: Literal["launch-recheck"] = "launch-recheck"
    event: dict[str, Any]
    first_seen: datetime
    attempt: int = 1


class SwapHeartbeat(BaseModel):
    """A delayed lifecycle heartbeat for a running launch swap (body of a delay-queue message)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: Literal["launch-heartbeat"] = "launch-heartbeat"
    command_id: str
    instance_id: str
    deadline: datetime


def _app_for(ad: Adapters, detail: LifecycleActionDetail) -> AppConfig | None:
    """The app whose group launched the instance: the hook's metadata, else the apps table."""
    named = detail.metadata_app()
    if named is not None:
        try:
            config = ad.apps.get(named)
        except AppNotFound:
            config = None
        if config is not None and config.auto_scaling_group == detail.auto_scaling_group_name:
            return config
    for config in ad.apps.list():
        if config.auto_scaling_group == detail.auto_scaling_group_name:
            return config
    return None


def on_launch(
    ad: Adapters,
    event: InstanceLaunchEvent,
    schedule_recheck: Callable[[Recheck | SwapHeartbeat, int], None],
    first_seen: datetime | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Handle the launch lifecycle event (or its delayed re-check)."""
    detail = event.detail
    first_seen = first_seen or utcnow()
    base = {"instance_id": detail.instance_id, "group": detail.auto_scaling_group_name}
    config = _app_for(ad, detail)
    if config is None:
        # Not a group we deploy to: never block its launches.
        logger.warning("launch in a group no app uses; letting it in", extra=base)
        if not _complete(ad, detail, LifecycleResult.CONTINUE):
            return {**base, "action": "expired"}
        return {**base, "action": "continue", "reason": "no app uses this group"}
    pointer = ad.pointer.get(config.app)
    if pointer is None:
        logger.info(
            "launch before the app's first release; the baked user data applies", app=config.app, extra=base
        )
        if not _complete(ad, detail, LifecycleResult.CONTINUE):
            return {**base, "action": "expired"}
        return {**base, "action": "continue", "reason": "no release yet"}
    if not ad.instances.online(detail.instance_id):
        if utcnow() - first_seen >= ONLINE_DEADLINE:
            logger.error(
                "instance never came online in SSM; abandoning the launch", app=config.app, extra=base
            )
            count(DeployMetric.LAUNCH_ABANDONED)
            if not _complete(ad, detail, LifecycleResult.ABANDON):
                return {**base, "action": "expired"}
            return {**base, "action": "abandon", "reason": "not online in SSM before the deadline"}
        if not _heartbeat(ad, detail):
            return {**base, "action": "expired"}
        schedule_recheck(
            Recheck(
                event=event.model_dump(mode="json", by_alias=True), first_seen=first_seen, attempt=attempt
            ),
            RECHECK_DELAY_SECONDS,
        )
        return {**base, "action": "wait", "attempt": attempt}
    command_id = send_launch_swap(ad, config, detail, pointer.release, swap=1)
    # Heartbeats until the swaps end or every one of them has timed out in SSM.
    budget = MAX_SWAPS * (config.rollout.command_timeout + config.rollout.delivery_timeout)
    schedule_recheck(
        SwapHeartbeat(
            command_id=command_id,
            instance_id=detail.instance_id,
            deadline=utcnow() + timedelta(seconds=budget + HEARTBEAT_INTERVAL_SECONDS),
        ),
        HEARTBEAT_INTERVAL_SECONDS,
    )
    return {**base, "action": "swap", "release": pointer.release, "command_id": command_id}


def on_heartbeat(
    ad: Adapters, tick: SwapHeartbeat, schedule: Callable[[Recheck | SwapHeartbeat, int], None]
) -> dict[str, Any]:
    """Keep a running launch swap's lifecycle action alive; reschedule until the swap has ended."""
    base = {"instance_id": tick.instance_id, "command_id": tick.command_id}
    tracked = ad.tracked.get(tick.command_id, tick.instance_id)
    for _ in range(MAX_SWAPS):
        if tracked is None or tracked.completed != FOLLOWED or not tracked.next_command_id:
            break
        tracked = ad.tracked.get(tracked.next_command_id, tick.instance_id)
    if tracked is None or tracked.completed is not None:
        return {**base, "action": "stop", "reason": "the launch swap has ended"}
    if utcnow() >= tick.deadline:
        logger.warning(
            "launch swap unfinished after its commands' timeouts; heartbeats stop and the hook's "
            "default result applies",
            app=tracked.app,
            extra=base,
        )
        return {**base, "action": "stop", "reason": "past the swaps' timeouts"}
    if not heartbeat(ad, tracked):
        return {**base, "action": "expired"}
    schedule(tick.model_copy(update={"command_id": tracked.command_id}), HEARTBEAT_INTERVAL_SECONDS)
    return {**base, "action": "heartbeat", "command_id": tracked.command_id}


def send_launch_swap(
    ad: Adapters,
    config: AppConfig,
    detail: LifecycleActionDetail | TrackedCommand,
    release_number: int,
    swap: int,
) -> str:
    """Swap one launching instance onto a release and track the command with the lifecycle token."""
    release = ad.releases.get(config.app, release_number)
    command_id = ad.fleet.send_swap_to_instances(
        config,
        [_instance(detail)],
        swap_parameters(config, release),
        markers.host_comment("launch", config.app, release.release),
    )
    ad.tracked.put(
        TrackedCommand(
            command_id=command_id,
            instance_id=_instance(detail),
            purpose=CommandPurpose.LAUNCH,
            app=config.app,
            release=release.release,
            group=_group(detail),
            hook=_hook(detail),
            token=_token(detail),
            attempt=swap,
        )
    )
    logger.info(
        "launch swap sent",
        app=config.app,
        release=release.release,
        instance_id=_instance(detail),
        command_id=command_id,
    )
    return command_id


def on_swap_finished(ad: Adapters, tracked: TrackedCommand, ok: bool) -> dict[str, Any]:
    """The launch swap ended: let the instance in (CONTINUE) or throw it away (ABANDON)."""
    base = {"instance_id": tracked.instance_id, "release": tracked.release, "purpose": "launch"}
    if ok:
        pointer = ad.pointer.get(tracked.app)
        if pointer is not None and pointer.release != tracked.release and tracked.attempt < MAX_SWAPS:
            # The pointer moved while this instance launched: follow it before letting it in.
            # Claimed first, so a duplicate event does not send a second follow-up swap.
            if not ad.tracked.mark_completed(tracked, FOLLOWED):
                return {**base, "action": "duplicate"}
            config = ad.apps.get(tracked.app)
            command_id = send_launch_swap(ad, config, tracked, pointer.release, swap=tracked.attempt + 1)
            ad.tracked.set_next(tracked, command_id)
            heartbeat(ad, tracked)
            return {**base, "action": "swap", "next_release": pointer.release, "command_id": command_id}
    result = LifecycleResult.CONTINUE if ok else LifecycleResult.ABANDON
    if not ad.tracked.mark_completed(tracked, result.value):
        return {**base, "action": "duplicate"}
    assert tracked.group
    assert tracked.hook
    assert tracked.token
    completed = ad.hooks.complete(
        group=tracked.group,
        hook=tracked.hook,
        token=tracked.token,
        instance_id=tracked.instance_id,
        result=result,
    )
    if not completed:
        _action_gone(tracked.instance_id, "complete", app=tracked.app, result=result.value)
        return {**base, "action": "expired"}
    if not ok:
        count(DeployMetric.LAUNCH_ABANDONED)
    logger.info("launch completed", app=tracked.app, result=result.value, extra=base)
    return {**base, "action": result.value.lower()}


def heartbeat(ad: Adapters, tracked: TrackedCommand) -> bool:
    """Record a heartbeat for a launch swap's action; False (logged, counted) when it is gone."""
    if not (tracked.group and tracked.hook and tracked.token):
        return True
    if ad.hooks.heartbeat(
        group=tracked.group, hook=tracked.hook, token=tracked.token, instance_id=tracked.instance_id
    ):
        return True
    _action_gone(tracked.instance_id, "heartbeat", app=tracked.app, command_id=tracked.command_id)
    return False


def _heartbeat(ad: Adapters, detail: LifecycleActionDetail) -> bool:
    if ad.hooks.heartbeat(
        group=detail.auto_scaling_group_name,
        hook=detail.lifecycle_hook_name,
        token=detail.lifecycle_action_token,
        instance_id=detail.instance_id,
    ):
        return True
    _action_gone(detail.instance_id, "heartbeat", group=detail.auto_scaling_group_name)
    return False


def _complete(ad: Adapters, detail: LifecycleActionDetail, result: LifecycleResult) -> bool:
    """Complete the action; False (logged, counted) when Auto Scaling no longer has it."""
    try:
        completed = ad.hooks.complete(
            group=detail.auto_scaling_group_name,
            hook=detail.lifecycle_hook_name,
            token=detail.lifecycle_action_token,
            instance_id=detail.instance_id,
            result=result,
        )
    except DeployerError as exc:
        logger.error(
            "could not complete the lifecycle action", instance_id=detail.instance_id, error=str(exc)
        )
        raise
    if not completed:
        group = detail.auto_scaling_group_name
        _action_gone(detail.instance_id, "complete", group=group, result=result.value)
    return completed


def _action_gone(instance_id: str, call: str, **context: Any) -> None:
    """Auto Scaling answered that the lifecycle action is not active: it timed out (the hook's
    default result applied) or was completed elsewhere. Nothing to retry; say so and count it."""
    logger.error(
        "lifecycle action no longer active: timed out or completed elsewhere",
        instance_id=instance_id,
        call=call,
        **context,
    )
    count(DeployMetric.LAUNCH_ACTION_EXPIRED)


def _instance(d: LifecycleActionDetail | TrackedCommand) -> str:
    return d.instance_id


def _group(d: LifecycleActionDetail | TrackedCommand) -> str | None:
    return d.auto_scaling_group_name if isinstance(d, LifecycleActionDetail) else d.group


def _hook(d: LifecycleActionDetail | TrackedCommand) -> str | None:
    return d.lifecycle_hook_name if isinstance(d, LifecycleActionDetail) else d.hook


def _token(d: LifecycleActionDetail | TrackedCommand) -> str | None:
    return d.lifecycle_action_token if isinstance(d, LifecycleActionDetail) else d.token


def parse_recheck(body: str) -> Recheck | SwapHeartbeat:
    """A delay-queue message: a launch re-check or a swap heartbeat (by its `kind`)."""
    data = json.loads(body)
    if isinstance(data, dict) and data.get("kind") == "launch-heartbeat":
        return SwapHeartbeat.model_validate(data)
    return Recheck.model_validate(data)
