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

from deployer.errors import AwsCallFailed

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
