"""The launch re-check queue (SQS): a launching instance not yet ready is looked at again later
(the message is the re-check itself, as JSON; its delay is SQS's DelaySeconds)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deployer.adapters import aws_errors
from deployer.errors import DeployerError

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


class RecheckQueue:
    def __init__(self, queue_url: str | None, sqs: Callable[[], SQSClient]) -> None:
        self._queue_url = queue_url
        self._sqs = sqs

    def schedule(self, message: dict[str, Any], delay: int) -> None:
        """Deliver `message` to the launch function again after `delay` seconds."""
        if not self._queue_url:
            raise DeployerError("LAUNCH_RECHECK_QUEUE_URL is not set: cannot wait for the instance")
        with aws_errors("scheduling a launch re-check"):
            self._sqs().send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps(message),
                DelaySeconds=delay,
            )
