"""Keep only the members of a documented request shape.

A describe answer may carry members that exist only in the response shape (EC2's
`MetadataOptions.State`, for one); sending such a member back makes botocore refuse the
request. Whatever part of an answer is written back goes through `request_shaped` with the
input shape of the operation it is sent to, taken from the client's own service model.
"""

from __future__ import annotations

from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape


def input_shape(client: Any, operation: str, *path: str) -> Shape:
    """The input shape of `operation`, or of the member reached by `path` ("[]" = list item)."""
    shape: Shape = client.meta.service_model.operation_model(operation).input_shape
    for name in path:
        if name == "[]":
            if not isinstance(shape, ListShape):
                raise KeyError(f"{operation}: {shape.name} is not a list")
            shape = shape.member
        else:
            if not isinstance(shape, StructureShape):
                raise KeyError(f"{operation}: {shape.name} has no member {name}")
            shape = shape.members[name]
    return shape


def request_shaped(value: Any, shape: Shape) -> Any:
    """`value` without the members `shape` does not define, recursively."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {k: request_shaped(v, shape.members[k]) for k, v in value.items() if k in shape.members}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [request_shaped(v, shape.member) for v in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {k: request_shaped(v, shape.value) for k, v in value.items()}
    return value
