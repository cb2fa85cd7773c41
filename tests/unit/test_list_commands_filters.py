"""The local cloud's ListCommands honours Filters as SSM documents them (localcloud.moto_gaps,
gap 11): the stale-claim lookup (`Fleet.find`: InvokedAfter + DocumentName) is tested against an
API that answers as SSM would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localcloud import moto_gaps
from tests.conftest import DOCUMENT_NAME, REGION, SWAP_PARAMETERS

pytestmark = pytest.mark.unit


def _send(ssm: Any, document: str, instance: str) -> str:
    sent = ssm.send_command(DocumentName=document, InstanceIds=[instance], Parameters=SWAP_PARAMETERS)
    return str(sent["Command"]["CommandId"])


def _ids(ssm: Any, *filters: tuple[str, str]) -> list[str]:
    answer = ssm.list_commands(Filters=[{"key": k, "value": v} for k, v in filters])
    return [c["CommandId"] for c in answer["Commands"]]


def test_list_commands_keeps_only_the_commands_every_filter_admits(
    aws: moto_gaps.MotoGaps, settings: Any, fleet: Any
) -> None:
    swap_document = DOCUMENT_NAME
    # Given two swap commands, the first sent 10 minutes ago, the second now and succeeded
    ssm = boto3.client("ssm", region_name=REGION)
    old = _send(ssm, swap_document, fleet.instance_ids[0])
    new = _send(ssm, swap_document, fleet.instance_ids[1])
    moto_gaps.MotoGaps.find(old).requested_date_time -= timedelta(minutes=10)
    aws.command(new, "Success", completed=1)
    five_minutes_ago = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # Then each filter keeps what SSM documents it keeps
    assert _ids(ssm, ("InvokedAfter", five_minutes_ago)) == [new]
    assert _ids(ssm, ("InvokedBefore", five_minutes_ago)) == [old]
    assert _ids(ssm, ("DocumentName", swap_document)) == [old, new]
    assert _ids(ssm, ("DocumentName", "AWS-RunShellScript")) == []
    assert _ids(ssm, ("Status", "Success")) == [new]
    assert _ids(ssm, ("Status", "Pending")) == [old]
    assert _ids(ssm, ("ExecutionStage", "Executing")) == [old]
    assert _ids(ssm, ("ExecutionStage", "Complete")) == [new]
    assert _ids(ssm, ("InvokedAfter", five_minutes_ago), ("DocumentName", swap_document)) == [new]


def test_list_commands_refuses_a_filter_key_or_value_ssm_does_not_know(aws: moto_gaps.MotoGaps) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    for key, value in (("InvokedAfter", "yesterday"), ("Status", "Succeeded"), ("ExecutionStage", "Done")):
        with pytest.raises(ClientError) as err:
            ssm.list_commands(Filters=[{"key": key, "value": value}])
        assert err.value.response["Error"]["Code"] == "InvalidFilterKey"
        assert value in err.value.response["Error"]["Message"]


def test_list_commands_pages_50_at_a_time(aws: moto_gaps.MotoGaps, settings: Any, fleet: Any) -> None:
    swap_document = DOCUMENT_NAME
    # Given 51 commands
    ssm = boto3.client("ssm", region_name=REGION)
    sent = [_send(ssm, swap_document, fleet.instance_ids[0]) for _ in range(51)]

    # Then the first page holds 50 and a token, the second the last one
    first = ssm.list_commands()
    second = ssm.list_commands(NextToken=first["NextToken"])
    assert [c["CommandId"] for c in first["Commands"]] == sent[:50]
    assert [c["CommandId"] for c in second["Commands"]] == sent[50:]
    assert "NextToken" not in second
