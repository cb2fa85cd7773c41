"""SSM Run Command rate control: MaxConcurrency, MaxErrors and the command's final status.

What the SSM stand-in decides, kept apart from running anything so each rule is tested alone.
Rounding (SSM documents neither direction precisely): a MaxConcurrency percentage rounds
up and is at least 1, so "25%" of 3 hosts is 1; a MaxErrors percentage rounds down, so
"25%" of 3 hosts tolerates 0 errors. SSM stops sending to further targets once the error
count EXCEEDS MaxErrors; invocations already running finish. Targets never sent become
`Terminated`. `Undeliverable` and `Delivery Timed Out` do not count against MaxErrors.

Vocabulary, as SSM reports it: the decisions here are in `StatusDetails` values (SSM API
reference, Command / CommandInvocation `StatusDetails`: Success, Failed, Execution Timed Out,
Delivery Timed Out, Undeliverable, Terminated, Cancelled; for a command also Incomplete).
`Status`, and the `status` of the EventBridge events, is the coarse value of botocore's
`CommandInvocationStatus` / `CommandStatus` enum: `invocation_status` / `command_status_of`
map a detail to it (AWS documents the enums and the details, not the pairing; the product
decides from StatusDetails only, so the pairing is never relied on).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

DEFAULT_MAX_CONCURRENCY = "50"
DEFAULT_MAX_ERRORS = "0"

_RATE = re.compile(r"^(?:[1-9][0-9]*|0)%?$")

# Invocation StatusDetails that count as errors against MaxErrors ("Invocation failures count
# against the MaxErrors limit"; so do execution timeouts).
ERROR_STATUSES = frozenset({"Failed", "Execution Timed Out"})
# Invocation StatusDetails that neither succeed nor count as errors.
NOT_COUNTED = frozenset({"Undeliverable", "Delivery Timed Out", "Terminated", "Cancelled"})

# StatusDetails -> Status (botocore's CommandInvocationStatus enum: Pending, InProgress, Delayed,
# Success, Cancelled, TimedOut, Failed, Cancelling).
_INVOCATION_STATUS = {
    "Pending": "Pending",
    "In Progress": "InProgress",
    "Delayed": "Delayed",
    "Success": "Success",
    "Failed": "Failed",
    "Execution Timed Out": "TimedOut",
    "Delivery Timed Out": "TimedOut",
    "Undeliverable": "Failed",
    "Terminated": "Cancelled",
    "Cancelled": "Cancelled",
    "Cancelling": "Cancelling",
}
# StatusDetails -> Status (botocore's CommandStatus enum: Pending, InProgress, Success, Cancelled,
# Failed, TimedOut, Cancelling).
_COMMAND_STATUS = {
    "Pending": "Pending",
    "In Progress": "InProgress",
    "Success": "Success",
    "Failed": "Failed",
    "Incomplete": "Failed",
    "Execution Timed Out": "TimedOut",
    "Delivery Timed Out": "TimedOut",
    "Cancelled": "Cancelled",
    "Cancelling": "Cancelling",
    "Rate Exceeded": "Failed",
    "Access Denied": "Failed",
}


def invocation_status(details: str) -> str:
    """The coarse `Status` SSM reports beside an invocation's `StatusDetails`."""
    return _INVOCATION_STATUS[details]


def command_status_of(details: str) -> str:
    """The coarse `Status` SSM reports beside a command's `StatusDetails` (and in its event)."""
    return _COMMAND_STATUS[details]


class RateError(ValueError):
    """A MaxConcurrency or MaxErrors value SSM would refuse."""


def _parse(value: str, total: int, what: str, round_up: bool) -> int:
    if not isinstance(value, str) or not _RATE.match(value):
        raise RateError(f"{what} must be a whole number or a percentage like '25%', got {value!r}")
    if value.endswith("%"):
        pct = int(value[:-1])
        if pct > 100:
            raise RateError(f"{what} percentage must be at most 100%, got {value!r}")
        exact = total * pct / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def max_concurrency(value: str | None, total: int) -> int:
    """How many targets may run at once (at least 1)."""
    n = _parse(value or DEFAULT_MAX_CONCURRENCY, total, "MaxConcurrency", round_up=True)
    if n == 0 and not (value or "").endswith("%"):
        raise RateError("MaxConcurrency must be at least 1")
    return max(1, n)


def max_errors(value: str | None, total: int) -> int:
    """How many errors are tolerated before SSM stops sending to new targets."""
    return _parse(value or DEFAULT_MAX_ERRORS, total, "MaxErrors", round_up=False)


def may_start_more(errors: int, allowed_errors: int) -> bool:
    """SSM keeps sending to new targets until the error count exceeds MaxErrors."""
    return errors <= allowed_errors


def command_status(statuses: Sequence[str], allowed_errors: int) -> str:
    """The command's terminal StatusDetails from its invocations' terminal StatusDetails.

    Failed / Execution Timed Out / Delivery Timed Out: more than MaxErrors invocations ended so;
    Success: every invocation succeeded; Incomplete: the rest (some did not succeed, too few
    failed for Failed)."""
    errors = [s for s in statuses if s in ERROR_STATUSES]
    if len(errors) > allowed_errors:
        return "Execution Timed Out" if all(s == "Execution Timed Out" for s in errors) else "Failed"
    if statuses and all(s == "Success" for s in statuses):
        return "Success"
    if sum(1 for s in statuses if s == "Delivery Timed Out") > allowed_errors:
        return "Delivery Timed Out"
    return "Incomplete" if statuses else "Success"


@dataclass(frozen=True)
class Outcome:
    target: str
    status: str


def run_rate_controlled(
    targets: Sequence[str],
    run_one: Callable[[str], str],
    concurrency: str | None,
    errors: str | None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run `run_one(target) -> invocation status` over targets the way SSM paces them.

    Returns one Outcome per target in target order; targets never started are `Terminated`
    (SSM: "the parent command exceeded its MaxErrors limit and subsequent command invocations
    were canceled by the system").
    """
    total = len(targets)
    width = max_concurrency(concurrency, total)
    allowed = max_errors(errors, total)
    results: dict[str, str] = {}
    lock = threading.Lock()
    error_count = 0
    queue = list(targets)
    if not queue:
        return []
    with ThreadPoolExecutor(max_workers=min(width, total), thread_name_prefix="ssm-target") as pool:
        running: dict[Future[str], str] = {}
        while queue or running:
            while queue and len(running) < width and may_start_more(error_count, allowed):
                target = queue.pop(0)
                running[pool.submit(run_one, target)] = target
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                target = running.pop(fut)
                try:
                    status = fut.result()
                except Exception:
                    status = "Failed"
                with lock:
                    results[target] = status
                    if status in ERROR_STATUSES:
                        error_count += 1
                if on_done:
                    on_done(Outcome(target, status))
    for target in queue:
        results[target] = "Terminated"
        if on_done:
            on_done(Outcome(target, "Terminated"))
    return [Outcome(t, results[t]) for t in targets]
