"""The demo's canary figures, from what the load generators recorded per host."""

from __future__ import annotations

import pytest

from localcloud.hosts.load import LoadResult, Record
from localcloud.stories.canary import detect_to_stable, window

pytestmark = pytest.mark.unit

BAD, STABLE = "web release 5", "web release 1"


def host(*answers: tuple[float, str, int]) -> LoadResult:
    """A host's load result: one request per answer, sent 10 ms before it ended."""
    result = LoadResult()
    for ended, release, status in answers:
        result.records.append(Record("get", ended - 0.01, ended, None if status < 500 else f"http_{status}"))
        result.record_answer(ended, release, status)
    return result


def test_detect_to_stable_runs_from_the_first_bad_503_to_the_last_canary_back_on_stable() -> None:
    # Given a canary host that served the bad release from 10.0 s, failed first at 10.4 s, answered
    # with it last at 14.0 s and with the stable release again at 14.05 s; another host on stable
    canary = host(
        (9.9, STABLE, 200),
        (10.0, BAD, 200),
        (10.4, BAD, 503),
        (12.0, BAD, 200),
        (14.0, BAD, 200),
        (14.05, STABLE, 200),
        (15.0, STABLE, 200),
    )
    other = host((10.0, STABLE, 200), (12.0, STABLE, 200), (14.0, STABLE, 200))
    # When the figure is read
    seconds = detect_to_stable({"i-canary": canary, "i-other": other}, BAD, STABLE)
    # Then it is 14.05 - 10.4
    assert seconds == pytest.approx(3.65)


def test_a_canary_that_never_answers_stable_again_has_no_detect_to_stable() -> None:
    canary = host((10.0, BAD, 503), (11.0, BAD, 200))
    assert detect_to_stable({"i-canary": canary}, BAD, STABLE) is None


def test_the_window_counts_every_request_and_the_bad_releases_answers_and_503s_per_host() -> None:
    # Given answers inside and outside the window [10, 20]
    canary = host((5.0, STABLE, 200), (11.0, BAD, 200), (12.0, BAD, 503), (19.0, STABLE, 200))
    other = host((11.0, STABLE, 200), (12.0, STABLE, 200), (25.0, BAD, 200))
    canary.records.append(Record("get", 13.0, 13.5, "ConnectionResetError"))  # no answer at all
    # When the window is read
    seen = window({"i-canary": canary, "i-other": other}, 10.0, 20.0)
    # Then every request that ended in it counts, answered or not, and only the canary served BAD
    assert seen.requests == 6
    assert seen.by_release == {BAD: 2, STABLE: 3}
    assert seen.errors_by_release == {BAD: 1}
    assert seen.hosts_answered_by[BAD] == ["i-canary"]
