"""Deploy notifications: one SNS message per deploy started / succeeded / failed / rolled back.

`build_message` is pure (tested as exact values); `Notifier` only publishes what it built.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from deployer.adapters import aws_errors

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

# Human wording for the agent's failure classes, used in the one-sentence reason.
FAILURE_CLASS_TEXT: Mapping[str, str] = {
    "input": "rejected a deploy parameter",
    "lock": "could not take the host lock",
    "pull": "could not pull the image",
    "start": "could not start the new container",
    "health": "failed the health check",
    "switch": "could not switch traffic",
    "cleanup": "went live but could not clean up the old container",
    "timeout": "timed out",
    "cancelled": "had the command cancelled",
    "unreached": "were not reached by SSM",
    "unknown": "failed without a readable summary",
}

SUBJECT_MAX = 100


class NoticeKind(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    # A staged release (docs/stages.md): a stage's hosts took it and it bakes; a stage waits for
    # `deployer continue`.
    STAGE_PASSED = "stage_passed"
    STAGE_AWAITING = "stage_awaiting"


class HostResult(BaseModel):
    """What one host reported, reduced to what a notification needs."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    instance_id: str
    ok: bool
    failure_class: str = "none"
    message: str = ""


class DeployNotice(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: NoticeKind
    app: str
    release: int
    tag: str | None = None
    digest: str
    source: str = "push"
    reason: str | None = None
    duration_seconds: float | None = None
    hosts_ok: int = 0
    hosts_failed: int = 0
    hosts_unreached: int = 0
    failure_classes: dict[str, int] = Field(default_factory=dict)
    top_failure: str | None = None
    rolled_back_to: int | None = None
    stage: int | None = None  # stage notices: the stage (from 1)
    stage_hosts: list[str] = Field(default_factory=list)


def summarize_hosts(results: Iterable[HostResult]) -> tuple[int, int, dict[str, int], str | None]:
    """Counts of ok and failed hosts, failure classes, and the top failure as one sentence.

    Unreached hosts (SSM never delivered) are neither ok nor failed: they are counted by class.
    """
    ok = 0
    failed: list[HostResult] = []
    classes: Counter[str] = Counter()
    for result in results:
        if result.ok:
            ok += 1
            continue
        classes[result.failure_class] += 1
        if result.failure_class != "unreached":
            failed.append(result)
    top: str | None = None
    if classes:
        # Most frequent class first; ties broken by name so the sentence is stable.
        cls, count = sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        what = FAILURE_CLASS_TEXT.get(cls, f"failed ({cls})")
        noun = "host" if count == 1 else "hosts"
        example = next(
            (r for r in sorted(failed, key=lambda r: r.instance_id) if r.failure_class == cls and r.message),
            None,
        )
        top = f"{count} {noun} {what}"
        if example is not None:
            top += f"; {example.instance_id}: {example.message.rstrip('.')}"
        top += "."
    return ok, len(failed), dict(sorted(classes.items())), top


def sentence(notice: DeployNotice) -> str:
    """The one human sentence that opens the message."""
    label = f"{notice.app} release {notice.release}"
    image = notice.tag or notice.digest[:19]
    if notice.kind is NoticeKind.STARTED:
        text = f"Deploying {label} ({image}, {notice.source})"
        if notice.reason:
            text += f": {notice.reason.rstrip('.')}"
        return text + "."
    if notice.kind is NoticeKind.STAGE_PASSED:
        return (
            f"{label} ({image}): stage {notice.stage} live on {len(notice.stage_hosts)} hosts "
            f"({', '.join(notice.stage_hosts)}); {notice.reason or ''}".rstrip("; ")
            + "."
        )
    if notice.kind is NoticeKind.STAGE_AWAITING:
        return f"{label} ({image}): stage {notice.stage} waits for approval: deployer continue {notice.app}."
    hosts = f"{notice.hosts_ok} ok, {notice.hosts_failed} failed"
    if notice.hosts_unreached:
        hosts += f", {notice.hosts_unreached} unreached"
    took = f" in {notice.duration_seconds:.0f}s" if notice.duration_seconds is not None else ""
    if notice.kind is NoticeKind.SUCCEEDED:
        return f"Deployed {label} ({image}){took}: {hosts}."
    head = f"Deploy of {label} ({image}) failed{took}: {hosts}."
    if notice.top_failure:
        head += f" {notice.top_failure}"
    if notice.kind is NoticeKind.ROLLED_BACK:
        if notice.rolled_back_to is not None:
            head += f" Rolling back to release {notice.rolled_back_to}."
        else:
            head += " Rolled back."
    return head


def build_message(notice: DeployNotice, dedupe_id: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(subject, message, message attributes) for SNS; the message is JSON with a `text` sentence."""
    text = sentence(notice)
    subject_kind = {
        NoticeKind.STARTED: "deploying",
        NoticeKind.SUCCEEDED: "deployed",
        NoticeKind.FAILED: "deploy FAILED",
        NoticeKind.ROLLED_BACK: "deploy FAILED, rolled back",
        NoticeKind.STAGE_PASSED: f"stage {notice.stage} passed",
        NoticeKind.STAGE_AWAITING: f"stage {notice.stage} awaiting approval",
    }[notice.kind]
    subject = f"[deployer] {notice.app} release {notice.release} {subject_kind}"[:SUBJECT_MAX]
    body = {"text": text, "event": f"deploy_{notice.kind.value}", **notice.model_dump(mode="json")}
    attributes = {
        "app": {"DataType": "String", "StringValue": notice.app},
        "event": {"DataType": "String", "StringValue": f"deploy_{notice.kind.value}"},
    }
    if dedupe_id:
        body["dedupe_id"] = dedupe_id
        attributes["dedupe_id"] = {"DataType": "String", "StringValue": dedupe_id}
    return subject, json.dumps(body, sort_keys=True, separators=(",", ":")), attributes


class Notifier:
    """Publishes deploy notices to the stack's SNS topic; without a topic it does nothing."""

    def __init__(self, topic_arn: str | None, sns: SNSClient | Callable[[], SNSClient]) -> None:
        self._topic_arn = topic_arn
        self._sns = sns

    @property
    def enabled(self) -> bool:
        return bool(self._topic_arn)

    def publish(self, notice: DeployNotice, dedupe_id: str | None = None) -> str | None:
        """Publish one notice. `dedupe_id` is stable for the transition it announces (a notice
        is delivered at least once): it rides in the message and its attributes, and a FIFO
        topic deduplicates on it. AwsCallFailed when SNS refuses."""
        if not self._topic_arn:
            return None
        sns = self._sns() if callable(self._sns) else self._sns
        subject, message, attributes = build_message(notice, dedupe_id)
        extra: dict[str, Any] = {}
        if self._topic_arn.endswith(".fifo") and dedupe_id:
            extra = {"MessageDeduplicationId": dedupe_id[:128], "MessageGroupId": notice.app}
        with aws_errors(
            f"publishing the {notice.kind.value} notice of {notice.app} release {notice.release}"
        ):
            response = sns.publish(
                TopicArn=self._topic_arn,
                Subject=subject,
                Message=message,
                MessageAttributes=attributes,
                **extra,
            )
        return response.get("MessageId")
