"""The agent copy embedded in user data is the same program as host/agent.py, only smaller."""

from __future__ import annotations

import ast
import base64
import lzma
from pathlib import Path

import pytest
from deployer.builders import compact_source, encode_agent

pytestmark = pytest.mark.unit

AGENT = Path(__file__).resolve().parents[2] / "host" / "agent.py"


def _without_docstrings(tree: ast.AST) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def test_compacted_agent_has_the_same_syntax_tree_as_the_agent_minus_docstrings():
    # Given the agent's source
    source = AGENT.read_text()
    # When it is compacted for user data
    compact = compact_source(source)
    # Then it is smaller and parses to the same program (string literals included)
    assert len(compact) < len(source)
    assert ast.dump(ast.parse(compact)) == _without_docstrings(ast.parse(source))


def test_compacting_keeps_blank_lines_and_hashes_inside_strings_and_stubs_docstring_only_bodies():
    # Given code whose strings contain blank lines and '#', and a function that is only a docstring
    source = (
        '#!/usr/bin/env python3\n"""Usage text.\n\nkept"""\n'
        "NGINX = '''server {\n\n    # kept hash\n}'''  # dropped remark\n"
        'def f():\n    """Only a docstring."""\n\n\n'
        'class C:\n    """Doc."""\n    x = 1  # trailing\n'
    )
    # When it is compacted
    compact = compact_source(source)
    # Then strings are intact, comments and docstrings gone, and the code still compiles
    namespace: dict[str, object] = {}
    exec(compile(compact, "compact", "exec"), namespace)
    assert namespace["NGINX"] == "server {\n\n    # kept hash\n}"
    assert "dropped remark" not in compact
    assert "trailing" not in compact
    assert "Only a docstring" not in compact
    assert compact.startswith("#!/usr/bin/env python3\n")


def test_encoded_agent_decodes_to_the_compacted_agent():
    # Given the agent, When it is encoded for user data
    source = AGENT.read_text()
    encoded = encode_agent(source)
    # Then the host-side decoding gives back the compacted source exactly
    assert lzma.decompress(base64.b85decode(encoded)).decode() == compact_source(source)
