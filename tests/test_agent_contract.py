"""The agent embedded in the deployable swap document is host/agent.py, the document fits SSM's
size limit, and both sides agree on the contract."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployer import agent_contract

from localcloud.aws.stack import load_yaml
from tools import render_template
from tools.render_template import PLACEHOLDER, ensure_built

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "host" / "agent.py"
SOURCE = ROOT / "template.yaml"
# SSM counts a document and its run-time parameters against 64 KB; 8 KB stay for the parameters.
DOCUMENT_LIMIT = 56 * 1024


def _agent_constant(name: str) -> Any:
    tree = ast.parse(AGENT.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"host/agent.py defines no literal {name}")


def _swap_document(path: Path | None = None) -> dict[str, Any]:
    data = load_yaml((path or ensure_built()).read_text())
    document: dict[str, Any] = data["Resources"]["SwapDocument"]["Properties"]["Content"]
    return document


def _run_command(path: Path | None = None) -> list[str]:
    steps = [s for s in _swap_document(path)["mainSteps"] if "runCommand" in s.get("inputs", {})]
    assert len(steps) == 1, "the swap document has exactly one runShellScript step"
    run_command: list[str] = steps[0]["inputs"]["runCommand"]
    return run_command


def _run_until_exec(run_command: list[str], opt: Path) -> subprocess.CompletedProcess[str]:
    """The document's script up to (not including) its final `exec` of the agent, run by sh the
    way SSM runs it, with the host's /opt/deployer moved into ``opt``."""
    assert run_command[-1].startswith("exec python3 /opt/deployer/agent.py swap")
    script = "\n".join(run_command[:-1]).replace("/opt/deployer", str(opt))
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_the_deployable_swap_document_writes_host_agent_py_byte_for_byte(tmp_path: Path) -> None:
    # Given the rendered swap document's script
    run_command = _run_command()
    # When a shell runs everything before the agent starts
    proc = _run_until_exec(run_command, tmp_path)
    # Then it wrote exactly host/agent.py where the script then runs it, and nothing else
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "agent.py").read_bytes() == AGENT.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.py"]


def test_a_host_that_already_runs_this_agent_keeps_its_file_untouched(tmp_path: Path) -> None:
    # Given a host whose agent is already this one, written long ago
    agent = tmp_path / "agent.py"
    agent.write_bytes(AGENT.read_bytes())
    os.utime(agent, (1_000_000_000, 1_000_000_000))
    # When the swap document's script runs up to the agent
    proc = _run_until_exec(_run_command(), tmp_path)
    # Then the file was not rewritten
    assert proc.returncode == 0, proc.stderr
    assert agent.stat().st_mtime == 1_000_000_000
    assert agent.read_bytes() == AGENT.read_bytes()


def test_a_host_with_another_agent_gets_this_one(tmp_path: Path) -> None:
    # Given a host that runs an older agent
    (tmp_path / "agent.py").write_text("print('an older agent')\n")
    # When the swap document's script runs up to the agent
    proc = _run_until_exec(_run_command(), tmp_path)
    # Then it runs this one
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "agent.py").read_bytes() == AGENT.read_bytes()


def test_the_hand_written_template_carries_no_agent_and_fails_loudly_if_deployed(tmp_path: Path) -> None:
    # Given template.yaml as written (not rendered)
    run_command = _run_command(SOURCE)
    # Then its script holds the placeholder, not the agent
    assert run_command.count(PLACEHOLDER) == 1
    assert "def main(" not in SOURCE.read_text()
    # and run as a document it stops with a reason before any agent runs
    proc = _run_until_exec(run_command, tmp_path)
    assert proc.returncode != 0
    assert "deploy build/template.yaml" in proc.stderr


@pytest.mark.parametrize("serialise", ["compact json", "json", "yaml", "yaml folded", "quoted yaml"])
def test_the_deployable_swap_document_stays_under_56_kb_in_every_format(serialise: str) -> None:
    # Given the swap document of build/template.yaml
    content = _swap_document()
    # When it is serialised the way SSM may be given it
    text = {
        "compact json": lambda: json.dumps(content, separators=(",", ":")),
        "json": lambda: json.dumps(content, indent=2),
        "yaml": lambda: yaml.safe_dump(content, sort_keys=False, width=float("inf")),
        "yaml folded": lambda: yaml.safe_dump(content, sort_keys=False),
        "quoted yaml": lambda: yaml.safe_dump(content, sort_keys=False, default_style='"'),
    }[serialise]()
    size = len(text.encode())
    print(f"swap document, {serialise}: {size:,} bytes")
    # Then it leaves SSM's 64 KB room for the run-time parameters
    assert size < DOCUMENT_LIMIT, f"swap document is {size:,} bytes as {serialise}"


def test_the_deployable_document_interpolates_only_its_declared_parameters() -> None:
    # Given the rendered document
    content = _swap_document()
    script = "\n".join(_run_command())
    # Then every {{ ... }} SSM would substitute names a declared parameter
    used = set(re.findall(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}", script))
    assert used <= set(content["parameters"])
    assert script.count("{{") == len(re.findall(r"\{\{\s*[A-Za-z0-9_.-]+\s*\}\}", script))


def test_the_check_flag_reports_a_stale_rendering_and_ensure_built_refreshes_it(tmp_path: Path) -> None:
    # Given a rendered template on disk that is out of date
    output = tmp_path / "build" / "template.yaml"
    output.parent.mkdir()
    output.write_text(SOURCE.read_text())
    # When it is checked, Then it is reported stale and left alone
    assert render_template.main(["--check", "--output", str(output)]) == 1
    assert output.read_text() == SOURCE.read_text()
    # When it is ensured, Then it is rewritten and checks as current
    ensure_built(output)
    assert render_template.main(["--check", "--output", str(output)]) == 0
    assert PLACEHOLDER not in _run_command(output)


def test_the_agent_exit_codes_equal_the_control_plane_contract() -> None:
    # Given the agent's exit-code table and the control plane's
    agent_codes = _agent_constant("EXIT_CODES")
    contract = {str(cls.value): int(code) for cls, code in agent_contract.EXIT_CODE_BY_CLASS.items()}
    # Then they are the same mapping
    assert agent_codes == contract


def test_the_agent_warning_classes_equal_the_control_plane_contract() -> None:
    # Given the agent's warning classes (problems after the new release went live) and the contract's
    agent_warnings = _agent_constant("WARNING_CLASSES")
    # Then they are the same, and none of them has an exit code of its own: the agent exits 0
    assert tuple(agent_warnings) == tuple(w.value for w in agent_contract.WarningClass)
    assert not set(agent_warnings) & set(_agent_constant("EXIT_CODES"))


def test_the_agent_meters_the_metrics_the_canary_analysis_reads() -> None:
    # Given the names the agent's meter sends and the names the controller's analysis reads
    from deployer import metrics_names  # noqa: PLC0415 - only this test needs it

    # Then they are the same namespace and metric names
    for name in ("PROXY_NAMESPACE", "PROXY_REQUESTS", "PROXY_ERRORS", "PROXY_LATENCY"):
        assert _agent_constant(name) == getattr(metrics_names, name), name


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
