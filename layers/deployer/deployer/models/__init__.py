"""pydantic models: app config (`config`), stored records (`records`), incoming events (`events`)."""

from __future__ import annotations

from pydantic import ValidationError


def describe_errors(exc: ValidationError) -> str:
    """One line naming every invalid field (dotted path) and what is wrong with it."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
