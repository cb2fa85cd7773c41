"""Per-process wiring for Lambda handlers: settings and adapters, built on first use.

Nothing here runs at import time (moto must be active first in tests; cold starts do not pay
for clients a path does not use). Tests call `reset()` between cases.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deployer.settings import Settings

if TYPE_CHECKING:
    from deployer.wiring import Adapters

_deps: Adapters | None = None


def deps() -> Adapters:
    """The process-wide adapters, built from the environment once."""
    global _deps  # noqa: PLW0603 - one wiring per Lambda execution environment
    if _deps is None:
        from deployer.wiring import Adapters  # noqa: PLC0415

        _deps = Adapters.from_settings(Settings.from_env())
    return _deps


def in_lambda() -> bool:
    """True in a Lambda execution environment (the runtime sets this variable before init), so a
    function may build its clients during init instead of on its first request; never in tests."""
    return bool(os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"))


def reset() -> None:
    global _deps  # noqa: PLW0603
    _deps = None
