"""EventBridge stand-in: the default bus, with the rules the STACK CREATED (read back with the
events API, `localcloud.aws.stack.Rule`).

`put_event` matches every enabled pattern rule with moto's own EventBridge pattern matcher
(`moto.events.models.EventPattern`: exact values, prefix, suffix, anything-but, numeric, exists,
wildcard, equals-ignore-case, cidr, `$or`), and delivers the event to each target function
asynchronously (as EventBridge → Lambda does). A failed invocation is retried as the function's
EventInvokeConfig says (`MaximumRetryAttempts`, Lambda's default 2), then kept in
`dead_letters`. Scheduled rules fire only when asked (`fire_schedule`), so tests decide when
the reconciler runs.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from localcloud.aws.lambdas import Invocation, LambdaService
from localcloud.aws.stack import Rule


def compile_pattern(pattern: str) -> Any:
    """moto's EventBridge pattern (refuses a malformed one as EventBridge does)."""
    from moto.events.models import EventPattern  # noqa: PLC0415 - moto is heavy

    return EventPattern.load(pattern)


def matches(pattern: str, event: dict[str, Any]) -> bool:
    """True when `event` matches the EventBridge pattern text, as moto's EventBridge decides."""
    return bool(compile_pattern(pattern).matches_event(event))


@dataclass
class Delivery:
    rule: str
    function: str
    event: dict[str, Any]
    attempts: list[Invocation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].error is None


def envelope(
    detail_type: str,
    source: str,
    detail: dict[str, Any],
    resources: list[str] | None = None,
    *,
    region: str = "us-east-1",
    account: str = "123456789012",
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": resources or [],
        "detail": detail,
    }


class EventBus:
    def __init__(
        self,
        rules: list[Rule],
        lambdas: LambdaService,
        retries: int | None = None,
        retry_delay: float = 0.5,
        workers: int = 6,
    ) -> None:
        self.rules = rules
        self._patterns = {r.name: compile_pattern(r.pattern) for r in rules if r.pattern is not None}
        self.lambdas = lambdas
        self.retries = retries  # None: each function's own (EventInvokeConfig)
        self.retry_delay = retry_delay
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eventbridge")
        self._cond = threading.Condition()
        self._pending = 0
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[Delivery] = []
        self.unmatched: list[dict[str, Any]] = []
        self.listeners: list[Callable[[Delivery], None]] = []

    def matching_rules(self, event: dict[str, Any]) -> list[Rule]:
        return [
            r
            for r in self.rules
            if r.enabled and r.name in self._patterns and self._patterns[r.name].matches_event(event)
        ]

    def put_event(self, event: dict[str, Any]) -> list[Delivery]:
        """Route one event; returns the deliveries it started (empty when no rule matches)."""
        with self._cond:
            self.events.append(event)
        rules = self.matching_rules(event)
        if not rules:
            self.unmatched.append(event)
        started = []
        for rule in rules:
            payload = rule.input if rule.input is not None else event
            for fn in rule.targets:
                started.append(self._deliver(rule.name, fn, payload))
        return started

    def fire_schedule(self, function: str | None = None) -> list[Delivery]:
        """Fire every scheduled rule (or those targeting `function`) once, as the scheduler would."""
        started = []
        for rule in self.rules:
            if rule.schedule is None or not rule.enabled:
                continue
            if function and function not in rule.targets:
                continue
            event = envelope(
                "Scheduled Event",
                "aws.events",
                {},
                [rule.arn],
                region=rule.arn.split(":")[3],
                account=rule.arn.split(":")[4],
            )
            payload = rule.input if rule.input is not None else event
            for fn in rule.targets:
                started.append(self._deliver(rule.name, fn, payload))
        return started

    def _deliver(self, rule: str, fn: str, event: dict[str, Any]) -> Delivery:
        d = Delivery(rule, fn, event)
        with self._cond:
            self._pending += 1
            self.deliveries.append(d)
        self._pool.submit(self._run, d)
        return d

    def _run(self, d: Delivery) -> None:
        try:
            retries = self.retries if self.retries is not None else self.lambdas.retries(d.function)
            for attempt in range(retries + 1):
                if attempt:
                    time.sleep(self.retry_delay * attempt)
                inv = self.lambdas.invoke(d.function, d.event)
                d.attempts.append(inv)
                if inv.error is None:
                    break
            else:
                with self._cond:
                    self.dead_letters.append(d)
            for listener in list(self.listeners):
                listener(d)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def busy(self) -> bool:
        with self._cond:
            return self._pending > 0

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no delivery is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
