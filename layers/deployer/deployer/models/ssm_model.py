"""SSM's own input constraints, read from botocore's service model for SSM.

SSM checks SendCommand's MaxConcurrency and MaxErrors against the patterns in its API model, and
botocore does not check patterns client-side: a value the config accepted but SSM rejects would
fail the deploy only after the pointer and the group had moved. The config model therefore
validates those fields with the very patterns SSM uses, read from the model botocore ships
(loaded once, on first use), so the two cannot disagree.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import botocore.loaders


@cache
def _shapes() -> dict[str, Any]:
    model = botocore.loaders.create_loader().load_service_model("ssm", "service-2")
    shapes: dict[str, Any] = model["shapes"]
    return shapes


def send_command_shape(member: str) -> dict[str, Any]:
    """The constraints (`pattern`, `min`, `max`...) of a SendCommand request member."""
    name = _shapes()["SendCommandRequest"]["members"][member]["shape"]
    shape: dict[str, Any] = _shapes()[name]
    return shape


def check_send_command_value(member: str, value: str) -> str:
    """`value` if SSM accepts it as SendCommand's `member`; ValueError saying why otherwise."""
    shape = send_command_shape(member)
    pattern = shape.get("pattern")
    too_short = len(value) < shape.get("min", 0)
    too_long = "max" in shape and len(value) > shape["max"]
    if too_short or too_long or (pattern is not None and re.fullmatch(pattern, value) is None):
        raise ValueError(
            f"{value!r} is not a value SSM accepts as {member} "
            f"(length {shape.get('min', 0)}-{shape.get('max', '')}, pattern {pattern})"
        )
    return value
