"""The string protocols of `deployer.markers` and the all-or-nothing decisions of
`deployer.adapters.transactions` (DynamoDB TransactWriteItems, in moto, on the template's tables)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from deployer import markers, names
from deployer.adapters.app_state import StateChange
from deployer.adapters.transactions import MAX_ITEMS, Refused, Transaction
from deployer.errors import AwsCallFailed, DeployerError
from deployer.markers import OutboxEntry
from deployer.models.records import ReleaseStatus
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REGION, make_release

pytestmark = pytest.mark.unit

apps = st.from_regex(names.APP_PATTERN, fullmatch=True)
numbers = st.integers(min_value=1, max_value=10**12)


# ------------------------------------------------------------------ markers
@given(app=apps, release=numbers)
def test_a_lock_owner_names_its_release_and_only_for_its_app(app: str, release: int) -> None:
    owner = markers.owner(app, release)
    assert markers.owned_release(app, owner) == release
    other = app[:-1] if len(app) > 1 else f"{app}x"
    assert markers.owned_release(other, owner) is None


@pytest.mark.parametrize(
    "lock_owner",
    [None, "", "web", "web#", "web#0", "web#-1", "web#1x", "web#1.5", "api#3", "web-api#3", "#3", "web#3#"],
)
def test_a_lock_owner_that_is_not_a_release_of_the_app_names_none(lock_owner: str | None) -> None:
    assert markers.owned_release("web", lock_owner) is None


def test_a_release_key_has_the_lock_owners_shape() -> None:
    assert markers.release_key("web", 7) == markers.owner("web", 7) == "web#7"


@given(app=apps, release=numbers)
def test_a_release_comment_parses_back_and_fits_ssms_limit(app: str, release: int) -> None:
    comment = markers.release_comment(app, release)
    assert markers.parse_release_comment(comment) == (app, release)
    assert markers.is_ours(comment)
    assert len(comment) <= 100


@pytest.mark.parametrize("purpose", ["launch", "drift"])
def test_a_single_instance_comment_is_ours_but_not_a_release_command(purpose: str) -> None:
    comment = markers.host_comment(purpose, "web", 4)
    assert comment == f"deployer {purpose} web release 4"
    assert markers.is_ours(comment)
    assert markers.parse_release_comment(comment) is None


@pytest.mark.parametrize(
    "comment",
    [
        "",
        "deployer web release",
        "deployer web release x",
        "deployer Web release 1",
        "deployer web release 1 ",
        " deployer web release 1",
        "deployer web release 1\n",
        "deployer web  release 1",
        "deployer restart web release 1",
        "someone else's command",
    ],
)
def test_a_comment_of_another_shape_is_not_ours(comment: str) -> None:
    assert markers.parse_release_comment(comment) is None
    assert not markers.is_ours(comment)


@given(
    release=numbers,
    kind=st.sampled_from(["started", "succeeded", "failed", "rolled_back"]),
    to=st.none() | numbers,
)
def test_an_outbox_entry_decodes_to_what_was_encoded(release: int, kind: str, to: int | None) -> None:
    entry = OutboxEntry(release, kind, to)
    assert OutboxEntry.decode(entry.encode()) == entry


def test_an_outbox_entry_encodes_as_documented_and_dedupes_per_transition() -> None:
    assert OutboxEntry(3, "started").encode() == "3:started"
    assert OutboxEntry(3, "rolled_back", 1).encode() == "3:rolled_back:1"
    assert OutboxEntry(3, "rolled_back", 1).dedupe_id("web") == "web#3#rolled_back"
    # the same transition announced again carries the same id; another transition another
    assert OutboxEntry(3, "failed").dedupe_id("web") == OutboxEntry.decode("3:failed").dedupe_id("web")
    assert OutboxEntry(3, "failed").dedupe_id("web") != OutboxEntry(3, "started").dedupe_id("web")


@pytest.mark.parametrize("raw", ["", "3", "3:", ":started", "x:started", "3:started:1:2", "-3:failed"])
def test_a_malformed_outbox_entry_decodes_to_none(raw: str) -> None:
    assert OutboxEntry.decode(raw) is None


def test_an_outbox_entry_with_a_malformed_target_keeps_its_notice() -> None:
    assert OutboxEntry.decode("3:rolled_back:x") == OutboxEntry(3, "rolled_back", None)


def test_admission_keys_differ_per_app_repository_digest_and_tag() -> None:
    digest = "sha256:" + "a" * 64
    keys = {
        markers.admission_key("web", "team/web", digest, "v1"),
        markers.admission_key("api", "team/web", digest, "v1"),
        markers.admission_key("web", "team/api", digest, "v1"),
        markers.admission_key("web", "team/web", "sha256:" + "b" * 64, "v1"),
        markers.admission_key("web", "team/web", digest, "v2"),
        markers.admission_key("web", "team/web", digest, None),
    }
    assert len(keys) == 6
    assert all(key.startswith("deployer-admission#") for key in keys)


def test_an_admission_key_is_spelled_as_documented_with_an_empty_tag_for_an_untagged_push() -> None:
    # The key is stored: another spelling would admit a redelivered push a second time
    digest = "sha256:" + "a" * 64
    assert (
        markers.admission_key("web", "team/web", digest, "v1")
        == f"deployer-admission#web#team/web#{digest}#v1"
    )
    assert (
        markers.admission_key("web", "team/web", digest, None) == f"deployer-admission#web#team/web#{digest}#"
    )
    assert markers.admission_key("web", "team/web", digest, "") == markers.admission_key(
        "web", "team/web", digest, None
    )


# ------------------------------------------------------------------ transactions


def _admission(deps: Any, number: int, expect_last: int) -> Transaction:
    """Release `number` recorded with the counter and the lock, as a decision does."""
    change = StateChange(
        "web",
        expect_owner=None,
        expect_last=expect_last,
        last_release=number,
        owner=markers.owner("web", number),
    )
    return (
        Transaction()
        .add("state", deps.state.change_item(change))
        .add("release", deps.releases.create_item(make_release(number, status=ReleaseStatus.DEPLOYING)))
    )


def _items(table: str) -> list[dict[str, Any]]:
    return boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]


def test_a_transaction_writes_every_item(deps: Any) -> None:
    # When a decision is committed
    _admission(deps, 1, expect_last=0).commit(deps.dynamodb, "admitting release 1")

    # Then the state and the release were both written
    state = deps.state.get("web")
    assert (state.last_release, state.lock_owner) == (1, "web#1")
    assert deps.releases.get("web", 1).status == ReleaseStatus.DEPLOYING


def test_a_refused_condition_raises_refused_naming_its_label_and_writes_nothing(deps: Any) -> None:
    # Given release 1 recorded and holding the lock
    _admission(deps, 1, expect_last=0).commit(deps.dynamodb, "admitting release 1")
    before = (_items("AppStateTable"), _items("ReleasesTable"))

    # When a decider that read the app before that (counter 0, lock free) records release 2
    with pytest.raises(Refused) as err:
        _admission(deps, 2, expect_last=0).commit(deps.dynamodb, "admitting release 2")

    # Then the refusal names the state (whose condition failed), not the release, and is no
    # AWS failure; nothing was written
    assert err.value.labels == frozenset({"state"})
    assert "state" in str(err.value)
    assert isinstance(err.value, DeployerError)
    assert not isinstance(err.value, AwsCallFailed)
    assert (_items("AppStateTable"), _items("ReleasesTable")) == before


def test_every_refused_label_is_named(deps: Any) -> None:
    # Given release 1 recorded
    _admission(deps, 1, expect_last=0).commit(deps.dynamodb, "admitting release 1")

    # When the same decision is committed again (a duplicate)
    with pytest.raises(Refused) as err:
        _admission(deps, 1, expect_last=0).commit(deps.dynamodb, "admitting release 1 again")

    # Then both conditions are named
    assert err.value.labels == frozenset({"state", "release"})


def test_a_transaction_dynamodb_rejects_for_another_reason_is_an_aws_failure(deps: Any) -> None:
    # Given a transaction writing the same item twice (DynamoDB refuses it as a whole)
    again = deps.releases.create_item(make_release(1, status=ReleaseStatus.DEPLOYING))
    tx = _admission(deps, 1, expect_last=0).add("again", again)

    # When it is committed
    with pytest.raises(AwsCallFailed) as err:
        tx.commit(deps.dynamodb, "admitting release 1")

    # Then the failure names what was being done and DynamoDB's error code; nothing was written
    assert "admitting release 1" in str(err.value)
    assert "ValidationException" in str(err.value)
    assert _items("ReleasesTable") == []


def test_a_transaction_on_a_missing_table_is_an_aws_failure(deps: Any) -> None:
    tx = Transaction().add("release", {"Put": {"TableName": "NoSuchTable", "Item": {"app": {"S": "web"}}}})
    with pytest.raises(AwsCallFailed) as err:
        tx.commit(deps.dynamodb, "writing nowhere")
    assert "ResourceNotFoundException" in str(err.value)


@pytest.mark.parametrize(
    "reasons",
    [
        [{"Code": "TransactionConflict"}],
        [{"Code": "ConditionalCheckFailed"}, {"Code": "TransactionConflict"}],
        [{"Code": "None"}, {"Code": "ProvisionedThroughputExceeded"}],
    ],
)
def test_a_cancellation_that_is_not_only_conditions_is_an_aws_failure(reasons: list[dict[str, str]]) -> None:
    # Given DynamoDB cancelling a transaction for a reason other than a condition alone
    dynamodb = boto3.client(
        "dynamodb", region_name=REGION, aws_access_key_id="stub", aws_secret_access_key="stub"
    )
    with Stubber(dynamodb) as stub:
        stub.add_client_error(
            "transact_write_items",
            service_error_code="TransactionCanceledException",
            service_message="Transaction cancelled",
            modeled_fields={"CancellationReasons": reasons},
        )
        tx = Transaction()
        for label in ("state", "release")[: len(reasons)]:
            tx.add(label, {"Put": {"TableName": "T", "Item": {"app": {"S": label}}}})

        # When it is committed, then it is not read as "the state moved on": it is a failure
        with pytest.raises(AwsCallFailed) as err:
            tx.commit(dynamodb, "recording a decision")
    assert not isinstance(err.value, Refused)
    assert "TransactionCanceledException" in str(err.value)


def test_a_transaction_holds_at_most_dynamodbs_item_limit() -> None:
    tx = Transaction()
    for number in range(MAX_ITEMS):
        tx.add(f"item {number}", {"Put": {"TableName": "T", "Item": {"app": {"S": str(number)}}}})
    with pytest.raises(DeployerError):
        tx.add("one more", {"Put": {"TableName": "T", "Item": {"app": {"S": "x"}}}})
    assert len(tx.items) == len(tx.labels) == MAX_ITEMS
