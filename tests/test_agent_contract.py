"""The agent inlined into the swap document is host/agent.py, and both sides agree on the contract."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from deployer import agent_contract

from localcloud.template import load_yaml
from tools.render_template import inlined_agent, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "host" / "agent.py"
TEMPLATE = ROOT / "template.yaml"


def _agent_constant(name: str) -> Any:
    tree = ast.parse(AGENT.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"host/agent.py defines no literal {name}")


def _swap_document() -> dict[str, Any]:
    data = load_yaml(TEMPLATE.read_text())
    document: dict[str, Any] = data["Resources"]["SwapDocument"]["Properties"]["Content"]
    return document


def _run_command() -> list[str]:
    steps = [s for s in _swap_document()["mainSteps"] if "runCommand" in s.get("inputs", {})]
    assert len(steps) == 1, "the swap document has exactly one runShellScript step"
    run_command: list[str] = steps[0]["inputs"]["runCommand"]
    return run_command


def test_the_inlined_agent_in_the_swap_document_is_identical_to_host_agent_py() -> None:
    # Given the template and the agent source
    # When the agent copy is read back from the swap document's runCommand
    inlined = inlined_agent(_run_command())
    # Then it is byte for byte the agent (python tools/render_template.py refreshes it)
    identical = inlined == AGENT.read_text()
    assert identical, "template.yaml is stale: run python tools/render_template.py"


def test_rendering_the_template_again_changes_nothing() -> None:
    # Given the committed template
    text = TEMPLATE.read_text()
    # When it is rendered again
    # Then it is already current
    current = render(text, AGENT.read_text()) == text
    assert current, "template.yaml is stale: run python tools/render_template.py"


def test_the_agent_contains_nothing_ssm_would_interpolate() -> None:
    # Given the agent source, When searched for SSM's parameter syntax, Then there is none
    assert "{{" not in AGENT.read_text()


def test_the_agent_exit_codes_equal_the_control_plane_contract() -> None:
    # Given the agent's exit-code table and the control plane's
    agent_codes = _agent_constant("EXIT_CODES")
    contract = {str(cls.value): int(code) for cls, code in agent_contract.EXIT_CODE_BY_CLASS.items()}
    # Then they are the same mapping
    assert agent_codes == contract


def test_the_agent_usage_text_documents_every_exit_code() -> None:
    # Given the usage text at the top of the agent
    usage = ast.get_docstring(ast.parse(AGENT.read_text())) or ""
    # Then every class appears with its code
    for cls, code in agent_contract.EXIT_CODE_BY_CLASS.items():
        assert re.search(rf"^\s*{int(code)} {cls.value}\b", usage, re.MULTILINE), cls


def test_the_agent_validates_with_the_same_patterns_as_the_document_and_the_contract() -> None:
    # Given the agent's patterns, the contract's, and the document's allowedPattern values
    agent_patterns = _agent_constant_patterns()
    parameters = _swap_document()["parameters"]
    # Then every document parameter the agent receives is checked with the identical pattern
    for name, flag in agent_contract.AGENT_FLAGS.items():
        key = flag[2:].replace("-", "_")
        assert agent_patterns[key] == agent_contract.PARAMETER_PATTERNS[name], name
        assert parameters[name]["allowedPattern"] == agent_contract.PARAMETER_PATTERNS[name], name


def test_the_agent_docker_option_allow_list_equals_the_contract() -> None:
    assert tuple(_agent_constant("DOCKER_OPTION_NAMES")) == agent_contract.DOCKER_OPTION_NAMES


def _agent_constant_patterns() -> dict[str, str]:
    # PATTERNS is built from expressions; evaluate the agent module's globals without running main.
    namespace: dict[str, Any] = {"__name__": "agent_under_test"}
    exec(compile(AGENT.read_text(), str(AGENT), "exec"), namespace)
    patterns: dict[str, str] = namespace["PATTERNS"]
    return patterns


def test_the_swap_document_stays_under_ssms_64_kb_content_limit() -> None:
    # Given the swap document with the agent inlined
    size = len(json.dumps(_swap_document()))
    # Then SSM accepts its size (a larger agent needs a compressed heredoc instead)
    assert size < 64 * 1024, f"swap document content is {size} bytes"
