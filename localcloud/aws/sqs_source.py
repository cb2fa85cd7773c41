"""Lambda's SQS event source mapping: poll a queue of the stack and invoke its function.

Each received batch becomes one invocation with the `Records` shape Lambda sends; a batch the
function handles is deleted, a batch it fails on becomes visible again after the queue's
visibility timeout (and moves to the dead-letter queue per the queue's redrive policy, which
moto applies). Delayed messages (`DelaySeconds`) are delivered when moto makes them visible.
"""

from __future__ import annotations

import threading
from typing import Any

from localcloud.aws.lambdas import LambdaService


class SqsSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        function: str,
        lambdas: LambdaService,
        *,
        batch_size: int = 10,
        region: str = "us-east-1",
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.function = function
        self.lambdas = lambdas
        self.batch_size = max(1, min(10, batch_size))
        self.region = region
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.invocations = 0
        self.failures = 0
        self.busy = False

    def start(self) -> SqsSource:
        self._thread = threading.Thread(target=self._run, name=f"sqs-{self.function}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                msgs = []
            if not msgs:
                self._stop.wait(0.2)
                continue
            self.busy = True
            try:
                event = {"Records": [self._record(m) for m in msgs]}
                inv = self.lambdas.invoke(self.function, event)
                self.invocations += 1
                if inv.error is None:
                    failed = (
                        {f.get("itemIdentifier") for f in (inv.result or {}).get("batchItemFailures", [])}
                        if isinstance(inv.result, dict)
                        else set()
                    )
                    for m in msgs:
                        if m["MessageId"] not in failed:
                            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
                else:
                    self.failures += 1
            finally:
                self.busy = False

    def _record(self, m: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": m.get("MessageAttributes", {}),
            "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }
