"""The CI slice of the host fault suite (`make host-faults` runs every case): the agent killed
where a host used to keep the old release, and nginx killed whole under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host_faults.suite import CI_SLICE, CaseResult, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CaseResult]:
    root: Path = tmp_path_factory.mktemp("hostfaults")
    ran, _ = run(list(CI_SLICE), root)
    return {result.name: result for result in ran}


@pytest.mark.parametrize("case", CI_SLICE)
def test_the_host_heals_without_a_leftover_or_a_failed_request(
        results: dict[str, CaseResult], case: str) -> None:
    # Given a host under load, when the fault of `case` hits it and (for a kill point) the same
    # command runs again
    result = results[case]
    # Then it serves the right release with one container, the lock free, state and rule in
    # agreement, and no request failed outside the deliberate outage
    assert result.problems == []
    assert result.recovered
    assert result.leftover_containers == 0
    assert result.failed_outside == 0
    assert result.requests > 0


def test_a_kill_after_the_switch_leaves_the_new_release_serving_and_the_rerun_records_it(
        results: dict[str, CaseResult]) -> None:
    result = results["swap/switch-after-commit"]
    assert result.after_kill["rule"] == "green"
    assert result.after_kill["state_release"] == 1
    assert result.after_kill["served"] == ["200 web release 2"]
    assert result.rerun["outcome"] == "already_live"
    assert "interrupted run" in result.rerun["message"]


def test_an_abort_killed_after_its_switch_leaves_the_standby_serving_and_the_rerun_drops_the_canary(
        results: dict[str, CaseResult]) -> None:
    # Release 2 live with release 1 as its standby; the abort (release 3, image of 1) killed
    # right after its one rule switch: 1 serves from the standby, both containers still run
    result = results["abort/switch-after-commit"]
    assert result.after_kill["served"] == ["200 web release 1"]
    assert result.after_kill["containers"] == ["blue running", "green running"]
    assert result.after_kill["rule"] == "blue"
    # and the same command again records it and removes the canary's container
    assert result.rerun["outcome"] == "already_live"
    assert result.leftover_containers == 0


def test_a_killed_nginx_came_back_by_itself_and_the_load_saw_the_outage(
        results: dict[str, CaseResult]) -> None:
    # Every nginx process killed under load, no agent run: a new master served again (the
    # suite waits up to 15 s), and the outage was measured from both sides
    result = results["proxy/all"]
    assert result.outage_seconds is not None
    assert result.outage_seconds < 15
    assert result.load_outage_seconds is not None
    assert result.load_outage_seconds <= result.outage_seconds + 1
