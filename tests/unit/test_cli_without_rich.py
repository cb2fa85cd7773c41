"""The Lambda layer has no rich: nothing a function imports may import it, and the CLI package
itself imports it only when it prints."""

from __future__ import annotations

import subprocess
import sys

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
