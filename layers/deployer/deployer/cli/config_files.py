"""App config files in the app's repository, YAML or JSON, checked by the functions' own model
(`AppConfig`). An error names the field and the line it is on.

A file named `*.json` is read as JSON; any other as YAML. YAML is read with the JSON-compatible
subset of types only: `true`/`false` are the only booleans (YAML 1.1's `yes`, `no`, `on`, `off`
stay strings, so a strict field refuses them instead of silently flipping), dates stay strings,
a key given twice is an error instead of the last one winning, and anchors and aliases are
refused (each field is written where it is, with its own line).

PyYAML is imported on first use: the Lambda layer never imports this package.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig

if TYPE_CHECKING:
    from yaml import Node

JSON_SUFFIXES = frozenset({".json"})


def read_config(path: str) -> AppConfig:
    """Parse and validate an app config file; InvalidAppConfig names the file, each bad field and
    its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidAppConfig(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidAppConfig(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    if Path(path).suffix.lower() in JSON_SUFFIXES:
        try:
            document: Any = json.loads(text)
        except ValueError as exc:
            raise InvalidAppConfig(f"{path} is not valid JSON: {exc}") from exc
        root = _compose_quietly(text)  # JSON is YAML: its nodes carry the lines
    else:
        document, root = _load_yaml(path, text)
    if document is None:
        raise InvalidAppConfig(f"{path} is empty: an app config is a mapping of fields")
    try:
        return AppConfig.parse(document)
    except InvalidAppConfig as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError) and root is not None:
            raise InvalidAppConfig(f"{path}: invalid app config: {describe_with_lines(cause, root)}") from exc
        raise InvalidAppConfig(f"{path}: {exc}") from exc


def describe_with_lines(exc: ValidationError, root: Node) -> str:
    """One line naming every invalid field (dotted path), its line in the file, and what is wrong."""
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(root)"
        parts.append(f"{where} (line {line_of(root, loc)}): {err['msg']}")
    return "; ".join(parts)


def line_of(root: Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node of `loc` the file has: the field's key line, or for a
    field that is missing, the line of the mapping that lacks it."""
    from yaml import (  # noqa: PLC0415 - see the module's doc
        MappingNode,
        ScalarNode,
        SequenceNode,
    )

    node = root
    line = root.start_mark.line
    for part in loc:
        if isinstance(node, MappingNode):
            match = next(
                ((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(part)), None
            )
            if match is None:
                break
            line = match[0].start_mark.line
            node = match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return int(line) + 1


def _load_yaml(path: str, text: str) -> tuple[Any, Node | None]:
    try:
        import yaml  # noqa: PLC0415 - see the module's doc
    except ImportError as exc:
        raise InvalidAppConfig(
            f"{path}: reading YAML needs the PyYAML package; or give the config as a .json file"
        ) from exc
    loader = _loader()(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise InvalidAppConfig(f"{path} is not valid YAML: {where}{what}") from exc
    except yaml.YAMLError as exc:
        raise InvalidAppConfig(f"{path} is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    try:
        json.dumps(document)
    except (TypeError, ValueError) as exc:
        raise InvalidAppConfig(
            f"{path}: only strings, numbers, booleans, null, lists and mappings are allowed ({exc})"
        ) from exc
    return document, root


def _compose_quietly(text: str) -> Node | None:
    """The node tree of a JSON text, for line numbers only: None when it cannot be had."""
    try:
        import yaml  # noqa: PLC0415 - see the module's doc
    except ImportError:
        return None
    try:
        return yaml.compose(text, Loader=_loader())
    except yaml.YAMLError:
        return None


@cache
def _loader() -> Any:
    """A SafeLoader for config files: JSON's types only, YAML 1.2's booleans, no duplicate keys,
    no aliases."""
    import re  # noqa: PLC0415

    import yaml  # noqa: PLC0415 - see the module's doc
    from yaml.composer import ComposerError  # noqa: PLC0415
    from yaml.constructor import ConstructorError  # noqa: PLC0415

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"}

    class ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]
        def compose_node(self, parent: Any, index: Any) -> Any:
            # An alias makes the tree a graph: nested ones expand exponentially once the document
            # is serialised, and a field reached through one has no line of its own.
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ComposerError(
                    None,
                    None,
                    f"found the alias *{event.anchor}: anchors and aliases are not supported in an "
                    "app config, write the value out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if duplicate:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    ConfigLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    ConfigLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return ConfigLoader


def schema() -> dict[str, Any]:
    """The JSON Schema of an app config file, for editors (completion and checks as you type)."""
    document = AppConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted field paths to values; lists are values of their own (their order matters), an empty
    mapping sets nothing."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differences(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, stored value, file value) for every field that differs; a side that does not set
    the field has None (the stored documents leave unset optionals out)."""
    before = flatten(stored or {})
    after = flatten(wanted)
    return [
        (field, before.get(field), after.get(field))
        for field in sorted(before.keys() | after.keys())
        if before.get(field) != after.get(field)
    ]
