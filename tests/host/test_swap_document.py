"""The deployable swap document's script, as SSM would run it, deploys through the agent embedded
in it by tools/render_template.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localcloud.aws.stack import load_yaml
from localcloud.hosts.images import AppImage
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import APP, body
from tools.render_template import ensure_built

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def document_script(values: dict[str, str], agent_dir: Path) -> str:
    """runCommand joined and {{ name }} substituted textually, as SSM (and the local cloud) do."""
    resources = load_yaml(ensure_built().read_text())["Resources"]
    content = resources["SwapDocument"]["Properties"]["Content"]
    parameters: dict[str, Any] = content["parameters"]
    step = next(s for s in content["mainSteps"] if "runCommand" in s.get("inputs", {}))
    script = "\n".join(step["inputs"]["runCommand"])
    merged = {name: str(spec.get("default", "")) for name, spec in parameters.items()}
    merged.update(values)
    for name, value in merged.items():
        assert re.fullmatch(parameters[name]["allowedPattern"], value), name
        script = re.sub(r"\{\{\s*" + name + r"\s*\}\}", value, script)
    assert "{{" not in script
    # The document writes the agent to a fixed host path; keep this test inside its tmp dir.
    return script.replace("/opt/deployer", str(agent_dir))


def test_the_swap_document_script_deploys_a_release_and_prints_one_summary_line(
        host: HostSandbox, publish: Callable[..., AppImage], tmp_path: Path) -> None:
    # Given the rendered swap document and a sandbox host
    image = publish(1)
    script = document_script({"app": APP, "image": image.reference, "release": "1",
                              "containerPort": "8080", "healthPath": "/health", "healthTimeout": "20",
                              "registryLogin": "none"}, tmp_path / "opt")
    # When bash runs it the way the SSM agent would
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, DEPLOYER_HOST_CONFIG=str(host.config_path)), check=False)
    # Then the embedded agent deployed the release and stdout is exactly its summary
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["outcome"] == "live"
    assert summary["release"] == 1
    assert host.get("/") == (200, body(1))
    # and the agent the document wrote on the host is host/agent.py, byte for byte
    assert (tmp_path / "opt" / "agent.py").read_bytes() == (ROOT / "host" / "agent.py").read_bytes()
