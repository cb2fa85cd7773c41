"""Fault injection at the botocore client: every AWS call a flow's invocations make is numbered
k = 1..N, and one fault is placed at one k.

- error: call k fails once with the service's throttling error, raised where botocore's own retries
  have already given up (the wrapper sits outside them, so nothing masks it);
- crash: the invocation dies right after call k returns (`InvocationDied` is a BaseException, so
  no `except Exception` in the handler or the core can catch it, and nothing after it runs);
- duplicate: the same event is delivered again, to completion, right after call k of the first
  delivery (EventBridge delivers at least once, and twice may overlap).

Only calls made while a handler runs are numbered; the harness's own reads and writes are not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

ERROR = "error"
CRASH = "crash"
DUPLICATE = "duplicate"
KINDS = (ERROR, CRASH, DUPLICATE)

# The code each service answers when it throttles a caller (its documented retryable error).
_THROTTLING = {
    "dynamodb": "ThrottlingException",
    "ssm": "ThrottlingException",
    "ec2": "RequestLimitExceeded",
    "autoscaling": "Throttling",
    "sns": "Throttling",
    "sqs": "RequestThrottled",
    "ecr": "ThrottlingException",
    "cloudwatch": "Throttling",
}


class InvocationDied(BaseException):
    """The Lambda invocation ends here: timeout, out of memory, the sandbox reclaimed."""


@dataclass(frozen=True)
class Fault:
    kind: str
    k: int


@dataclass
class Injector:
    """Numbers the AWS calls of handler invocations and fires at most one fault."""

    fault: Fault | None = None
    calls: list[str] = field(default_factory=list)
    fired: bool = False
    # Set by the world: delivers the event being handled once more (for DUPLICATE).
    redeliver: Callable[[], None] | None = None
    _armed: int = 0

    @contextmanager
    def armed(self) -> Iterator[None]:
        self._armed += 1
        try:
            yield
        finally:
            self._armed -= 1

    @contextmanager
    def disarmed(self) -> Iterator[None]:
        saved, self._armed = self._armed, 0
        try:
            yield
        finally:
            self._armed = saved

    def call(
        self, client: BaseClient, operation: str, params: dict[str, Any], original: Callable[..., Any]
    ) -> Any:
        if not self._armed:
            return original(client, operation, params)
        service = client.meta.service_model.service_name
        self.calls.append(f"{service}.{operation}")
        k = len(self.calls)
        fault = self.fault if not self.fired and self.fault is not None and self.fault.k == k else None
        if fault is not None and fault.kind == ERROR:
            self.fired = True
            code = _THROTTLING.get(service, "ThrottlingException")
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                operation,
            )
        try:
            result = original(client, operation, params)
        finally:
            # Also after a call AWS answered with an error (a secret not found): the invocation
            # may die, or its twin run, right after any answer.
            if fault is not None and fault.kind == CRASH:
                self.fired = True
                raise InvocationDied(f"invocation died after call {k} ({service}.{operation})")
            if fault is not None and fault.kind == DUPLICATE and self.redeliver is not None:
                self.fired = True
                with self.disarmed():
                    self.redeliver()
        return result


INJECTOR = Injector()
_original = BaseClient._make_api_call


def _make_api_call(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
    return INJECTOR.call(self, operation_name, api_params, _original)


def install() -> Injector:
    """Route every botocore client's calls through the injector (idempotent)."""
    BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
    return INJECTOR
