"""Input validation: bad values are refused with the input code before any command runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

AGENT = Path(__file__).resolve().parents[2] / "host" / "agent.py"
DIGEST = "sha256:" + "a" * 64
VALID = {
    "app": "web",
    "image": f"127.0.0.1:5000/web@{DIGEST}",
    "release": "7",
    "port": "8080",
    "health-path": "/health",
    "health-timeout": "30",
    "env-file": "",
    "docker-options": "--memory=256m --cpus=0.5",
    "log-driver": "json-file",
    "log-options": "max-size=10m,max-file=3",
    "retain": "3",
    "registry-login": "none",
}
PAYLOADS = [
    "x;touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "x|touch {canary}",
    "x&&touch {canary}",
    "x\ntouch {canary}",
    "x'; touch {canary}; '",
    "x>{canary}",
    "x\\ touch {canary}",
]


@pytest.fixture
def recorder_host(tmp_path: Path) -> dict[str, Path]:
    """A host.json whose docker, nginx, nft and aws commands only record that they ran."""
    record = tmp_path / "commands-run.log"
    recorder = tmp_path / "recorder"
    recorder.write_text(f'#!/bin/sh\necho "$0 $*" >> {record}\nexit 1\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    state_dir = tmp_path / "state"
    config = {
        "host_id": "inputs",
        "state_dir": str(state_dir),
        "docker_command": [str(recorder), "docker"],
        "nginx_command": [str(recorder), "nginx"],
        "nft_command": [str(recorder), "nft"],
        "aws_command": [str(recorder), "aws"],
        "nginx_conf_dir": str(tmp_path / "conf.d"),
        "lock_timeout": 1,
    }
    config_path = tmp_path / "host.json"
    config_path.write_text(json.dumps(config))
    return {"config": config_path, "record": record, "state": state_dir, "root": tmp_path}


def run_agent(config: Path, argv: list[str], python: str = sys.executable) -> tuple[int, list[str], str]:
    proc = subprocess.run([python, str(AGENT), *argv], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, DEPLOYER_HOST_CONFIG=str(config)), check=False)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def swap_argv(**overrides: str) -> list[str]:
    values = dict(VALID, **{k.replace("_", "-"): v for k, v in overrides.items()})
    return ["swap", *(f"--{name}={value}" for name, value in values.items())]


def summary_of(lines: list[str]) -> dict[str, Any]:
    assert len(lines) == 1, f"stdout must be exactly one line, got {lines!r}"
    data: dict[str, Any] = json.loads(lines[0])
    return data


def test_valid_input_reaches_the_host_commands(recorder_host: dict[str, Path]) -> None:
    # Given valid flags and host commands that only record themselves
    # When the agent runs
    code, lines, _ = run_agent(recorder_host["config"], swap_argv())
    # Then it got past validation and ran host commands (the recorder makes them fail)
    assert recorder_host["record"].exists()
    assert summary_of(lines)["failure_class"] != "input"
    assert code != 2


def _inject(flag: str, payload: str, canary: Path) -> str:
    attack = payload.format(canary=canary)
    return VALID[flag] + attack if VALID[flag] else attack


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_flag_carrying_shell_metacharacters_is_refused_before_anything_runs(
        recorder_host: dict[str, Path], payload: str) -> None:
    # Given every flag carrying the same shell injection attempt
    canary = recorder_host["root"] / "canary"
    overrides = {flag: _inject(flag, payload, canary) for flag in VALID}
    # When the agent runs
    code, lines, _ = run_agent(recorder_host["config"], swap_argv(**overrides))
    # Then it exits with the input code, names every flag, and nothing ran or changed
    summary = summary_of(lines)
    assert code == 2
    assert summary["failure_class"] == "input"
    assert summary["exit_code"] == 2
    assert [flag for flag in VALID if f"--{flag} " not in summary["message"]] == []
    assert not canary.exists()
    assert not recorder_host["record"].exists()
    assert not recorder_host["state"].exists()


@pytest.mark.parametrize("flag", sorted(VALID))
def test_one_flag_with_shell_metacharacters_among_valid_ones_is_refused(
        recorder_host: dict[str, Path], flag: str) -> None:
    # Given valid flags except one carrying a command substitution
    canary = recorder_host["root"] / "canary"
    # When the agent runs
    code, lines, _ = run_agent(recorder_host["config"],
                               swap_argv(**{flag: _inject(flag, "$(touch {canary})", canary)}))
    # Then only that flag is named, with the input code, and nothing ran
    summary = summary_of(lines)
    assert code == 2
    assert f"--{flag} " in summary["message"]
    assert not canary.exists()
    assert not recorder_host["record"].exists()


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("image", "127.0.0.1:5000/web:latest", "tag instead of digest"),
    ("release", "0", "release numbers start at 1"),
    ("port", "70000", "port out of range"),
    ("docker-options", "--privileged=true", "option outside the allow-list"),
    ("docker-options", "--network=host", "option outside the allow-list"),
    ("log-driver", "syslog", "driver outside the list"),
    ("env-file", "/nonexistent/app.env", "env file missing on the host"),
    ("registry-login", "ecr", "ecr login for a non-ECR registry"),
])
def test_a_malformed_value_is_an_input_error_naming_the_flag(
        recorder_host: dict[str, Path], flag: str, value: str, why: str) -> None:
    # Given one malformed value (see why)
    # When the agent runs
    code, lines, _ = run_agent(recorder_host["config"], swap_argv(**{flag: value}))
    # Then the input code names the flag and no command ran
    summary = summary_of(lines)
    assert code == 2, why
    assert f"--{flag}" in summary["message"], why
    assert not recorder_host["record"].exists()


def test_a_missing_required_flag_is_an_input_error(recorder_host: dict[str, Path]) -> None:
    # Given a swap without --image
    argv = [arg for arg in swap_argv() if not arg.startswith("--image=")]
    # When the agent runs
    code, lines, _ = run_agent(recorder_host["config"], argv)
    # Then it refuses with the input code
    summary = summary_of(lines)
    assert code == 2
    assert "--image" in summary["message"]
    assert not recorder_host["record"].exists()


def test_an_unknown_host_config_key_is_an_input_error(tmp_path: Path) -> None:
    # Given a host.json with a misspelt key
    config = tmp_path / "host.json"
    config.write_text(json.dumps({"stable_prot": 1234}))
    # When the agent runs, Then it refuses with the input code, naming the key
    code, lines, _ = run_agent(config, swap_argv())
    assert code == 2
    assert "stable_prot" in summary_of(lines)["message"]


def test_the_usage_text_lists_every_exit_code(recorder_host: dict[str, Path]) -> None:
    # Given the agent asked for help
    code, lines, stderr = run_agent(recorder_host["config"], ["--help"])
    # Then the usage on stderr documents each failure class and its code
    for code_line in ("0 none", "2 input", "3 lock", "4 pull", "5 start", "6 health", "7 switch"):
        assert code_line in stderr
    # and a cleanup problem after the switch is a warning with exit 0, not an exit code of its own
    assert '"warning" ("cleanup")' in stderr
    assert "8 cleanup" not in stderr
    assert code == 2
    assert summary_of(lines)["failure_class"] == "input"


def _python39() -> str | None:
    found = shutil.which("python3.9")
    candidates = [found] if found else []
    candidates += [str(p) for p in Path("/root/.pyenv/versions").glob("3.9*/bin/python3.9")]
    for candidate in candidates:
        if subprocess.run([candidate, "--version"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def test_the_agent_runs_on_python_3_9(recorder_host: dict[str, Path]) -> None:
    # Given Amazon Linux's oldest python3 line
    python = _python39()
    if python is None:
        pytest.skip("python3.9 is not installed on this machine")
    # When the agent validates input and reaches the host commands under it
    code, lines, _ = run_agent(recorder_host["config"], swap_argv(), python=python)
    bad_code, bad_lines, _ = run_agent(recorder_host["config"], swap_argv(app="Bad;"), python=python)
    # Then it behaves exactly as under the newer interpreter
    assert summary_of(lines)["failure_class"] != "input"
    assert code != 2
    assert bad_code == 2
    assert summary_of(bad_lines)["failure_class"] == "input"
