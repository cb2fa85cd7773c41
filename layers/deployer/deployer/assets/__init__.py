"""Files shipped inside the package (and so inside the Lambda layer).

`agent.py.txt` is a byte-for-byte copy of `host/agent.py`, the single source of the host
agent; it is stored under a non-`.py` name so it is data, not a module of this package. A unit
test fails when the two differ (refresh with `cp host/agent.py layers/deployer/deployer/assets/agent.py.txt`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def agent_source() -> str:
    """The host agent's source text, as embedded into user data."""
    return resources.files(__package__).joinpath("agent.py.txt").read_text(encoding="utf-8")
