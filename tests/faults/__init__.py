"""`make faults`: fault injection at every AWS call of every flow, then the platform's own recovery,
then one invariant check over the world (docs/faults.md).

This package installs the suite's clock before anything imports the deployer: the deploy lock's
lease is read with `time.time` (bound as a default argument when the adapters are imported), and
Powertools' idempotency records with `datetime.now`. Shifting both lets a case "wait" for a lease or
an in-progress record to expire without sleeping. Run it as `python -m tests.faults`.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time as _time
import types
import warnings

if "deployer" in sys.modules:
    raise RuntimeError("tests.faults must be imported before the deployer: its clock would be bound already")

# Handlers log and emit metrics on stdout; the suite keeps them quiet unless asked (-v).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")
warnings.filterwarnings("ignore", message="No application metrics to publish")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Deployer")
# Only moto answers: fake credentials, one region, and no AMI catalogue (slow to load, unused).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }
)
os.environ.pop("AWS_PROFILE", None)


class Clock:
    """Wall-clock time plus an offset the suite advances (process-wide, so each forked case owns its own)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._real = _time.time

    def time(self) -> float:
        return self._real() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


CLOCK = Clock()
_time.time = CLOCK.time


class _ShiftedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _ShiftedDatetime:  # type: ignore[override]
        return super().now(tz) + _dt.timedelta(seconds=CLOCK.offset)


def _shifted_datetime_module() -> types.ModuleType:
    module = types.ModuleType("datetime")
    module.__dict__.update(_dt.__dict__)
    module.datetime = _ShiftedDatetime  # type: ignore[attr-defined]
    return module


def _shift_idempotency_clock() -> None:
    """Powertools' idempotency layer reads `dt.datetime.now()`: the in-progress window of a crashed
    invocation must pass before its redelivery, as it does on Lambda (retries come a minute later)."""
    import importlib  # noqa: PLC0415

    shifted = _shifted_datetime_module()
    for name in (
        "aws_lambda_powertools.utilities.idempotency.base",
        "aws_lambda_powertools.utilities.idempotency.persistence.base",
        "aws_lambda_powertools.utilities.idempotency.persistence.datarecord",
        "aws_lambda_powertools.utilities.idempotency.persistence.dynamodb",
    ):
        importlib.import_module(name).dt = shifted  # type: ignore[attr-defined]


_shift_idempotency_clock()
