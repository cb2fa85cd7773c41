"""A Docker engine of one's own, for faults that stop the engine (the machine's engine is shared
and must never be stopped).

``Engine(name)``: a second dockerd with its own data root (``/var/lib/deployer-engine-<name>``),
exec root (and so its own managed containerd), pid file and unix socket, no bridge and no
iptables rules (containers use ``--network host``). ``start()`` waits until it answers;
``restart()`` stops it with SIGTERM (containers stop, as at a reboot or an engine upgrade) and
starts it on the same data root; ``stop()`` ends it and removes its directories. ``url`` is the
``DOCKER_HOST`` value of its socket. Only the dockerd this object started is ever signalled.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType


class EngineError(RuntimeError):
    """The engine would not start."""


class Engine:
    def __init__(self, name: str) -> None:
        self.data_root = Path("/var/lib") / f"deployer-engine-{name}"
        self.exec_root = Path("/run") / f"deployer-engine-{name}"
        self.socket = Path("/run") / f"deployer-engine-{name}.sock"
        self.pid_file = Path("/run") / f"deployer-engine-{name}.pid"
        self.log_path = self.data_root.parent / f"deployer-engine-{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return "unix://" + str(self.socket)

    def ready(self) -> bool:
        proc = subprocess.run(["docker", "-H", self.url, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, check=False, timeout=30)
        return proc.returncode == 0

    def start(self, timeout: float = 60.0) -> Engine:
        if shutil.which("dockerd") is None:
            raise EngineError("dockerd is not installed")
        self.data_root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--pidfile", str(self.pid_file), "-H", self.url, "--bridge=none", "--iptables=false",
                 "--ip6tables=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineError(f"dockerd exited {self._proc.returncode}; see {self.log_path}")
            if self.ready():
                return self
            time.sleep(0.2)
        raise EngineError(f"dockerd did not answer within {timeout}s; see {self.log_path}")

    def _end(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self._end()
        self.start()

    def stop(self) -> None:
        self._end()
        for path in (self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.socket, self.pid_file, self.log_path):
            path.unlink(missing_ok=True)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
