"""A series as one line of block characters (`deployer status` and `wait` draw the canary's and
the stable release's 5xx rate and p99 over the bake). Pure; no rich."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.adapters.proxy_metrics import Series

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], top: float | None = None) -> str:
    """One character per value, scaled from 0 to `top` (default: the largest value), so two
    lines drawn with the same `top` compare by eye; None (no datum) is a space."""
    known = [v for v in values if v is not None]
    ceiling = top if top is not None else max(known, default=0.0)
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif ceiling <= 0:
            out.append(BLOCKS[0])
        else:
            level = round(min(max(value, 0.0), ceiling) / ceiling * (len(BLOCKS) - 1))
            out.append(BLOCKS[level])
    return "".join(out)


def _last(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _shown(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if percent else f"{value:.0f} ms"


def chart(canary: Series, stable: Series) -> list[str]:
    """Four lines: the canary's and the stable release's 5xx rate, then their p99, each pair on
    one scale so the two compare by eye, the latest value at the end."""
    lines = []
    for title, percent in (("5xx rate", True), ("p99", False)):
        pair = [(s.error_rates if percent else s.p99_ms) for s in (canary, stable)]
        top = max((v for values in pair for v in values if v is not None), default=0.0)
        for label, series, values in (("canary", canary, pair[0]), ("stable", stable, pair[1])):
            head = title if label == "canary" else ""
            latest = _shown(_last(values), percent)
            lines.append(f"{head:<9}{label} {series.release:<6} {sparkline(values, top)} {latest}")
    return lines
