"""Every Python install goes through the one lock, uv.lock.

The bootstrap (tools/bootstrap.sh) is the only place that installs Python packages: uv itself
by hash, then the virtualenv with `uv sync --frozen`. The Lambda layer's requirements, which
`sam build` installs, are derived from the same lock. These tests read the repository's files,
so a script, a doc or a Makefile line that installs packages another way fails them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "tools/bootstrap.sh"
UV = ROOT / ".tools" / "uv" / "bin" / "uv"

# Commands that install Python packages, in any file a person or a script might run.
INSTALL = re.compile(
    r"\b(?:pip3?(?:\.\d+)?\s+install|-m\s+pip\s+install|uv\s+(?:pip\s+install|pip\s+sync|sync|add|tool\s+install|run\s+--with)"
    r"|pipx\s+install|easy_install|poetry\s+(?:install|add))\b"
)


def _repo_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    files = []
    for name in listed:
        path = ROOT / name
        if not name or not path.is_file() or name == "uv.lock":
            continue
        if name.startswith("tests/unit/test_install_paths.py"):
            continue
        files.append(path)
    return files


def _install_lines() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _repo_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        # Shell continuation lines form one command.
        for line in text.replace("\\\n", " ").splitlines():
            if INSTALL.search(line):
                found.setdefault(str(path.relative_to(ROOT)), []).append(line.strip())
    return found


def test_only_the_bootstrap_installs_python_packages() -> None:
    # Given every file of the repository
    # When the lines that install Python packages are collected
    found = _install_lines()
    # Then they all live in the bootstrap
    elsewhere = {name: lines for name, lines in found.items() if name != BOOTSTRAP}
    assert elsewhere == {}, f"install Python packages through {BOOTSTRAP} (uv.lock) only: {elsewhere}"
    assert BOOTSTRAP in found


def test_the_bootstrap_installs_only_from_hashes_and_the_frozen_lock() -> None:
    # Given the install lines of the bootstrap
    lines = _install_lines()[BOOTSTRAP]
    for line in lines:
        words = shlex.split(line, comments=True)
        if "pip" in words and "install" in words:
            # Then pip installs only uv itself, with every hash checked
            assert "--require-hashes" in words, line
            assert words[words.index("-r") + 1] == "tools/uv-requirements.txt", line
            assert not [w for w in words if w == "-e" or w == "."], line
        else:
            # And uv installs only what uv.lock says, never re-resolving it
            assert "sync" in words, line
            assert "--frozen" in words or "--locked" in words, line


def test_uv_itself_is_pinned_by_hash() -> None:
    requirements = (ROOT / "tools" / "uv-requirements.txt").read_text()
    pins = [line for line in requirements.splitlines() if line and not line.startswith(("#", " "))]
    assert len(pins) == 1
    assert re.fullmatch(r"uv==\d+\.\d+\.\d+ \\", pins[0])
    assert "--hash=sha256:" in requirements
    # The project asks uv for the same version it is pinned to.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["required-version"] == "==" + pins[0].split("==")[1].split()[0]


def _lock_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {pkg["name"]: pkg["version"] for pkg in lock["package"] if "version" in pkg}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_layer_requirements_are_the_locks_runtime_closure() -> None:
    # Given the requirements sam build installs into the Lambda layer
    text = (ROOT / "layers" / "deployer" / "requirements.txt").read_text()
    pins = {
        _normalise(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", text, re.MULTILINE)
    }
    locked = {_normalise(k): v for k, v in _lock_versions().items()}
    # Then every pin is the locked version, with hashes
    assert pins, "no pinned requirement in the layer"
    assert {name: version for name, version in pins.items() if locked.get(name) != version} == {}
    blocks = re.split(r"\n(?=[A-Za-z])", text.strip())
    assert all("--hash=sha256:" in block for block in blocks if not block.startswith("#"))
    # And the runtime dependencies and none of the development tools are in it
    for runtime in ("aws-lambda-powertools", "pydantic", "boto3", "botocore"):
        assert runtime in pins
    for tool in ("moto", "pytest", "ruff", "mypy", "aws-sam-cli"):
        assert tool not in pins


def test_the_lock_matches_pyproject_and_the_layer_export() -> None:
    assert UV.exists(), "run tools/bootstrap.sh test first: it installs the pinned uv"
    # uv refuses a lock that no longer satisfies pyproject.toml.
    check = subprocess.run(
        [str(UV), "lock", "--check", "--offline"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    exported = subprocess.run(
        [str(UV), "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt",
         "--no-header"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    assert exported == (ROOT / "layers" / "deployer" / "requirements.txt").read_text(), "run `make lock`"


def test_without_root_the_bootstrap_names_what_is_missing_in_one_line(tmp_path: Path) -> None:
    # Given a machine where every tool but nginx is present and the user is not root
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python3").symlink_to(Path(sys.executable).resolve())  # the interpreter, not a shim
    for name in ("docker", "dockerd", "nft", "conntrack", "unshare", "curl", "shellcheck", "git", "make",
                 "sed", "sort", "tr", "cat", "grep", "readlink", "dirname", "env", "bash", "sh"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    (tools / "id").write_text("#!/bin/sh\necho 1000\n")
    (tools / "id").chmod(0o755)
    # When the bootstrap runs
    proc = subprocess.run(
        ["bash", str(ROOT / BOOTSTRAP), "demo"], env={"PATH": str(tools)}, cwd=ROOT,
        capture_output=True, text=True, check=False, timeout=60,
    )
    # Then it stops, naming the missing package in one line, and installs nothing
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bootstrap: missing system packages: nginx")
    assert "root" in lines[0]
