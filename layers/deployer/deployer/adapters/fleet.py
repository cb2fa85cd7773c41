"""The swap command: SSM Run Command with our document, at the app's rate.

The whole group is targeted by the tag `aws:autoscaling:groupName` that Auto Scaling puts on
every instance it launches, so instances that join before delivery are included; single
instances (a new launch, a drifted host) are targeted by id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer import builders
from deployer.adapters import aws_errors
from deployer.errors import InvalidSettings

if TYPE_CHECKING:
    from datetime import datetime

    from mypy_boto3_ssm.client import SSMClient

    from deployer.models.config import AppConfig

GROUP_TAG = "aws:autoscaling:groupName"
# SendCommand's InstanceIds takes at most 50 ids (botocore's model).
MAX_INSTANCE_IDS = 50


class Fleet:
    def __init__(
        self,
        ssm: SSMClient,
        document_name: str,
        log_group: str,
        sender: SSMClient | None = None,
        task_document: str | None = None,
    ) -> None:
        """`sender` makes the SendCommand calls: a client configured for one attempt
        (`ClientFactory.single_attempt_client`), since a re-sent request after a timeout could
        start a second command; `ssm` (with retries) makes every other call. `task_document`:
        the release task's document (TaskDocument)."""
        self._ssm = ssm
        self._sender = sender or ssm
        self._document = document_name
        self._log_group = log_group
        self._task_document = task_document

    def send_swap(
        self,
        config: AppConfig,
        parameters: dict[str, list[str]],
        comment: str,
        *,
        hosts: int,
        rollback: bool = False,
        instance_ids: list[str] | None = None,
    ) -> str:
        """Send the swap to every instance of the app's group (or to `instance_ids`, at most
        MAX_INSTANCE_IDS: a staged release's stages); returns the command id.

        `hosts` is the most instances the group may have (its MaxSize): the delivery deadline
        must cover every wave. A rollback goes at ``rollout.rollback_max_concurrency`` (every
        host already ran the image).
        """
        rollout = config.rollout
        concurrency = rollout.rollback_max_concurrency if rollback else rollout.max_concurrency
        target: dict[str, Any] = {
            "Targets": [{"Key": f"tag:{GROUP_TAG}", "Values": [config.auto_scaling_group]}]
        }
        if instance_ids:
            if len(instance_ids) > MAX_INSTANCE_IDS:
                raise ValueError(f"at most {MAX_INSTANCE_IDS} instance ids per command")
            target = {"InstanceIds": list(instance_ids)}
        return self._send(
            config,
            parameters,
            comment,
            **target,
            MaxConcurrency=concurrency,
            MaxErrors=config.rollout.max_errors,
            TimeoutSeconds=builders.send_timeout_seconds(config, concurrency, hosts),
        )

    def send_swap_to_instances(
        self,
        config: AppConfig,
        instance_ids: list[str],
        parameters: dict[str, list[str]],
        comment: str,
    ) -> str:
        """Send the swap to explicit instances (all at once: callers pass a handful)."""
        if not instance_ids:
            raise ValueError("instance_ids must not be empty")
        return self._send(
            config,
            parameters,
            comment,
            InstanceIds=list(instance_ids),
            MaxConcurrency=str(len(instance_ids)),
            MaxErrors=config.rollout.max_errors,
            TimeoutSeconds=builders.send_timeout_seconds(config, str(len(instance_ids)), len(instance_ids)),
        )

    def find(self, comment: str, invoked_after: datetime) -> str | None:
        """The id of a swap command sent with `comment` since `invoked_after`, or None.

        Used only when a send may have happened in an invocation that died before recording its
        command id, so the command is not sent a second time."""
        found = self._find(self._document, comment, invoked_after)
        return str(found["CommandId"]) if found is not None else None

    def find_sent(self, comment: str, invoked_after: datetime) -> tuple[str, list[str]] | None:
        """(command id, instance ids) of a swap command sent by id with `comment` since
        `invoked_after`, or None (same use as `find`: a stage's command)."""
        found = self._find(self._document, comment, invoked_after)
        if found is None:
            return None
        return str(found["CommandId"]), [str(i) for i in found.get("InstanceIds") or []]

    def find_task(self, comment: str, invoked_after: datetime) -> tuple[str, str] | None:
        """(command id, instance id) of a task command sent with `comment` since
        `invoked_after`, or None (same use as `find`)."""
        found = self._find(self.task_document, comment, invoked_after)
        if found is None:
            return None
        instances = found.get("InstanceIds") or [""]
        return str(found["CommandId"]), str(instances[0])

    @property
    def task_document(self) -> str:
        if not self._task_document:
            raise InvalidSettings("this stack has no task document (TASK_DOCUMENT_NAME): update the stack")
        return self._task_document

    def send_task(
        self, config: AppConfig, instance_id: str, parameters: dict[str, list[str]], comment: str
    ) -> str:
        """Send a release's task to one instance; returns the command id."""
        with aws_errors(f"sending the release task command for {config.app}"):
            response = self._sender.send_command(
                DocumentName=self.task_document,
                InstanceIds=[instance_id],
                Parameters=parameters,
                Comment=comment[:100],
                MaxConcurrency="1",
                MaxErrors="0",
                TimeoutSeconds=max(builders.TIMEOUT_SECONDS_MIN, config.rollout.delivery_timeout),
                CloudWatchOutputConfig={
                    "CloudWatchLogGroupName": self._log_group,
                    "CloudWatchOutputEnabled": True,
                },
            )
        return str(response["Command"]["CommandId"])

    def _find(self, document: str, comment: str, invoked_after: datetime) -> Any:
        kwargs: dict[str, Any] = {
            "Filters": [
                {"key": "InvokedAfter", "value": invoked_after.strftime("%Y-%m-%dT%H:%M:%SZ")},
                {"key": "DocumentName", "value": document},
            ],
            "MaxResults": 50,
        }
        while True:
            with aws_errors("listing recent commands"):
                response = self._ssm.list_commands(**kwargs)
            for command in response.get("Commands", []):
                if (
                    command.get("Comment") == comment[:100]
                    and command.get("DocumentName", document) == document
                ):
                    return command
            token = response.get("NextToken")
            if not token:
                return None
            kwargs["NextToken"] = token

    def cancel(self, command_id: str) -> None:
        """Stop a command: invocations not started never run; running ones are signalled."""
        with aws_errors(f"cancelling command {command_id}"):
            self._ssm.cancel_command(CommandId=command_id)

    def _send(
        self,
        config: AppConfig,
        parameters: dict[str, list[str]],
        comment: str,
        **target: Any,
    ) -> str:
        with aws_errors(f"sending the swap command for {config.app}"):
            response = self._sender.send_command(
                DocumentName=self._document,
                Parameters=parameters,
                Comment=comment[:100],
                CloudWatchOutputConfig={
                    "CloudWatchLogGroupName": self._log_group,
                    "CloudWatchOutputEnabled": True,
                },
                **target,
            )
        return str(response["Command"]["CommandId"])
