"""What watches a staged release between its stages' commands: the alarm gate's reads (the
verdict is `alarm_gate`'s) and the stage tick chain (docs/stages.md, "The bake timer").

A baking release always has one tick pending on the stage tick queue: whichever converge sees it
baking with no tick due in the future (the decision that made it BAKING, the tick that just
arrived, the reconciler after a tick was lost) records `next_tick_at` with a conditional write
and only then sends the tick. A duplicate or concurrent converge loses the write and sends
nothing, so there is one chain per baking release; a crash between the write and the send
loses that tick, and the first converge after its due time (the reconciler's) starts it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer.adapters.stage_ticks import MAX_DELAY
from deployer.controller import alarm_gate
from deployer.observability import logger

if TYPE_CHECKING:
    from deployer.controller.types import Now
    from deployer.models.config import AppConfig
    from deployer.models.records import Release
    from deployer.wiring import Adapters

TICK_KIND = "stage-tick"


def tick_delay(interval: int, bake_until: int, now: int) -> int:
    """DelaySeconds of the next tick: the analysis interval, or the bake's end when sooner,
    within SQS's 1..900."""
    return max(1, min(interval, bake_until - now, MAX_DELAY))


def tick_message(release: Release, due: int) -> dict[str, Any]:
    return {
        "kind": TICK_KIND,
        "app": release.app,
        "release": release.release,
        "stage": release.stage,
        "due": due,
    }


def ensure_tick(ad: Adapters, config: AppConfig, release: Release, now: Now) -> int | None:
    """Make sure a tick is pending for a baking release; the delay of the tick this call sent,
    or None (one is pending, another invocation won, or the stack has no tick queue)."""
    if not ad.stage_ticks.enabled or release.bake_until is None or release.stage is None:
        return None
    if release.next_tick_at is not None and release.next_tick_at > now.epoch:
        return None
    rollout = config.rollout
    # Nothing to look at during the bake (no analysis, no alarm): one tick at its end will do.
    watched = rollout.analysis.enabled or bool(rollout.alarms)
    interval = rollout.analysis.interval_seconds if watched else MAX_DELAY
    delay = tick_delay(interval, release.bake_until, now.epoch)
    due = now.epoch + delay
    if not ad.releases.claim_tick(release.app, release.release, release.stage, due, now.epoch):
        return None
    ad.stage_ticks.send(tick_message(release, due), delay)
    logger.info("stage tick scheduled", app=release.app, release=release.release, delay=delay, due=due)
    return delay


def alarm_block(ad: Adapters, config: AppConfig, release: Release, now: Now) -> str | None:
    """Read the app's alarms (no call when it names none), record their states on the release
    when they changed, and return why the release must fail (None: the gate passes)."""
    names = config.rollout.alarms
    if not names:
        return None
    found = ad.alarms.states(names)
    states = alarm_gate.states(names, found, now.epoch)
    if alarm_gate.changed(release.alarm_states, states):
        ad.releases.set_fields(release.app, release.release, alarm_states=states)
    return alarm_gate.verdict(names, found)
