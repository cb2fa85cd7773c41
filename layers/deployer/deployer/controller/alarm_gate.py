"""The alarm gate of a staged release (docs/stages.md, "Alarm gates"): the verdict on the states
of the alarms the app names (`rollout.alarms`). Nothing here reads or writes.

    an alarm in ALARM             -> the release fails: "alarm NAME is ALARM: <StateReason>"
    a named alarm that is missing -> the release fails: "alarm NAME does not exist" (fail closed:
                                     a gate that cannot be read protects nothing)
    OK, INSUFFICIENT_DATA         -> no verdict (INSUFFICIENT_DATA is a quiet metric, not harm)

The gate is checked right before each stage is sent and at every converge while a stage bakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from deployer.adapters.alarms import AlarmState

ALARM = "ALARM"
MISSING = "MISSING"


def verdict(names: Sequence[str], found: Mapping[str, AlarmState]) -> str | None:
    """Why the release must fail (the first named alarm that says so, in the config's order),
    or None when the gate passes."""
    for name in names:
        alarm = found.get(name)
        if alarm is None:
            return f"alarm {name} does not exist"
        if alarm.state == ALARM:
            return f"alarm {name} is ALARM: {alarm.reason}"
    return None


def states(names: Sequence[str], found: Mapping[str, AlarmState], at: int) -> dict[str, dict[str, Any]]:
    """The states to record on the release (`Release.alarm_states`), one per named alarm."""
    recorded: dict[str, dict[str, Any]] = {}
    for name in names:
        alarm = found.get(name)
        if alarm is None:
            recorded[name] = {"state": MISSING, "reason": "no alarm has this name", "at": at}
        else:
            recorded[name] = {"state": alarm.state, "reason": alarm.reason, "at": at}
    return recorded


def changed(before: Mapping[str, Mapping[str, Any]] | None, after: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the recorded states differ (ignoring when they were read): only a change is written."""

    def strip(value: Mapping[str, Mapping[str, Any]] | None) -> dict[str, tuple[Any, Any]]:
        return {n: (s.get("state"), s.get("reason")) for n, s in (value or {}).items()}

    return strip(before) != strip(after)
