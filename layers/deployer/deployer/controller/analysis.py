"""Canary analysis (docs/stages.md, "Canary analysis"): the canary's hosts against the stable
release's hosts over the same window, from the requests each host's proxy answered. Pure: the
figures come in, a verdict and the record of the check go out.

    fewer than min_requests canary requests           -> inconclusive
    canary 5xx rate > max(max_error_rate,
                          error_rate_ratio x stable's) -> fail   (stable without traffic:
                                                                  max_error_rate alone)
    canary p99 > latency_ratio x stable's p99
               and > latency_floor_ms                  -> fail   (skipped when stable had no traffic)
    otherwise                                          -> pass

During a bake a fail ends it at once; at the bake's end the last check decides, and an
inconclusive one passes (the stage's hosts answered too little to judge; it says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deployer.controller import stages
from deployer.controller.types import Decision, Now, Transition
from deployer.models.records import STAGE_BAKING, Release, ReleaseStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from deployer.adapters.app_state import AppStateRecord
    from deployer.adapters.proxy_metrics import Figures
    from deployer.models.config import AnalysisConfig

# Checks kept on the release (newest last): enough for status and history, and each entry is
# about 400 bytes, far under DynamoDB's 400 KB item limit.
KEEP_ENTRIES = 20


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _errors(f: Figures) -> str:
    return f"{_pct(f.error_rate)} ({f.errors} of {f.requests})"


def judge(cfg: AnalysisConfig, canary: Figures, stable: Figures) -> Verdict:
    """The canary's verdict against the stable release over one window."""
    if canary.requests < cfg.min_requests:
        return Verdict(
            Outcome.INCONCLUSIVE, f"inconclusive: {canary.requests} of {cfg.min_requests} requests"
        )
    rate = canary.error_rate or 0.0
    stable_rate = stable.error_rate
    allowed = cfg.max_error_rate
    if stable_rate is not None:
        allowed = max(cfg.max_error_rate, cfg.error_rate_ratio * stable_rate)
    if rate > allowed:
        return Verdict(
            Outcome.FAIL,
            f"canary analysis failed: 5xx rate {_errors(canary)} vs stable {_errors(stable)}; "
            f"allowed {_pct(allowed)}",
        )
    latency = f"p99 {_ms(canary.p99_ms)} vs stable {_ms(stable.p99_ms)}"
    if stable.requests and stable.p99_ms is not None and canary.p99_ms is not None:
        limit = cfg.latency_ratio * stable.p99_ms
        if canary.p99_ms > limit and canary.p99_ms > cfg.latency_floor_ms:
            return Verdict(
                Outcome.FAIL,
                f"canary analysis failed: {latency}; allowed {_ms(max(limit, cfg.latency_floor_ms))} "
                f"({cfg.latency_ratio:g}x stable)",
            )
    return Verdict(
        Outcome.PASS,
        f"canary analysis passed: 5xx rate {_errors(canary)} vs stable {_errors(stable)}; {latency}",
    )


def entry(
    verdict: Verdict, *, stage: int, at: int, canary: Figures, stable: Figures, window: tuple[int, int]
) -> dict[str, Any]:
    """One check as the release records it (`Release.analysis`)."""
    return {
        "stage": stage,
        "at": at,
        "verdict": verdict.outcome.value,
        "reason": verdict.reason,
        "canary": canary.as_record(),
        "stable": stable.as_record(),
        "window": [window[0], window[1]],
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("stage", "verdict", "canary", "stable"))


def recorded(entries: list[dict[str, Any]] | None, new: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The release's checks with `new` added, the oldest dropped past KEEP_ENTRIES; None when the
    newest check already says the same (same stage, verdict and figures: nothing to write)."""
    entries = list(entries or [])
    if entries and _same(entries[-1], new):
        return None
    return [*entries, new][-KEEP_ENTRIES:]


def window(bake_started_at: int, bake_until: int | None, now: int) -> tuple[int, int]:
    """The bake so far, [start, end) with end > start; the final check stops at the bake's end."""
    end = now if bake_until is None else min(now, bake_until)
    return bake_started_at, max(end, bake_started_at + 1)


def latest_per_stage(entries: list[dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
    """The newest check of each stage (for status and history)."""
    latest: dict[int, dict[str, Any]] = {}
    for item in entries or []:
        latest[int(item.get("stage", 0))] = item
    return latest


def applies(cfg: AnalysisConfig, release: Release, now: int) -> bool:
    """Whether a baking release is checked now: analysis on, the bake's start recorded, a stable
    release to compare with (a first deploy has none: its bake is time alone), and a second of
    bake to read (the converge that starts the bake has nothing to judge yet) or its end."""
    if not cfg.enabled or release.stage_state != STAGE_BAKING or release.replaces is None:
        return False
    if release.bake_started_at is None:
        return False
    over = release.bake_until is not None and now >= release.bake_until
    return now > release.bake_started_at or over


def checked(
    state: AppStateRecord,
    release: Release,
    verdict: Verdict,
    figures: tuple[Figures, Figures],
    span: tuple[int, int],
    *,
    target: Release | None,
    pending: Sequence[Release],
    token: str,
    now: Now,
) -> Decision | None:
    """What one check writes. A fail: the release FAILED with the check recorded in the same
    write, its digest refused (the image is bad) and the hosts that took it rolled back (the one
    rollback path, `stages.stage_failed`). Otherwise the check is recorded, conditioned on the
    stage still baking (a stale reader writes nothing); None when the newest check already
    says the same."""
    canary, stable = figures
    item = entry(verdict, stage=release.stage or 0, at=now.epoch, canary=canary, stable=stable, window=span)
    entries = recorded(release.analysis, item)
    if verdict.failed:
        return stages.stage_failed(
            state,
            release,
            verdict.reason,
            blame=True,
            fields={"analysis": entries} if entries is not None else None,
            target=target,
            pending=pending,
            token=token,
            now=now,
        )
    if entries is None:
        return None
    decision = Decision(release.app)
    decision.explain(
        "canary analysis checked", release=release.release, stage=release.stage, verdict=verdict.outcome.value
    )
    return decision.transition(
        Transition(
            release.release,
            ReleaseStatus.DEPLOYING,
            release.status_reason,
            frozenset({ReleaseStatus.DEPLOYING}),
            {"analysis": entries},
            expect={"stage": release.stage, "stage_state": STAGE_BAKING},
        )
    )
