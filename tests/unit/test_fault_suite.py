"""`make faults` as an instrument: it runs, its checker self-test passes, and it ends with FAULTS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_fault_suite_ends_with_its_faults_line_and_a_passing_checker_self_test() -> None:
    # Given two injections of one flow (the suite installs its clock before the deployer, so it
    # runs in its own interpreter)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'deployer'}{os.pathsep}{ROOT}"}
    command = [
        sys.executable,
        "-m",
        "tests.faults",
        "--flow",
        "push_deploy",
        "--kind",
        "crash",
        "--k",
        "1",
        "--k",
        "11",
    ]
    # When it runs
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    # Then the checker's self-test passed (exit 0), each broken world was reported, and the last
    # line counts exactly the cases asked for
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "clean happy path violations: none" in done.stdout
    assert lines[-1].startswith("FAULTS ")
    summary = json.loads(lines[-1].removeprefix("FAULTS "))
    assert summary["flows"] == ["push_deploy"]
    assert summary["injections"] == 2
    assert summary["kinds"] == ["error", "crash", "duplicate"]
