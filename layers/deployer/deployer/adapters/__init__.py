"""Adapters: one small module per AWS resource kind, each taking an injected boto3 client.

`apps.AppsStore`, `app_state.AppState` (release counter, lease lock, pause flag, refused
digests), `releases.ReleasesStore`, `host_outcomes.HostOutcomesStore`, `pointer.PointerStore`,
`launch_templates.LaunchTemplates`, `fleet.Fleet`. botocore errors become `deployer.errors`
exceptions raised `from` the original.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from deployer.errors import AwsCallFailed, DeployerError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON-compatible dict as DynamoDB attribute values (floats become Decimal)."""
    plain = json.loads(json.dumps(item), parse_float=Decimal)
    return {key: _serializer.serialize(value) for key, value in plain.items()}


def to_value(value: Any) -> Any:
    return _serializer.serialize(json.loads(json.dumps(value), parse_float=Decimal))


def from_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values as plain Python (Decimal → int or float)."""
    return {key: _plain(_deserializer.deserialize(value)) for key, value in attributes.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn a botocore failure (after the client's retries) into AwsCallFailed naming `what`."""
    try:
        yield
    except ClientError as exc:
        raise AwsCallFailed(f"{what} failed: {error_code(exc)}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsCallFailed(f"{what} failed: {exc}") from exc


# Throttling codes: the request was refused before anything was done.
THROTTLES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
    }
)
# Top-level codes that say "try again": the step is retried by the next trigger, not failed.
# (DynamoDB answers a write that collides with a transaction with TransactionConflictException,
# which botocore's standard retries do not retry.)
TRANSIENT = THROTTLES | {
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerErrorException",
    "TransactionConflictException",
    "TransactionInProgressException",
}
# Cancellation reasons of a transaction that say "try again" (DynamoDB's CancellationReasons
# vocabulary; "None" marks the items that did not cause the cancellation).
_TRANSIENT_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def _client_error(exc: BaseException) -> BaseException | None:
    """The botocore error behind a deployer error (or the error itself)."""
    return exc.__cause__ if isinstance(exc, DeployerError) else exc


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call should be retried later rather than fail what it was for."""
    cause = _client_error(exc)
    if isinstance(cause, BotoCoreError):
        return True
    if not isinstance(cause, ClientError):
        return False
    code = error_code(cause)
    if code == "TransactionCanceledException":
        reasons = {str(r.get("Code")) for r in cause.response.get("CancellationReasons") or []} - {"None"}
        return bool(reasons) and reasons <= _TRANSIENT_CANCELLATIONS
    return code in TRANSIENT or _http_status(cause) >= 500


def was_refused(exc: BaseException) -> bool:
    """Whether AWS answered the call with a 4xx: the request was refused, nothing was done."""
    cause = _client_error(exc)
    if not isinstance(cause, ClientError):
        return False
    status = _http_status(cause)
    return 400 <= status < 500 or (status == 0 and error_code(cause) in THROTTLES)
