"""Files shipped inside the package (and so inside the Lambda layer).

`agent.py.txt` is a symbolic link to `host/agent.py`, the single source of the host agent;
`sam build` copies the link's target into the layer, so the layer always carries the agent of
the commit it was built from. It has a non-`.py` name so it is data, not a module of this
package. A unit test checks that what the package reads is `host/agent.py`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def agent_source() -> str:
    """The host agent's source text, as embedded into user data."""
    return resources.files(__package__).joinpath("agent.py.txt").read_text(encoding="utf-8")
