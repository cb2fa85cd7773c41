"""A stand-in for systemd running one forking service (nginx.service) on a host sandbox.

A sandbox has no systemd, yet the agent relies on it to keep the proxy up: on a real host,
`boot` installs a drop-in for the proxy's unit (Restart=, RestartSec=, KillMode=, KillSignal=,
TimeoutStopSec=). This process plays systemd for that one unit, reading the same drop-in
files, so a proxy killed in a sandbox comes back exactly when and how the drop-in says, and not
at all without one.

- ``unitd.py run --dir D --unit U --pid-file P -- NGINX_ARGV...``: supervise. It is a child
  subreaper, so the daemonised master and, when the master dies, its orphaned workers become
  its children (as they stay in a unit's cgroup). When the main process is gone, the rest of
  the unit gets KillSignal (KillMode=control-group), SIGKILL after TimeoutStopSec; then, if
  Restart= is always/on-failure/on-abnormal, it waits RestartSec and starts the unit again
  (``nginx -t`` first, as ExecStartPre). SIGTERM stops the unit and the supervisor.
- ``unitd.py ctl --dir D VERB [UNIT]``: the `systemctl` the agent calls. ``start`` (and
  ``restart``) ask the supervisor to start the unit and wait for it; ``daemon-reload``,
  ``enable``, ``reset-failed`` succeed (drop-ins are read at every decision). The agent's own
  units (``deployer-*``: boot, meter) are accepted and not run: the sandbox runs the meter itself.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
POLL = 0.05


def directives(unit_dir: Path, unit: str) -> dict[str, str]:
    """The [Unit] and [Service] settings of ``unit``'s drop-ins (later files win)."""
    found: dict[str, str] = {}
    for path in sorted((unit_dir / (unit + ".d")).glob("*.conf")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                found[key.strip()] = value.strip()
    return found


def seconds(value: str, default: float) -> float:
    text = value.strip()
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text.rstrip("s"))
    except ValueError:
        return default


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def children() -> list[int]:
    """Live processes whose parent is this supervisor (the unit's processes)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


class Supervisor:
    def __init__(self, unit_dir: Path, unit: str, pid_file: Path, argv: list[str]) -> None:
        self.unit_dir, self.unit, self.pid_file, self.argv = unit_dir, unit, pid_file, argv
        self.stopping = False
        self.log = unit_dir / "unitd.log"

    def note(self, text: str) -> None:
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f} {text}\n")

    def main_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def start(self) -> bool:
        check = subprocess.run([*self.argv, "-t", "-q"], capture_output=True, check=False)
        if check.returncode != 0:
            self.note("start refused: config test failed")
            return False
        proc = subprocess.run(self.argv, capture_output=True, check=False)
        # Type=forking: started once the daemon wrote its pid file.
        deadline = time.monotonic() + 10
        while self.main_pid() is None and time.monotonic() < deadline:
            reap()
            time.sleep(0.01)
        self.note(f"started (exit {proc.returncode}) main pid {self.main_pid()}")
        return self.main_pid() is not None

    def stop_rest(self, settings: dict[str, str]) -> None:
        """What systemd does once the main process is gone: signal the rest of the unit."""
        if settings.get("KillMode", "control-group") not in ("control-group", "mixed"):
            return
        name = settings.get("KillSignal", "SIGTERM")
        sig = getattr(signal, name if name.startswith("SIG") else "SIG" + name, signal.SIGTERM)
        first = sig if settings.get("KillMode", "control-group") == "control-group" else None
        deadline = time.monotonic() + seconds(settings.get("TimeoutStopSec", "90"), 90.0)
        if first is not None:
            for pid in children():
                with contextlib.suppress(OSError):
                    os.kill(pid, first)
        while children() and time.monotonic() < deadline:
            reap()
            time.sleep(POLL)
        for pid in children():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap()

    def run(self) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        request = self.unit_dir / "start-request"
        if self.main_pid() is None:
            self.start()
        running = self.main_pid() is not None
        while not self.stopping:
            reap()
            pid = self.main_pid()
            if pid is None and running:
                running = False
                settings = directives(self.unit_dir, self.unit)
                self.note("main process gone")
                self.stop_rest(settings)
                if settings.get("Restart", "no") in ("always", "on-failure", "on-abnormal"):
                    time.sleep(seconds(settings.get("RestartSec", "0.1"), 0.1))
                    if not self.stopping:
                        running = self.start()
                else:
                    self.note("not restarted: no Restart= in a drop-in")
            elif pid is not None:
                running = True
            if request.exists():
                if self.main_pid() is None:
                    running = self.start()
                with contextlib.suppress(OSError):
                    request.unlink()
            time.sleep(POLL)
        pid = self.main_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGQUIT)
        self.stop_rest({"KillSignal": "SIGTERM", "TimeoutStopSec": "5"})
        return 0


def ctl(unit_dir: Path, verb: str, units: list[str] | None = None) -> int:
    if any(u.startswith("deployer-") for u in units or []):
        return 0  # the agent's own units (boot, meter): the sandbox runs those itself
    if verb in ("start", "restart"):
        request = unit_dir / "start-request"
        request.write_text("start\n")
        deadline = time.monotonic() + 15
        while request.exists() and time.monotonic() < deadline:
            time.sleep(POLL)
        return 0 if not request.exists() else 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="unitd.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("--dir", required=True)
    run.add_argument("--unit", required=True)
    run.add_argument("--pid-file", required=True)
    run.add_argument("argv", nargs="+")
    control = sub.add_parser("ctl")
    control.add_argument("--dir", required=True)
    control.add_argument("verb")
    control.add_argument("units", nargs="*")
    args = parser.parse_args(argv)
    unit_dir = Path(args.dir)
    unit_dir.mkdir(parents=True, exist_ok=True)
    if args.mode == "ctl":
        return ctl(unit_dir, args.verb, args.units)
    return Supervisor(unit_dir, args.unit, Path(args.pid_file), list(args.argv)).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
