"""Run a host-side script (user data, an SSM document step) "on" one sandboxed host.

The scripts are the real ones, unchanged. They write to absolute host paths (`/opt/deployer`
for the agent, `/var/log` for boot logs); on this shared machine each run gets a private mount
namespace in which `/opt` and `/var/log` are that sandbox's own directories, so hosts never
see each other's files and the machine's own `/opt` and `/var/log` are untouched. Everything
else (Docker engine, nft, loopback) is shared, as the sandboxes are designed for. The host's
settings reach the agent through `DEPLOYER_HOST_CONFIG`; the instance-profile credentials of a
real host are the moto endpoint and fake keys here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_WRAPPER = (
    'set -e; mount --bind "$LC_OPT" /opt; mount --bind "$LC_LOG" /var/log; '
    'cd "$LC_CWD"; exec "$LC_SHELL" "$LC_SCRIPT"'
)


@dataclass
class ScriptResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def host_path(path: str) -> str:
    """PATH with version-manager shims last, so `python3` is a plain interpreter as on a real
    host (pyenv's shim is a bash wrapper costing ~0.1 s per run); tools only the shims provide
    (the AWS CLI here) are still found."""
    dirs = [d for d in path.split(os.pathsep) if d]
    shims = [d for d in dirs if "/.pyenv/" in d + "/"]
    return os.pathsep.join([d for d in dirs if d not in shims] + shims)


def namespaces_available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def run_script(
    root: Path,
    script: str,
    env: dict[str, str],
    timeout: float,
    *,
    name: str = "script.sh",
    shell: str = "bash",
) -> ScriptResult:
    """Run `script` with `shell` in the host rooted at `root`; stdout/stderr captured."""
    opt = root / "opt"
    log = root / "var-log"
    work = root / "ssm"
    for d in (opt, log, work):
        d.mkdir(parents=True, exist_ok=True)
    path = work / name
    path.write_text(script)
    path.chmod(0o700)
    full_env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}},
        **env,
        "PATH": host_path(env.get("PATH", os.environ.get("PATH", ""))),
        "LC_OPT": str(opt),
        "LC_LOG": str(log),
        "LC_CWD": str(work),
        "LC_SHELL": shell,
        "LC_SCRIPT": str(path),
    }
    if namespaces_available():
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _WRAPPER]
    else:  # without a mount namespace the script still runs; its /opt writes go to the machine
        argv = [shell, str(path)]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=full_env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return ScriptResult(
        proc.returncode if not timed_out else -1, out, err, time.monotonic() - start, timed_out
    )
