"""EventBridge event-pattern matching, as the service documents it.

Supported: exact values (a list of strings, numbers, booleans or null), nested objects,
`prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `anything-but` (a value, a list, or
`{"prefix": ...}` / `{"suffix": ...}`), `exists`, `numeric`, `cidr`, and `$or`.
A field whose event value is a list matches when any element matches. A pattern key
absent from the event matches only `{"exists": false}`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Any

_MISSING = object()


class PatternError(ValueError):
    """The pattern itself is malformed (EventBridge would refuse to create the rule)."""


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """True when `event` matches the EventBridge `pattern`."""
    if not isinstance(pattern, dict):
        raise PatternError(f"pattern must be an object, got {type(pattern).__name__}")
    return _match_object(pattern, event)


def _match_object(pattern: dict[str, Any], event: Any) -> bool:
    for key, spec in pattern.items():
        if key == "$or":
            if not isinstance(spec, list) or len(spec) < 2:
                raise PatternError("$or needs a list of at least two patterns")
            if not any(_match_object(alt, event) for alt in spec):
                return False
            continue
        value = event.get(key, _MISSING) if isinstance(event, dict) else _MISSING
        if isinstance(spec, dict):
            if value is _MISSING or not isinstance(value, dict | list):
                # a nested pattern over a missing field can still match {"exists": false} leaves
                if not _only_absent_ok(spec):
                    return False
                continue
            candidates = value if isinstance(value, list) else [value]
            if not any(isinstance(c, dict) and _match_object(spec, c) for c in candidates):
                return False
            continue
        if not isinstance(spec, list):
            raise PatternError(f"pattern value for {key!r} must be a list or an object, got {spec!r}")
        if not _match_leaf(spec, value):
            return False
    return True


def _only_absent_ok(spec: dict[str, Any]) -> bool:
    """A nested pattern over a missing object matches when all its leaves ask for absence."""
    for key, sub in spec.items():
        if key == "$or":
            return any(_only_absent_ok(alt) for alt in sub)
        if isinstance(sub, dict):
            if not _only_absent_ok(sub):
                return False
            continue
        if not _match_leaf(sub, _MISSING):
            return False
    return True


def _match_leaf(spec: list[Any], value: Any) -> bool:
    if not spec:
        raise PatternError("an empty list matches nothing; EventBridge refuses it")
    values = value if isinstance(value, list) else [value]
    for rule in spec:
        if isinstance(rule, dict):
            if _match_operator(rule, value, values):
                return True
        elif value is not _MISSING and any(_equal(rule, v) for v in values):
            return True
    return False


def _equal(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool) or isinstance(value, bool):
        return rule is value
    if isinstance(rule, int | float) and isinstance(value, int | float):
        return float(rule) == float(value)
    return type(rule) is type(value) and rule == value


def _match_operator(rule: dict[str, Any], raw: Any, values: list[Any]) -> bool:
    if len(rule) != 1:
        raise PatternError(f"one operator per object, got {sorted(rule)}")
    op, arg = next(iter(rule.items()))
    if op == "exists":
        if not isinstance(arg, bool):
            raise PatternError("exists takes true or false")
        present = raw is not _MISSING and not (isinstance(raw, list) and not raw)
        return present if arg else not present
    if raw is _MISSING:
        # anything-but does not match a missing field either (documented behaviour)
        return False
    if op == "prefix":
        return any(_string_op(arg, v, str.startswith) for v in values)
    if op == "suffix":
        return any(_string_op(arg, v, str.endswith) for v in values)
    if op == "equals-ignore-case":
        _need_str(op, arg)
        return any(isinstance(v, str) and v.casefold() == arg.casefold() for v in values)
    if op == "wildcard":
        _need_str(op, arg)
        regex = "".join(".*" if ch == "*" else re.escape(ch) for ch in arg)
        return any(isinstance(v, str) and re.fullmatch(regex, v, re.DOTALL) for v in values)
    if op == "anything-but":
        return all(not _anything_but_hits(arg, v) for v in values)
    if op == "numeric":
        return any(_numeric(arg, v) for v in values)
    if op == "cidr":
        _need_str(op, arg)
        net = ipaddress.ip_network(arg, strict=False)
        return any(isinstance(v, str) and _in_net(v, net) for v in values)
    raise PatternError(f"unsupported operator {op!r}")


def _need_str(op: str, arg: Any) -> None:
    if not isinstance(arg, str):
        raise PatternError(f"{op} takes a string, got {arg!r}")


def _string_op(arg: Any, value: Any, test: Any) -> bool:
    if isinstance(arg, dict):
        ((sub, text),) = arg.items()
        if sub != "equals-ignore-case":
            raise PatternError(f"unsupported prefix/suffix modifier {sub!r}")
        return isinstance(value, str) and bool(test(value.casefold(), str(text).casefold()))
    _need_str("prefix/suffix", arg)
    return isinstance(value, str) and bool(test(value, arg))


def _anything_but_hits(arg: Any, value: Any) -> bool:
    """True when `value` is one of the things anything-but excludes."""
    if isinstance(arg, dict):
        ((sub, text),) = arg.items()
        if sub == "prefix":
            return isinstance(value, str) and value.startswith(text)
        if sub == "suffix":
            return isinstance(value, str) and value.endswith(text)
        if sub == "equals-ignore-case":
            texts = text if isinstance(text, list) else [text]
            return isinstance(value, str) and value.casefold() in {t.casefold() for t in texts}
        if sub == "wildcard":
            return isinstance(value, str) and fnmatch.fnmatchcase(value, text)
        raise PatternError(f"unsupported anything-but modifier {sub!r}")
    excluded = arg if isinstance(arg, list) else [arg]
    return any(_equal(e, value) for e in excluded)


_NUM_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _numeric(arg: Any, value: Any) -> bool:
    if not isinstance(arg, list) or len(arg) % 2:
        raise PatternError(f"numeric takes operator/number pairs, got {arg!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    for i in range(0, len(arg), 2):
        op, bound = arg[i], arg[i + 1]
        if op not in _NUM_OPS:
            raise PatternError(f"unsupported numeric operator {op!r}")
        if not _NUM_OPS[op](value, bound):
            return False
    return True


def _in_net(value: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(value) in net
    except ValueError:
        return False
