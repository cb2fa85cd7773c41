"""The controller's own requests against botocore's service model and DynamoDB's expression rules.

Real DynamoDB refuses what moto lets pass: an expression value or name that no expression uses
is a ValidationException, as is one used but not defined. Every transaction item a decision can
build, and the command lookup a resumed start makes, is checked here against the model and
those rules, so the first deploy on a real account does not find them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from deployer import markers
from deployer.adapters.admissions import Admissions
from deployer.adapters.app_state import AppState, StateChange
from deployer.adapters.fleet import Fleet
from deployer.adapters.releases import ReleasesStore
from deployer.models.records import Release, ReleaseSource, ReleaseStatus

from tests.conftest import make_release

pytestmark = pytest.mark.unit

REGION = "us-east-1"
DIGEST = "sha256:" + "cd" * 32


def _client(service: str) -> Any:
    return boto3.session.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x").client(
        service
    )  # type: ignore[call-overload]


def _placeholders(text: str, sigil: str) -> set[str]:
    return set(re.findall(rf"{re.escape(sigil)}[A-Za-z0-9_]+", text))


def assert_expressions_consistent(request: dict[str, Any]) -> None:
    """Every defined `:value`/`#name` is used by an expression, and every used one is defined."""
    expressions = " ".join(
        str(request.get(k, "")) for k in ("UpdateExpression", "ConditionExpression", "KeyConditionExpression")
    )
    values = set(request.get("ExpressionAttributeValues", {}))
    names = set(request.get("ExpressionAttributeNames", {}))
    assert values == _placeholders(expressions, ":"), request
    assert names == _placeholders(expressions, "#"), request


def release(status: ReleaseStatus = ReleaseStatus.DEPLOYING) -> Release:
    return make_release(
        7,
        repository="web",
        digest=DIGEST,
        pushed_at=datetime(2026, 11, 27, tzinfo=UTC),
        source=ReleaseSource.ROLLBACK,
        status=status,
        replaces=5,
        rollback_of=6,
        send_claim="t" * 32,
        send_claimed_at=1_795_000_000,
    )


CHANGES = {
    "admit and start": StateChange(
        "web",
        expect_owner=None,
        expect_last=6,
        last_release=7,
        owner=markers.owner("web", 7),
        desired=7,
        require_unpaused=True,
        refuse_if_refused=DIGEST,
        last_pushed_at=1_795_000_000,
        add_outbox=["7:started"],
    ),
    "admit first release": StateChange("web", expect_owner=None, expect_last=0, last_release=1),
    "admit pending": StateChange("web", expect_owner="web#6", expect_last=6, last_release=7),
    "end and roll back": StateChange(
        "web",
        expect_owner="web#6",
        expect_last=6,
        last_release=7,
        owner="web#7",
        desired=7,
        refuse=DIGEST,
        add_outbox=["6:rolled_back:5", "7:started"],
    ),
    "end and free": StateChange(
        "web", expect_owner="web#6", clear_owner=True, desired=6, add_outbox=["6:succeeded"]
    ),
    "operator deploy": StateChange(
        "web", expect_owner=None, expect_last=6, last_release=7, owner="web#7", allow=DIGEST
    ),
    "start failed": StateChange("web", expect_owner="web#7", clear_owner=True, desired=5, realign=True),
    "realigned": StateChange("web", expect_owner=None, realign=False),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_every_state_change_a_decision_builds_is_a_valid_transaction_item(name: str) -> None:
    dynamodb = _client("dynamodb")
    item = AppState(dynamodb, "AppState").change_item(CHANGES[name])
    validate_parameters(
        {"TransactItems": [item]},
        dynamodb.meta.service_model.operation_model("TransactWriteItems").input_shape,
    )
    assert_expressions_consistent(item["Update"])


def test_release_transaction_items_are_valid_and_consistent() -> None:
    dynamodb = _client("dynamodb")
    store = ReleasesStore(dynamodb, "Releases")
    items = [
        store.create_item(release()),
        store.create_item(release(ReleaseStatus.PENDING)),
        store.transition_item("web", 7, ReleaseStatus.SUCCEEDED, "ok", hosts_ok=3, hosts_failed=0),
        store.transition_item(
            "web",
            8,
            ReleaseStatus.DEPLOYING,
            "push deploy started",
            allowed_from=frozenset({ReleaseStatus.PENDING}),
            deploy_started_at=datetime(2026, 11, 27, tzinfo=UTC),
            replaces=7,
            send_claim="a" * 32,
            send_claimed_at=1,
        ),
        Admissions(dynamodb, "Idempotency").create_item(
            markers.admission_key("web", "web", DIGEST, "v7"), "web", 7
        ),
    ]
    shape = dynamodb.meta.service_model.operation_model("TransactWriteItems").input_shape
    validate_parameters({"TransactItems": items}, shape)
    for item in items:
        request = next(iter(item.values()))
        assert_expressions_consistent(request)
    # A move out of PENDING leaves the sparse pending index in the same write.
    assert "#pending_key" in items[3]["Update"]["UpdateExpression"]


def test_the_send_claim_is_one_valid_conditional_update() -> None:
    dynamodb = _client("dynamodb")
    store = ReleasesStore(dynamodb, "Releases")
    captured: list[dict[str, Any]] = []
    dynamodb.meta.events.register(
        "provide-client-params.dynamodb.UpdateItem", lambda params, **_: captured.append(params)
    )
    with Stubber(dynamodb) as stub:
        stub.add_client_error("update_item", "ConditionalCheckFailedException")
        assert store.claim_send("web", 7, "b" * 32, 1_795_000_100, 90) is None
    assert_expressions_consistent(captured[0])
    condition = captured[0]["ConditionExpression"]
    assert "attribute_not_exists(command_id)" in condition
    assert captured[0]["ExpressionAttributeValues"][":stale"] == {"N": str(1_795_000_100 - 90)}


def test_the_command_lookup_of_a_resumed_start_is_a_valid_filtered_list() -> None:
    ssm = _client("ssm")
    fleet = Fleet(ssm, "deployer-Swap", "/deployer/commands")
    with Stubber(ssm) as stub:
        stub.add_response(
            "list_commands",
            {
                "Commands": [
                    {"CommandId": "0b4a7a1e-1111-4222-8333-444455556666", "Comment": "deployer web release 6"}
                ],
                "NextToken": "n",
            },
            {
                "Filters": [
                    {"key": "InvokedAfter", "value": "2026-11-27T10:00:00Z"},
                    {"key": "DocumentName", "value": "deployer-Swap"},
                ],
                "MaxResults": 50,
            },
        )
        stub.add_response(
            "list_commands",
            {
                "Commands": [
                    {"CommandId": "0b4a7a1e-1111-4222-8333-777788889999", "Comment": "deployer web release 7"}
                ]
            },
            {
                "Filters": [
                    {"key": "InvokedAfter", "value": "2026-11-27T10:00:00Z"},
                    {"key": "DocumentName", "value": "deployer-Swap"},
                ],
                "MaxResults": 50,
                "NextToken": "n",
            },
        )
        found = fleet.find(markers.release_comment("web", 7), datetime(2026, 11, 27, 10, tzinfo=UTC))
    assert found == "0b4a7a1e-1111-4222-8333-777788889999"
