"""The stage gates' triggers (on-command-status; docs/stages.md):

    stage tick (StageTickQueue)          -> converge(app): the bake is judged, the next tick kept
    CloudWatch Alarm State Change        -> converge(app) of every app naming the alarm whose
                                            staged release is DEPLOYING

The event's state is only a hint: the converge reads the alarms again (DescribeAlarms) before
deciding, so a stale, reordered or duplicated event decides nothing wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer import controller, markers
from deployer.adapters.stage_ticks import MAX_DELAY
from deployer.models.records import ReleaseStatus
from deployer.observability import logger

if TYPE_CHECKING:
    from deployer.models.events import AlarmStateChangeEvent, StageTick
    from deployer.wiring import Adapters


def on_tick(ad: Adapters, tick: StageTick) -> dict[str, Any]:
    now = ad.state.now()
    if tick.due > now:
        # Here before its time (a clock a second behind SQS's): it goes back for what is left,
        # still the chain's one tick (converging now would find it not due and end the chain).
        ad.stage_ticks.send(tick.model_dump(), min(tick.due - now, MAX_DELAY))
        return {"action": "early", "app": tick.app, "tick_release": tick.release, "due": tick.due}
    report = controller.converge(ad, tick.app)
    return {"action": "tick", "app": tick.app, "tick_release": tick.release, **report.as_dict()}


def on_alarm(ad: Adapters, event: AlarmStateChangeEvent) -> dict[str, Any]:
    name = event.detail.alarm_name
    converged: dict[str, Any] = {}
    for config in ad.apps.list():
        if name not in config.rollout.alarms:
            continue
        state = ad.state.get(config.app)
        number = markers.owned_release(config.app, state.lock_owner)
        release = ad.releases.get_or_none(config.app, number) if number else None
        if release is None or release.status is not ReleaseStatus.DEPLOYING or release.stage is None:
            continue
        converged[config.app] = controller.converge(ad, config.app, config=config).as_dict()
    if not converged:
        logger.info("alarm event for no staged deploy", alarm=name, state=event.detail.state.value)
        return {"action": "ignored", "alarm": name, "reason": "no app naming it is deploying in stages"}
    logger.info("alarm event", alarm=name, state=event.detail.state.value, apps=sorted(converged))
    return {"action": "converged", "alarm": name, "apps": converged}
