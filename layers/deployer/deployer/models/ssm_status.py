"""SSM's command and invocation statuses, in both of its vocabularies (a module of its own: the
push path reads statuses without importing every event model)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any


class SsmStatus(StrEnum):
    """Every status SSM reports for a command or one of its invocations.

    `Status` (and the EventBridge event's `status`) is coarse: botocore's CommandStatus /
    CommandInvocationStatus enums (Pending, InProgress, Delayed, Success, Cancelled, Failed,
    TimedOut, Cancelling). The distinctions (Incomplete, Execution / Delivery Timed Out,
    Undeliverable, Terminated, ...) exist only in `StatusDetails`, read from SSM's API. Both
    vocabularies and spellings are accepted so a new or finer value never breaks parsing;
    decisions read StatusDetails (docs/lifecycle.md).
    """

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    IN_PROGRESS_SPACED = "In Progress"
    DELAYED = "Delayed"
    CANCELLING = "Cancelling"
    SUCCESS = "Success"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    EXECUTION_TIMED_OUT = "Execution Timed Out"
    DELIVERY_TIMED_OUT = "Delivery Timed Out"
    CANCELLED = "Cancelled"
    UNDELIVERABLE = "Undeliverable"
    TERMINATED = "Terminated"
    INCOMPLETE = "Incomplete"
    RATE_EXCEEDED = "Rate Exceeded"
    ACCESS_DENIED = "Access Denied"
    # A command's StatusDetails when its tag target matches no managed node (terminal).
    NO_INSTANCES_IN_TAG = "No Instances In Tag"

    @property
    def terminal(self) -> bool:
        return self not in _NON_TERMINAL

    @classmethod
    def parse(cls, value: str | None) -> SsmStatus | None:
        """The status whatever SSM's spelling (`InProgress`, `In Progress`...), None if unknown."""
        normalised = normalise_status(value)
        return cls(normalised) if normalised in cls._value2member_map_ else None


_NON_TERMINAL = frozenset(
    {
        SsmStatus.PENDING,
        SsmStatus.IN_PROGRESS,
        SsmStatus.IN_PROGRESS_SPACED,
        SsmStatus.DELAYED,
        SsmStatus.CANCELLING,
    }
)


def normalise_status(value: Any) -> Any:
    # SSM spells a few statuses both ways ("InProgress" / "In Progress", "TimedOut"); normalise
    # case and spacing so one enum member matches.
    if isinstance(value, str):
        folded = re.sub(r"\s+", "", value).lower()
        for member in SsmStatus:
            if member.value.replace(" ", "").lower() == folded:
                return member.value
    return value
