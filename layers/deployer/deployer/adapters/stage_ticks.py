"""The stage tick queue (SQS, StageTickQueue): a baking release is looked at again after a delay
(the message is the tick itself, as JSON; its delay is SQS's DelaySeconds). on-command-status
consumes the queue and converges the tick's app (docs/stages.md, "The bake timer")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

# SQS's largest DelaySeconds.
MAX_DELAY = 900


class StageTicks:
    def __init__(self, queue_url: str | None, sqs: Callable[[], SQSClient]) -> None:
        self._queue_url = queue_url
        self._sqs = sqs

    @property
    def enabled(self) -> bool:
        """Whether this stack has the queue (without it the reconciler's tick ends bakes)."""
        return bool(self._queue_url)

    def send(self, tick: dict[str, Any], delay: int) -> None:
        """Deliver `tick` to on-command-status after `delay` seconds (1..900)."""
        assert self._queue_url, "no stage tick queue"
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"DelaySeconds must be 0..{MAX_DELAY}, not {delay}")
        with aws_errors("scheduling a stage tick"):
            self._sqs().send_message(
                QueueUrl=self._queue_url, MessageBody=json.dumps(tick), DelaySeconds=delay
            )
