"""A host sandbox: one simulated EC2 host (own nginx, ports, nft table, state dir) on this machine.

Several sandboxes share the one Docker engine; the host id prefixes every container name and
labels it (``deployer.host=<host_id>``), so they never clash.

Public API (stable; the local cloud and the host tests build on it):

- ``free_port() -> int``: a free 127.0.0.1 TCP port outside the ephemeral range.
- ``HostSandbox(host_id, root_dir, listen_port=None, *, network_mode="host", **settings)``:
  allocates the listen, stable, blue and green ports, writes ``<root_dir>/host.json`` (the agent's
  host settings; ``settings`` override any key, e.g. ``drain_seconds=1.0``, ``lock_timeout=5``)
  and an nginx main config under ``<root_dir>/nginx``. Use as a context manager or call
  ``start()`` (starts its nginx) and ``teardown()``. ``supervise_proxy=True``: nginx runs under
  a systemd stand-in (``unitd.py``) that obeys the proxy drop-in the agent installs, and the
  agent's ``systemctl`` is that stand-in's; without it nginx is started once and never restarted.
- ``config`` (dict) / ``config_path``: the host.json written; ``url``: ``http://127.0.0.1:<listen>``.
- ``run_agent(mode, args, timeout=180.0) -> (exit_code, summary_dict, stderr)``: run
  ``host/agent.py <mode> <args>`` with ``DEPLOYER_HOST_CONFIG`` pointing at this sandbox.
  ``summary_dict`` is the JSON of the last stdout line (``{}`` if there is none).
- ``start_agent(mode, args) -> Popen`` and ``finish_agent(proc, timeout) -> (code, summary, stderr)``:
  the same, split, for concurrent invocations.
- ``swap_args(app, image, release, **flags) -> list[str]``: the agent flags for a swap/boot
  (keyword names are the flag names with ``_``, e.g. ``health_timeout=10``, ``retain=2``).
- ``get(path="/", timeout=2.0) -> (status, body)``: one request through this host's nginx.
- ``state(app) -> dict | None``: the agent's state file; ``containers() -> list[str]``: names
  of this host's running containers; ``nginx_pid() -> int | None``.
- ``start_meter(app, env=None) -> Popen`` / ``stop_meter(app) -> exit code``: run (and SIGTERM)
  ``agent.py meter --app APP``, the app's proxy metrics (``meter_interval`` 1 s here; the access
  log under ``<root_dir>/access-logs``); ``env`` adds the host's AWS endpoint and credentials.
  ``meter_log(app)``: what it logged.
- ``teardown(remove_images=False)``: remove this host's containers, nft table and nginx (and the
  images its state files mention, when asked). Safe to call twice.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

AGENT_PATH = Path(__file__).resolve().parents[2] / "host" / "agent.py"
UNITD_PATH = Path(__file__).resolve().parent / "unitd.py"


def free_port() -> int:
    """A free loopback port below the ephemeral range, so client source ports never collide."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-32000")


class HostSandbox:
    """One simulated host; see the module docstring."""

    def __init__(self, host_id: str, root_dir: str | Path, listen_port: int | None = None, *,
                 network_mode: str = "host", agent_path: str | Path | None = None,
                 python: str | None = None, supervise_proxy: bool = False, **settings: Any) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", host_id):
            raise ValueError(f"host_id {host_id!r} must match [a-z][a-z0-9-]{{0,30}}")
        self.host_id = host_id
        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.agent_path = Path(agent_path) if agent_path else AGENT_PATH
        self.python = python or sys.executable
        self.nginx_prefix = self.root / "nginx"
        self.listen_port = listen_port or free_port()
        self.config: dict[str, Any] = {
            "host_id": host_id,
            "state_dir": str(self.root / "state"),
            "nginx_command": ["nginx"],
            "nginx_prefix": str(self.nginx_prefix),
            "nginx_conf": str(self.nginx_prefix / "nginx.conf"),
            "nginx_error_log": str(self.nginx_prefix / "logs" / "error.log"),
            "nginx_conf_dir": str(self.nginx_prefix / "conf.d"),
            "listen_address": "127.0.0.1",
            "listen_port": self.listen_port,
            "stable_port": free_port(),
            "blue_port": free_port(),
            "green_port": free_port(),
            "network_mode": network_mode,
            "nft_table": "deployer_" + host_id.replace("-", "_"),
            "lock_timeout": 60,
            # Ends as soon as the old colour has no connection; the ceiling lets the slow (~1 s)
            # requests of the tests and benchmarks finish before the old colour stops.
            "drain_seconds": 3.0,
            "stop_timeout": 10,
            "pull_attempts": 4,
            "pull_backoff": 0.2,
            "pull_backoff_max": 1.0,
            "health_successes": 3,
            "health_interval": 0.1,
            # busybox answers in milliseconds; a request stuck this long is retried elsewhere.
            "upstream_read_timeout": 10,
            "systemd_unit_dir": None,  # a sandbox is no systemd host
            "nginx_pid_file": str(self.nginx_prefix / "nginx.pid"),
            "access_log_dir": str(self.root / "access-logs"),
            "meter_interval": 1,
        }
        self.supervised = supervise_proxy
        self._meters: dict[str, subprocess.Popen[bytes]] = {}
        self._unitd: subprocess.Popen[bytes] | None = None
        if supervise_proxy:
            # systemd stand-in (localcloud/hosts/unitd.py): keeps nginx up as the agent's drop-in says.
            unit_dir = self.root / "systemd"
            systemctl = [self.python, str(UNITD_PATH), "ctl", "--dir", str(unit_dir)]
            self.config.update(systemd_unit_dir=str(unit_dir), systemctl_command=systemctl)
        self.config.update(settings)
        self.config_path = self.root / "host.json"
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        self._write_nginx_main()

    # --- nginx ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def _nginx_base(self) -> list[str]:
        return ["nginx", "-p", str(self.nginx_prefix), "-c", self.config["nginx_conf"],
                "-e", self.config["nginx_error_log"]]

    def _write_nginx_main(self) -> None:
        prefix = self.nginx_prefix
        for sub in ("conf.d", "logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        temp = "".join(f"    {name}_temp_path {prefix}/tmp/{name};\n"
                       for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (prefix / "nginx.conf").write_text(
            "user root;\n"
            "worker_processes 1;\n"
            f"error_log {prefix}/logs/error.log warn;\n"
            f"pid {prefix}/nginx.pid;\n"
            "events {\n    worker_connections 4096;\n}\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp}"
            f"    include {prefix}/conf.d/*.conf;\n"
            "}\n"
        )

    def nginx_pid(self) -> int | None:
        try:
            pid = int((self.nginx_prefix / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def start(self) -> HostSandbox:
        if self.supervised:
            if self._unitd is None:
                unit_dir = self.root / "systemd"
                self._unitd = subprocess.Popen(
                    [self.python, str(UNITD_PATH), "run", "--dir", str(unit_dir), "--unit",
                     str(self.config.get("proxy_unit") or "nginx.service"), "--pid-file",
                     str(self.nginx_prefix / "nginx.pid"), "--", *self._nginx_base()],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
                # Started once the supervisor has seen the master (it logs it), not only when
                # the pid file appears: a master killed before that would never count as running.
                log = unit_dir / "unitd.log"
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (
                        log.exists() and "started" in log.read_text() and self.nginx_pid() is not None):
                    time.sleep(0.02)
            return self
        if self.nginx_pid() is None:
            subprocess.run(self._nginx_base(), check=True, capture_output=True)
        return self

    # --- agent ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(os.environ, DEPLOYER_HOST_CONFIG=str(self.config_path))

    def start_agent(self, mode: str, args: list[str] | tuple[str, ...] = (), *,
                    new_session: bool = False) -> subprocess.Popen[str]:
        """``new_session``: the agent leads its own process group (as under SSM, which kills
        the whole group when a command times out)."""
        return subprocess.Popen([self.python, str(self.agent_path), mode, *args], env=self._env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=new_session)

    def start_meter(self, app: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``agent.py meter --app APP`` (what the boot's systemd unit runs on a real host)
        until ``stop_meter``/``teardown``; ``env`` adds the host's AWS endpoint and credentials.
        Its log goes to ``<root>/meter-<app>.log``. A meter already running is kept."""
        running = self._meters.get(app)
        if running is not None and running.poll() is None:
            return running
        with (self.root / f"meter-{app}.log").open("ab") as log:
            proc = subprocess.Popen([self.python, str(self.agent_path), "meter", f"--app={app}"],
                                    env={**self._env(), **(env or {})}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self._meters[app] = proc
        return proc

    def stop_meter(self, app: str, timeout: float = 15.0) -> int | None:
        """SIGTERM the app's meter (it flushes once more) and wait; its exit code, None if none ran."""
        proc = self._meters.pop(app, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def meter_log(self, app: str) -> str:
        try:
            return (self.root / f"meter-{app}.log").read_text(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def finish_agent(proc: subprocess.Popen[str], timeout: float = 180.0) -> tuple[int, dict[str, Any], str]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.strip()]
        summary: dict[str, Any] = {}
        if lines:
            try:
                summary = json.loads(lines[-1])
            except ValueError:
                summary = {}
        if len(lines) > 1:
            summary["_extra_stdout_lines"] = lines[:-1]
        return proc.returncode, summary, err

    def run_agent(self, mode: str, args: list[str] | tuple[str, ...] = (),
                  timeout: float = 180.0) -> tuple[int, dict[str, Any], str]:
        return self.finish_agent(self.start_agent(mode, args), timeout)

    @staticmethod
    def swap_args(app: str, image: str, release: int | str, **flags: Any) -> list[str]:
        values: dict[str, Any] = {"port": 8080, "health_path": "/health", "health_timeout": 20,
                                  "log_driver": "json-file", "retain": 3, "registry_login": "none"}
        values.update(flags)
        args = [f"--app={app}", f"--image={image}", f"--release={release}"]
        for key, value in values.items():
            if value is None:
                continue
            args.append(f"--{key.replace('_', '-')}={value}")
        return args

    # --- inspection ----------------------------------------------------------------------------

    def get(self, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def state(self, app: str) -> dict[str, Any] | None:
        path = Path(self.config["state_dir"]) / app / "state.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def containers(self, all_states: bool = False) -> list[str]:
        cmd = ["docker", "ps", "--filter", f"label=deployer.host={self.host_id}", "--format", "{{.Names}}"]
        if all_states:
            cmd.insert(2, "-a")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        return sorted(line for line in out.splitlines() if line)

    # --- teardown ------------------------------------------------------------------------------

    def teardown(self, remove_images: bool = False) -> None:
        for app in list(self._meters):
            self.stop_meter(app)
        names = self.containers(all_states=True)
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)
        subprocess.run(["nft", "delete", "table", "ip", self.config["nft_table"]],
                       capture_output=True, check=False)
        if self._unitd is not None:
            self._unitd.terminate()
            try:
                self._unitd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._unitd.kill()
                self._unitd.wait()
            self._unitd = None
        pid = self.nginx_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.nginx_pid() is not None:
                time.sleep(0.05)
        if remove_images:
            state_dir = Path(self.config["state_dir"])
            for state_file in state_dir.glob("*/state.json"):
                try:
                    history = json.loads(state_file.read_text()).get("retained", [])
                except (OSError, ValueError):
                    continue
                refs = {entry.get("image") for entry in history if entry.get("image")}
                for ref in refs:
                    subprocess.run(["docker", "rmi", ref], capture_output=True, check=False)

    def remove_files(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HostSandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()
