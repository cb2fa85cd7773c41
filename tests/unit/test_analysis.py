"""Canary analysis without any AWS stand-in: the verdict's table (controller/analysis.py), the
record it keeps, the GetMetricData period it reads with, and the terminal chart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from deployer.adapters.app_state import AppStateRecord
from deployer.adapters.proxy_metrics import Figures, Series, allowed_period, one_period
from deployer.cli.sparkline import chart, sparkline
from deployer.controller import analysis
from deployer.controller.analysis import Outcome
from deployer.controller.types import Decision, Now
from deployer.models.config import AnalysisConfig
from deployer.models.records import STAGE_AWAITING, STAGE_BAKING, Release, ReleaseStatus

from tests.conftest import make_release

pytestmark = pytest.mark.unit

CFG = AnalysisConfig()  # min 50 requests, 1 %, 2x, 1.5x, 50 ms floor


def canary(requests: int, errors: int = 0, p99: float | None = 40.0) -> Figures:
    return Figures(release=7, requests=requests, errors=errors, p99_ms=p99)


def stable(requests: int, errors: int = 0, p99: float | None = 40.0) -> Figures:
    return Figures(release=6, requests=requests, errors=errors, p99_ms=p99)


@pytest.mark.parametrize(
    ("case", "c", "s", "outcome"),
    [
        ("too few canary requests to judge", canary(49, 49), stable(1000), Outcome.INCONCLUSIVE),
        ("exactly min_requests is judged", canary(50, 40), stable(1000), Outcome.FAIL),
        ("5xx above the 1 % floor, stable clean", canary(1000, 11), stable(1000), Outcome.FAIL),
        ("5xx at the 1 % floor passes", canary(1000, 10), stable(1000), Outcome.PASS),
        # stable at 3 %: the canary may have 2 x 3 % = 6 %
        ("5xx under 2x a noisy stable passes", canary(1000, 59), stable(1000, 30), Outcome.PASS),
        ("5xx over 2x a noisy stable fails", canary(1000, 61), stable(1000, 30), Outcome.FAIL),
        # stable without traffic: max_error_rate alone, latency not compared
        ("stable idle, 5xx under the floor", canary(1000, 5, 900.0), stable(0, 0, 10.0), Outcome.PASS),
        ("stable idle, 5xx over the floor", canary(1000, 20), stable(0, 0, None), Outcome.FAIL),
        ("p99 over 1.5x stable and the floor", canary(1000, 0, 151.0), stable(1000, 0, 100.0), Outcome.FAIL),
        ("p99 at 1.5x stable passes", canary(1000, 0, 150.0), stable(1000, 0, 100.0), Outcome.PASS),
        ("p99 over 1.5x stable, under the floor", canary(1000, 0, 45.0), stable(1000, 0, 20.0), Outcome.PASS),
        ("no canary p99: not compared", canary(1000, 0, None), stable(1000, 0, 20.0), Outcome.PASS),
        ("no stable p99: not compared", canary(1000, 0, 900.0), stable(1000, 0, None), Outcome.PASS),
    ],
)
def test_the_verdict_follows_each_threshold(case: str, c: Figures, s: Figures, outcome: Outcome) -> None:
    assert analysis.judge(CFG, c, s).outcome is outcome, case


def test_a_stricter_config_moves_every_threshold() -> None:
    cfg = AnalysisConfig(
        min_requests=10, max_error_rate=0.0, error_rate_ratio=1.0, latency_ratio=1.0, latency_floor_ms=0.0
    )
    assert analysis.judge(cfg, canary(10, 1), stable(1000)).outcome is Outcome.FAIL
    assert analysis.judge(cfg, canary(10, 0, 41.0), stable(1000, 0, 40.0)).outcome is Outcome.FAIL
    assert analysis.judge(cfg, canary(10, 0, 40.0), stable(1000, 0, 40.0)).outcome is Outcome.PASS


def test_a_failed_error_rate_names_both_rates_and_counts() -> None:
    verdict = analysis.judge(CFG, canary(2050, 412), stable(8000, 0))
    assert verdict.reason == (
        "canary analysis failed: 5xx rate 20.1% (412 of 2050) vs stable 0.0% (0 of 8000); allowed 1.0%"
    )


def test_a_failed_latency_names_both_p99s_and_the_limit() -> None:
    verdict = analysis.judge(CFG, canary(500, 0, 812.0), stable(4000, 0, 95.0))
    assert verdict.reason == (
        "canary analysis failed: p99 812 ms vs stable 95 ms; allowed 142 ms (1.5x stable)"
    )


def test_an_inconclusive_check_says_how_many_requests_it_had() -> None:
    assert analysis.judge(CFG, canary(12), stable(900)).reason == "inconclusive: 12 of 50 requests"


def test_the_record_holds_both_releases_figures_and_the_window() -> None:
    verdict = analysis.judge(CFG, canary(2050, 412, 33.0), stable(8000, 0, 30.0))
    item = analysis.entry(
        verdict,
        stage=0,
        at=1_000_060,
        canary=canary(2050, 412, 33.0),
        stable=stable(8000, 0, 30.0),
        window=(1_000_000, 1_000_060),
    )
    assert item == {
        "stage": 0,
        "at": 1_000_060,
        "verdict": "fail",
        "reason": verdict.reason,
        "canary": {"release": 7, "requests": 2050, "errors": 412, "error_rate": 0.200976, "p99_ms": 33.0},
        "stable": {"release": 6, "requests": 8000, "errors": 0, "error_rate": 0.0, "p99_ms": 30.0},
        "window": [1_000_000, 1_000_060],
    }


def test_an_unchanged_check_writes_nothing_and_the_record_stays_bounded() -> None:
    def check(stage: int, requests: int) -> dict[str, object]:
        v = analysis.judge(CFG, canary(requests), stable(1000))
        return analysis.entry(
            v, stage=stage, at=requests, canary=canary(requests), stable=stable(1000), window=(0, 1)
        )

    first = analysis.recorded(None, check(0, 100))
    assert first is not None
    assert analysis.recorded(first, check(0, 100)) is None  # same figures: no write
    assert analysis.recorded(first, check(1, 100)) is not None  # another stage: written
    entries: list[dict[str, object]] | None = []
    for n in range(100, 130):
        entries = analysis.recorded(entries, check(0, n)) or entries
    assert entries is not None
    assert len(entries) == analysis.KEEP_ENTRIES
    assert entries[-1]["at"] == 129


def test_the_window_is_the_bake_so_far_and_stops_at_its_end() -> None:
    assert analysis.window(100, 400, 250) == (100, 250)
    assert analysis.window(100, 400, 900) == (100, 400)
    assert analysis.window(100, 100, 100) == (100, 101)  # never empty


@pytest.mark.parametrize(
    ("seconds", "period"), [(1, 1), (3, 5), (5, 5), (9, 10), (29, 30), (31, 60), (61, 120), (301, 360)]
)
def test_the_period_is_the_smallest_high_resolution_one_that_fits(seconds: int, period: int) -> None:
    assert allowed_period(seconds) == period


def test_one_aligned_period_covers_the_whole_window() -> None:
    minute = 1_800_000_000  # a multiple of 60
    # 25 s from second 8 of a minute: 30 s periods start at :00 and :30, so it takes 60 s.
    assert one_period(minute + 8, minute + 33) == (minute, 60)
    start, period = one_period(1_000, 1_007)
    assert (start, period) == (1_000, 10)
    assert start + period >= 1_007


def test_a_sparkline_scales_values_to_eight_levels_and_shows_gaps() -> None:
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 5.0, None]) == " █ "  # no datum: a gap
    assert sparkline([0.0, 0.0]) == "▁▁"  # all zero sits on the floor
    assert sparkline([0.0, 0.2], top=0.2) == "▁█"
    assert sparkline([]) == ""


# ------------------------------------------------------------------ the check's decision
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = Now(epoch=int(T0.timestamp()), at=T0)
SPAN = (NOW.epoch - 60, NOW.epoch)


def baking(**fields: Any) -> Release:
    return make_release(
        7,
        status=ReleaseStatus.DEPLOYING,
        stage=0,
        stage_state=STAGE_BAKING,
        stage_hosts=["i-a1"],
        replaces=6,
        bake_started_at=NOW.epoch - 60,
        bake_until=NOW.epoch + 240,
        status_reason="stage 1 succeeded; baking 300s",
        **fields,
    )


def locked() -> AppStateRecord:
    return AppStateRecord(app="web", last_release=7, lock_owner="web#7", desired=7)


def decide(release: Release, c: Figures, s: Figures, target: Release | None = None) -> Decision | None:
    verdict = analysis.judge(CFG, c, s)
    return analysis.checked(
        locked(), release, verdict, (c, s), SPAN, target=target, pending=[], token="t" * 32, now=NOW
    )


def test_a_failed_check_fails_the_release_blames_its_image_and_rolls_back_in_one_write() -> None:
    release = baking()
    d = decide(
        release, canary(2050, 412), stable(8000), target=make_release(6, status=ReleaseStatus.SUCCEEDED)
    )
    assert d is not None
    failed, *_ = d.transitions
    assert (failed.release, failed.status) == (7, ReleaseStatus.FAILED)
    assert failed.reason.startswith("canary analysis failed: 5xx rate 20.1% (412 of 2050)")
    assert failed.expect == {"stage": 0, "stage_state": STAGE_BAKING}
    (item,) = failed.fields["analysis"]
    assert (item["verdict"], item["stage"], item["window"]) == ("fail", 0, list(SPAN))
    assert d.change is not None
    assert d.change.refuse == release.digest  # the image is bad: not deployed again by a push
    (rollback,) = d.creates
    assert (rollback.rollback_of, rollback.status) == (7, ReleaseStatus.DEPLOYING)


def test_a_passing_check_is_recorded_only_while_the_stage_still_bakes() -> None:
    d = decide(baking(), canary(500, 1), stable(4000, 2))
    assert d is not None
    (t,) = d.transitions
    assert (t.status, t.allowed_from) == (ReleaseStatus.DEPLOYING, frozenset({ReleaseStatus.DEPLOYING}))
    assert t.expect == {"stage": 0, "stage_state": STAGE_BAKING}
    assert t.reason == "stage 1 succeeded; baking 300s"  # the release's own reason stays
    assert [i["verdict"] for i in t.fields["analysis"]] == ["pass"]
    assert d.change is None
    assert not d.creates


def test_a_check_that_says_what_the_last_one_said_writes_nothing() -> None:
    first = decide(baking(), canary(10), stable(4000))
    assert first is not None
    entries = first.transitions[0].fields["analysis"]
    assert entries[0]["verdict"] == "inconclusive"
    assert decide(baking(analysis=entries), canary(10), stable(4000)) is None
    assert decide(baking(analysis=entries), canary(11), stable(4000)) is not None


def test_only_a_baking_release_with_a_stable_one_is_analysed_once_there_is_bake_to_read() -> None:
    assert analysis.applies(CFG, baking(), NOW.epoch)
    assert not analysis.applies(AnalysisConfig(enabled=False), baking(), NOW.epoch)
    assert not analysis.applies(CFG, baking().model_copy(update={"replaces": None}), NOW.epoch)
    assert not analysis.applies(CFG, baking().model_copy(update={"stage_state": STAGE_AWAITING}), NOW.epoch)
    # the converge that starts the bake has nothing to read yet; a bake of 0 s is checked at once
    just_started = baking().model_copy(update={"bake_started_at": NOW.epoch})
    assert not analysis.applies(CFG, just_started, NOW.epoch)
    over = just_started.model_copy(update={"bake_until": NOW.epoch})
    assert analysis.applies(CFG, over, NOW.epoch)


def test_the_chart_draws_both_releases_on_one_scale_per_metric() -> None:
    lines = chart(
        Series(8, [0.0, 0.1, 0.2], [30.0, 60.0, None]),
        Series(7, [0.0, 0.0, None], [30.0, 30.0, 30.0]),
    )
    assert lines == [
        "5xx rate canary 8      ▁▅█ 20.0%",
        "         stable 7      ▁▁  0.0%",
        "p99      canary 8      ▅█  60 ms",
        "         stable 7      ▅▅▅ 30 ms",
    ]
