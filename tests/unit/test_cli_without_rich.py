"""The Lambda layer has no rich: nothing a function imports may import it, and the CLI package
itself imports it only when it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

BLOCK_RICH = """
import importlib.abc, sys
class NoRich(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rich" or name.startswith("rich."):
            raise ImportError("rich is not in the Lambda layer")
sys.meta_path.insert(0, NoRich())
"""


@pytest.mark.parametrize(
    "module",
    [
        "functions.rollback.app",
        "functions.on_command_status.app",
        "functions.on_image_push.app",
        "functions.on_instance_launch.app",
        "functions.reconciler.app",
        "deployer.cli",
    ],
)
def test_importing_without_rich_works(module: str) -> None:
    code = (
        BLOCK_RICH
        + f"import {module}\nassert not any(m == 'rich' or m.startswith('rich.') for m in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


BLOCK_YAML = """
import importlib.abc, sys
class NoYaml(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "yaml" or name.startswith("yaml.") or name == "_yaml":
            raise ImportError("PyYAML is not in the Lambda layer")
sys.meta_path.insert(0, NoYaml())
"""


@pytest.mark.parametrize(
    "module",
    [
        "functions.rollback.app",
        "functions.on_command_status.app",
        "functions.on_image_push.app",
        "functions.on_instance_launch.app",
        "functions.reconciler.app",
        "deployer.cli",
    ],
)
def test_importing_without_yaml_works(module: str) -> None:
    code = (
        BLOCK_YAML
        + f"import {module}\nassert not any(m == 'yaml' or m.startswith('yaml.') for m in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_without_pyyaml_a_json_config_still_validates_and_a_yaml_one_says_what_is_missing(
    tmp_path: Path,
) -> None:
    # Given the same valid config as JSON and as YAML, and no PyYAML
    config = {
        "app": "web",
        "repository": "team/web",
        "auto_scaling_group": "web-asg",
        "launch_template": "web-lt",
        "container": {"port": 8080},
    }
    (tmp_path / "web.json").write_text(json.dumps(config))
    (tmp_path / "web.yaml").write_text(json.dumps(config))
    code = BLOCK_YAML + (
        "import io\n"
        "from deployer import cli\n"
        "for name in ('web.json', 'web.yaml'):\n"
        "    err = io.StringIO()\n"
        "    code = cli.main(['config', 'validate', name], out=io.StringIO(), err=err)\n"
        "    print(name, code, err.getvalue().strip())\n"
    )

    # When each is validated
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)},
    )

    # Then JSON validates, and YAML is one error line naming what is missing
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "web.json 0 ",
        "web.yaml 4 error: web.yaml: reading YAML needs the PyYAML package; "
        "or give the config as a .json file",
    ]
