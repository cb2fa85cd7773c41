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

def blocking(*names: str) -> str:
    """Python source that makes importing any of `names` (or their submodules) fail."""
    return f"""
import importlib.abc, sys
BLOCKED = {names!r}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is not in the Lambda layer")
sys.meta_path.insert(0, Blocked())
"""


BLOCK_YAML = blocking("yaml", "_yaml")


@pytest.mark.parametrize("package", ["rich", "yaml"])
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
def test_importing_without_a_cli_only_package_works(module: str, package: str) -> None:
    code = (
        blocking(package, f"_{package}")
        + f"import {module}\nassert not any(m.split('.')[0] == {package!r} for m in sys.modules)\n"
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
