"""Helpers shared by the host agent tests."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

from localcloud.hosts.images import AppImage, release_body
from localcloud.hosts.sandbox import HostSandbox

APP = "web"


def body(release: int) -> str:
    """What release ``release`` of the test app answers at ``/``."""
    return release_body(APP, release)


def swap(sandbox: HostSandbox, image: AppImage, mode: str = "swap",
         **flags: Any) -> tuple[int, dict[str, Any], str]:
    """Run the agent to bring ``sandbox`` to ``image``."""
    return sandbox.run_agent(mode, sandbox.swap_args(APP, image.reference, image.release, **flags))


def image_present(ref: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
    return proc.returncode == 0


def container_id(name: str) -> str:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=False).stdout
    data = json.loads(out or "[]")
    return str(data[0]["Id"]) if data else ""


def release_config(environment: dict[str, str] | None = None,
                   secrets: list[dict[str, str]] | None = None) -> str:
    """The swap document's releaseConfig value (agent_contract: base64 of one JSON object)."""
    data = {"v": 1, "environment": environment or {}, "secrets": secrets or []}
    return base64.b64encode(json.dumps(data).encode()).decode()


def container_env(name: str) -> dict[str, str]:
    """The environment a process started in the running container sees."""
    proc = subprocess.run(["docker", "exec", name, "/bin/busybox", "env"], capture_output=True, text=True,
                          check=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
