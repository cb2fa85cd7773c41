"""What `make down` finds after a crashed playground: real nginx, killed the hard way."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from localcloud.hosts.sandbox import free_port
from localcloud.stories.playground import _sweep, processes_using

pytestmark = pytest.mark.integration


def test_a_sweep_after_a_crash_stops_nginx_workers_whose_master_was_killed(tmp_path: Path) -> None:
    # Given an nginx of the playground's state directory, with workers, whose master was killed
    prefix = tmp_path / "cloud" / "hosts" / "i-0" / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(
        f"worker_processes 2; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; return 204; }} }}\n"
    )
    subprocess.run(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], check=True)
    master = int((prefix / "nginx.pid").read_text())
    deadline = time.monotonic() + 10
    while not _answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(master, signal.SIGKILL)
    time.sleep(0.2)
    assert _answers(port), "nginx workers outlive a killed master and keep serving"
    try:
        # When `make down` sweeps what the crashed playground left
        _sweep(tmp_path, None)
        # Then nothing serves the host's port any more
        deadline = time.monotonic() + 5
        while _answers(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _answers(port)
    finally:
        for pid in processes_using(tmp_path):  # a failed run leaves no worker behind
            os.kill(pid, signal.SIGKILL)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return bool(answer.status == 204)
    except OSError:
        return False
