"""Entry for the SSM status, launch, operator and schedule events: parse, call the core, answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployer import command_events, gate_events
from deployer.errors import DeployerError, InvalidEvent
from deployer.metrics_names import DeployMetric
from deployer.models import describe_errors
from deployer.models.events import AlarmStateChangeEvent, StageTick
from deployer.models.lifecycle_events import (
    CommandInvocationStatusEvent,
    CommandStatusEvent,
    InstanceLaunchEvent,
    parse_operation,
)
from deployer.observability import Metric, count, logger

if TYPE_CHECKING:
    from deployer import launch
    from deployer.wiring import Adapters



class _CommandEvents(BaseModel):
    model_config = ConfigDict(defer_build=True)

    event: Annotated[CommandStatusEvent | CommandInvocationStatusEvent, Field(discriminator="detail_type")]


def _rejected(what: str, exc: Exception) -> dict[str, Any]:
    message = describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
    logger.warning(f"{what} rejected", error=message)
    count(Metric.BAD_INPUT)
    return {"status": "rejected", "error": f"invalid {what}: {message}"}


def handle_command_status(ad: Adapters, event: Any) -> dict[str, Any]:
    """SSM command and invocation status events, CloudWatch alarm state changes, and batches of
    stage ticks (SQS records whose body's `kind` is "stage-tick")."""
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        return _stage_ticks(ad, event["Records"])
    if isinstance(event, dict) and event.get("detail-type") == "CloudWatch Alarm State Change":
        try:
            alarm = AlarmStateChangeEvent.model_validate(event)
        except ValidationError as exc:
            return _rejected("alarm state change event", exc)
        return {"status": "ok", **gate_events.on_alarm(ad, alarm)}
    try:
        parsed = _CommandEvents.model_validate({"event": event}).event
    except ValidationError as exc:
        return _rejected("SSM status event", exc)
    if isinstance(parsed, CommandStatusEvent):
        return {"status": "ok", **command_events.on_command(ad, parsed)}
    return {"status": "ok", **command_events.on_invocation(ad, parsed)}


def _stage_ticks(ad: Adapters, records: list[Any]) -> dict[str, Any]:
    """Each record is one tick; a malformed one is rejected (logged and dropped: the reconciler
    finds a bake whose tick was lost), the others converge their app."""
    results = []
    for record in records:
        body = record.get("body", "") if isinstance(record, dict) else ""
        try:
            tick = StageTick.model_validate_json(body)
        except ValidationError as exc:
            results.append(_rejected("stage tick", exc))
            continue
        results.append(gate_events.on_tick(ad, tick))
    return {"status": "ok", "results": results}


def handle_operation(ad: Adapters, event: Any) -> dict[str, Any]:
    try:
        request = parse_operation(event)
    except ValidationError as exc:
        count(Metric.BAD_INPUT)
        message = f"invalid request: {_request_errors(exc)}"
        logger.warning("operator request rejected", error=message)
        raise InvalidEvent(message) from exc
    from deployer import operations  # noqa: PLC0415 - each function imports only its own path

    try:
        result = operations.run(ad, request)
    except DeployerError as exc:
        logger.warning(
            "operator request refused",
            action=request.action,
            app=request.app,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        count(DeployMetric.OPERATION_REFUSED)
        raise
    return {"status": "ok", **result}


def _request_errors(exc: ValidationError) -> str:
    """Each bad field by its own name (not the model's internal path), and what is wrong."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc[:1] == ["request"]:
            loc = loc[2:] if len(loc) > 1 and err["type"] != "union_tag_invalid" else ["action"]
        parts.append(f"{'.'.join(loc) or 'request'}: {err['msg']}")
    return "; ".join(parts)


def handle_instance_launch(ad: Adapters, event: Any) -> dict[str, Any]:
    """An `EC2 Instance-launch Lifecycle Action` event, or a batch of delayed re-checks (SQS)."""
    from deployer import launch  # noqa: PLC0415 - each function imports only its own path

    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        results = []
        for record in event["Records"]:
            try:
                recheck = launch.parse_recheck(record.get("body", ""))
                if isinstance(recheck, launch.SwapHeartbeat):
                    results.append(launch.on_heartbeat(ad, recheck, _scheduler(ad)))
                    continue
                parsed = InstanceLaunchEvent.model_validate(recheck.event)
            except (ValidationError, ValueError) as exc:
                results.append(_rejected("launch re-check", exc))
                continue
            results.append(
                launch.on_launch(ad, parsed, _scheduler(ad), recheck.first_seen, recheck.attempt + 1)
            )
        return {"status": "ok", "results": results}
    try:
        parsed = InstanceLaunchEvent.model_validate(event)
    except ValidationError as exc:
        return _rejected("launch lifecycle event", exc)
    return {"status": "ok", **launch.on_launch(ad, parsed, _scheduler(ad))}


def _scheduler(ad: Adapters) -> Any:
    def schedule(recheck: launch.Recheck | launch.SwapHeartbeat, delay: int) -> None:
        ad.rechecks.schedule(recheck.model_dump(mode="json"), delay)

    return schedule


def handle_reconcile(ad: Adapters, event: Any) -> dict[str, Any]:
    from deployer import reconcile  # noqa: PLC0415 - each function imports only its own path

    return {"status": "ok", "apps": reconcile.reconcile_all(ad)}
