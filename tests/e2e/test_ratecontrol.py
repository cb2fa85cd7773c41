"""SSM rate control as the SSM stand-in applies it."""

from __future__ import annotations

import threading
import time

import botocore.session
import pytest

from localcloud.aws.ratecontrol import (
    RateError,
    command_status,
    command_status_of,
    invocation_status,
    max_concurrency,
    max_errors,
    run_rate_controlled,
)

pytestmark = pytest.mark.unit


def test_max_concurrency_takes_counts_and_rounds_percentages_up_to_at_least_one():
    assert max_concurrency("2", 10) == 2
    assert max_concurrency("25%", 3) == 1
    assert max_concurrency("25%", 10) == 3
    assert max_concurrency("1%", 3) == 1
    assert max_concurrency(None, 10) == 50


def test_max_errors_rounds_percentages_down():
    assert max_errors("1", 10) == 1
    assert max_errors("25%", 3) == 0
    assert max_errors("50%", 5) == 2
    assert max_errors(None, 5) == 0


@pytest.mark.parametrize("bad", ["", "x", "-1", "101%", "1.5", "2 "])
def test_malformed_rates_are_refused(bad):
    with pytest.raises(RateError, match="MaxConcurrency"):
        max_concurrency(bad or "x", 3)


def test_command_status_details_follow_max_errors():
    assert command_status(["Success"] * 3, 0) == "Success"
    assert command_status(["Success", "Failed", "Success"], 0) == "Failed"
    assert command_status(["Success", "Failed", "Success"], 1) == "Incomplete"
    assert command_status(["Execution Timed Out", "Success"], 0) == "Execution Timed Out"
    assert command_status(["Undeliverable", "Success"], 0) == "Incomplete"
    assert command_status(["Undeliverable"], 0) == "Incomplete"
    assert command_status(["Delivery Timed Out", "Success"], 0) == "Delivery Timed Out"
    assert command_status(["Delivery Timed Out", "Success", "Success"], 1) == "Incomplete"


def test_status_is_the_coarse_enum_botocore_documents_and_the_detail_stays_in_status_details():
    # Given botocore's enums for Status
    model = botocore.session.get_session().get_service_model("ssm")
    invocation_enum = set(model.shape_for("CommandInvocationStatus").enum)
    command_enum = set(model.shape_for("CommandStatus").enum)
    # Then every detail the stand-ins report maps to a value of them
    for detail in ("Success", "Failed", "Execution Timed Out", "Delivery Timed Out", "Undeliverable",
                   "Terminated", "Cancelled", "Pending", "In Progress", "Delayed"):
        assert invocation_status(detail) in invocation_enum, detail
    for detail in ("Success", "Failed", "Incomplete", "Execution Timed Out", "Delivery Timed Out",
                   "Cancelled", "Pending", "In Progress"):
        assert command_status_of(detail) in command_enum, detail
    # and none of the details that exist only in StatusDetails is a Status
    for detail in ("Incomplete", "Undeliverable", "Terminated", "Delivery Timed Out"):
        assert detail not in invocation_enum | command_enum


def test_no_more_than_max_concurrency_targets_run_at_once():
    # Given 6 targets that each take a moment, and MaxConcurrency 2
    running, peak, lock = [0], [0], threading.Lock()

    def run(target):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return "Success"

    # When they run under rate control
    out = run_rate_controlled([f"i-{n}" for n in range(6)], run, "2", "0")
    # Then all succeeded and never more than 2 ran together
    assert [o.status for o in out] == ["Success"] * 6
    assert peak[0] == 2


def test_sending_stops_once_errors_exceed_max_errors():
    # Given 5 targets run one at a time where the first two fail
    started = []

    def run(target):
        started.append(target)
        return "Failed" if target in {"a", "b"} else "Success"

    # When MaxErrors is 1
    out = run_rate_controlled(["a", "b", "c", "d", "e"], run, "1", "1")
    # Then the second failure stops sending; SSM terminates the rest
    assert started == ["a", "b"]
    assert [o.status for o in out] == ["Failed", "Failed", "Terminated", "Terminated", "Terminated"]
    assert command_status([o.status for o in out], 1) == "Failed"


def test_a_target_that_raises_counts_as_failed():
    def run(target):
        raise RuntimeError("boom")

    out = run_rate_controlled(["a"], run, "1", "0")
    assert out[0].status == "Failed"
