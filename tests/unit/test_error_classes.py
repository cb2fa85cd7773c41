"""How a failed AWS call is read (deployer.adapters): retried later rather than failing what it
was for, or refused by AWS before anything was done; and the order notices owed go out in."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from deployer.adapters import is_transient, was_refused
from deployer.controller import outbox_order
from deployer.errors import AwsCallFailed, DeployerError, ImageNotFound

pytestmark = pytest.mark.unit


def client_error(code: str, status: int | None, *, metadata: bool = True) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": code}}
    if metadata:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SendCommand")  # type: ignore[arg-type]


def wrapped(cause: BaseException) -> AwsCallFailed:
    """What an adapter raises: the AWS failure, with botocore's exception as its cause."""
    failure = AwsCallFailed(f"SendCommand failed: {cause}")
    failure.__cause__ = cause
    return failure


# ------------------------------------------------------------------ transient
@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "TransactionConflictException",
    ],
)
def test_a_throttle_or_an_aws_side_failure_is_retried(code: str) -> None:
    assert is_transient(wrapped(client_error(code, 400)))
    # botocore's own exception (no adapter around it) is read the same way
    assert is_transient(client_error(code, 400))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_any_5xx_is_retried_whatever_its_code(status: int) -> None:
    assert is_transient(wrapped(client_error("SomethingNew", status)))
    assert is_transient(client_error("SomethingNew", status))


@pytest.mark.parametrize("status", [400, 403, 404, 499])
def test_a_4xx_that_is_no_throttle_fails_the_release(status: int) -> None:
    assert not is_transient(wrapped(client_error("InvalidDocument", status)))
    assert not is_transient(client_error("InvalidDocument", status))


def test_a_failure_without_a_status_or_a_known_code_fails_the_release() -> None:
    assert not is_transient(client_error("InvalidDocument", None))
    assert not is_transient(client_error("InvalidDocument", None, metadata=False))


@pytest.mark.parametrize(
    "cause",
    [
        EndpointConnectionError(endpoint_url="https://ssm.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://ssm.us-east-1.amazonaws.com"),
    ],
)
def test_a_call_that_got_no_answer_is_retried(cause: BaseException) -> None:
    assert is_transient(wrapped(cause))
    assert is_transient(cause)


def test_a_failure_of_the_deployer_s_own_is_not_retried() -> None:
    assert not is_transient(ImageNotFound("gone"))
    assert not is_transient(DeployerError("no cause"))
    assert not is_transient(ValueError("not AWS"))


# ------------------------------------------------------------------ refused
@pytest.mark.parametrize("status", [400, 403, 429, 499])
def test_a_4xx_answer_is_a_refusal_nothing_was_done(status: int) -> None:
    assert was_refused(wrapped(client_error("InvalidDocument", status)))
    assert was_refused(client_error("InvalidDocument", status))


@pytest.mark.parametrize("status", [200, 399, 500, 503])
def test_an_answer_outside_4xx_may_have_done_something(status: int) -> None:
    assert not was_refused(wrapped(client_error("InternalError", status)))
    assert not was_refused(client_error("InternalError", status))


@pytest.mark.parametrize("metadata", [True, False])
def test_a_throttle_without_a_status_is_a_refusal_and_another_code_is_not(metadata: bool) -> None:
    assert was_refused(wrapped(client_error("ThrottlingException", None, metadata=metadata)))
    assert was_refused(client_error("RequestLimitExceeded", None, metadata=metadata))
    assert not was_refused(client_error("InternalError", None, metadata=metadata))
    assert not was_refused(client_error("ServiceUnavailable", None, metadata=metadata))


def test_a_call_that_got_no_answer_is_no_refusal() -> None:
    timeout = ReadTimeoutError(endpoint_url="https://ssm.us-east-1.amazonaws.com")
    assert not was_refused(wrapped(timeout))
    assert not was_refused(timeout)
    assert not was_refused(DeployerError("no cause"))


def cancelled(*codes: str) -> ClientError:
    """DynamoDB's answer to a transaction it cancelled, one reason per item."""
    response: dict[str, Any] = {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
        "CancellationReasons": [{"Code": code} for code in codes],
    }
    return ClientError(response, "TransactWriteItems")  # type: ignore[arg-type]


def test_a_transaction_conflict_is_a_cancellation_reason_not_a_top_level_code() -> None:
    # An UpdateItem that collides with a transaction answers TransactionConflictException;
    # "TransactionConflict" only ever appears as one item's cancellation reason.
    assert is_transient(client_error("TransactionConflictException", 400))
    assert not is_transient(client_error("TransactionConflict", 400))


@pytest.mark.parametrize(
    "codes",
    [
        ("None", "TransactionConflict"),
        ("ThrottlingError", "None"),
        ("ProvisionedThroughputExceeded", "TransactionConflict"),
        ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"),
    ],
)
def test_a_transaction_cancelled_only_by_conflicts_or_throttles_is_retried(codes: tuple[str, ...]) -> None:
    assert is_transient(wrapped(cancelled(*codes)))


@pytest.mark.parametrize(
    "codes",
    [
        ("ValidationError", "None"),
        ("TransactionConflict", "ItemCollectionSizeLimitExceeded"),
        ("None", "None"),
        (),
    ],
)
def test_a_transaction_cancelled_for_any_other_reason_is_not_retried(codes: tuple[str, ...]) -> None:
    assert not is_transient(wrapped(cancelled(*codes)))


# ------------------------------------------------------------------ the outbox's order
def test_notices_owed_go_out_by_release_and_a_start_before_its_end() -> None:
    owed = ["4:started", "3:rolled_back:1", "3:failed", "3:succeeded", "3:started", "3:custom", "2:failed"]
    assert sorted(owed, key=outbox_order) == [
        "2:failed",
        "3:started",
        "3:succeeded",
        "3:failed",
        "3:rolled_back:1",
        "3:custom",
        "4:started",
    ]


def test_a_malformed_notice_owed_goes_first() -> None:
    assert outbox_order("garbage") == (0, 0)
    assert sorted(["1:started", "garbage"], key=outbox_order) == ["garbage", "1:started"]
