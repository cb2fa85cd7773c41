"""A series as one line of block characters (`deployer status` and `wait` draw the canary's and
the stable release's 5xx rate and p99 over the bake). Pure; no rich."""

from __future__ import annotations

from collections.abc import Sequence

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
