"""Reading the agent's summary out of a command's output, as SSM returns it: mixed with other
lines, with other JSON, cut short."""

from __future__ import annotations

import json

import pytest
from deployer.agent_contract import FailureClass, Outcome, parse_summary

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
SUMMARY = json.dumps(
    {
        "agent": "deployer",
        "version": 1,
        "host": "i-1",
        "app": "web",
        "release": 7,
        "outcome": "live",
        "failure_class": "none",
        "exit_code": 0,
    }
)


def test_a_summary_followed_by_log_lines_is_still_found() -> None:
    summary = parse_summary(f"pulling\n{SUMMARY}\ndocker: removed old container\n")
    assert summary is not None
    assert (summary.release, summary.outcome, summary.failure_class) == (7, Outcome.LIVE, FailureClass.NONE)
    assert summary.serving


def test_a_braced_line_that_is_not_json_after_the_summary_is_skipped() -> None:
    summary = parse_summary(f"{SUMMARY}\n{{not json}}\n")
    assert summary is not None
    assert summary.release == 7


@pytest.mark.parametrize("other", ['{"agent": "other", "app": "web"}', '{"level": "info"}', "[1, 2]"])
def test_json_from_something_else_after_the_summary_is_skipped(other: str) -> None:
    summary = parse_summary(f"{SUMMARY}\n{other}\n")
    assert summary is not None
    assert summary.host == "i-1"


def test_the_last_summary_wins() -> None:
    later = SUMMARY.replace('"release": 7', '"release": 8')
    summary = parse_summary(f"{SUMMARY}\n{later}\n")
    assert summary is not None
    assert summary.release == 8


@pytest.mark.parametrize("output", [None, "", "no summary at all\n", SUMMARY[:-10] + "\n"])
def test_output_without_a_complete_summary_yields_none(output: str | None) -> None:
    assert parse_summary(output) is None


def test_a_summary_that_breaks_the_contract_yields_none_rather_than_an_older_one() -> None:
    broken = SUMMARY.replace('"outcome": "live"', '"outcome": "exploded"')
    assert parse_summary(f"{SUMMARY}\n{broken}\n") is None


def test_a_failed_host_s_summary_is_read_in_full_and_garbage_yields_none() -> None:
    line = (
        '{"agent":"deployer","version":1,"host":"h","app":"web","release":7,"digest":"' + DIGEST + '",'
        '"outcome":"failed","failure_class":"health","exit_code":6,"message":"health gate failed",'
        '"previous_release":6,"timings":{"total":1.5},"pull_attempts":1,"container_exit":null,"log_tail":["x"]}'
    )
    summary = parse_summary("some log\n" + line + "\n")
    assert summary is not None
    assert (summary.failure_class, summary.exit_code, summary.serving) == (FailureClass.HEALTH, 6, False)
    assert parse_summary(line[:-40]) is None
    assert parse_summary("") is None
    assert parse_summary('{"agent":"other"}') is None
