"""The awslogs driver's part in the playground: app container logs → CloudWatch Logs.

On EC2 the agent runs app containers with Docker's awslogs driver (`log_driver: awslogs`): the
Docker daemon ships each line to the log group `/deployer/<app>`, stream
`<instance id>/<container>`, with the daemon's own AWS credentials. Here the Docker daemon has no
credentials and no route to the moto server, so the containers keep the default json-file driver
and this forwarder does the shipping: every `interval` seconds it reads the new lines of each
app container of the cloud's running hosts (`docker logs --timestamps`, containers found by the
agent's `deployer.host` / `deployer.app` labels) and puts them in the same group and stream
(`logs:PutLogEvents`), so `deployer logs APP` reads them as it does in AWS. Containers removed
between two ticks (a release that failed its health check) lose their last lines; the agent's
summary carries them (`log_tail`). Development tooling only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import threading
from collections.abc import Callable
from typing import Any

FORMAT = '{{.Names}}\t{{.Label "deployer.host"}}\t{{.Label "deployer.app"}}'


def parse_line(line: str) -> tuple[int, str] | None:
    """(epoch milliseconds, message) of one `docker logs --timestamps` line."""
    stamp, _, message = line.partition(" ")
    try:
        when = dt.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return None
    return int(when.timestamp() * 1000), message


class AppLogForwarder:
    def __init__(self, logs: Any, hosts: Callable[[], list[str]], interval: float = 2.0) -> None:
        self.logs = logs
        self.hosts = hosts
        self.interval = interval
        self._since: dict[str, str] = {}  # container -> last timestamp shipped (docker's text)
        self._streams: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shipped = 0

    def start(self) -> AppLogForwarder:
        self._thread = threading.Thread(target=self._run, name="app-logs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a tick that fails is retried by the next one
                self.tick()

    def tick(self) -> None:
        live = set(self.hosts())
        out = subprocess.run(
            ["docker", "ps", "--filter", "label=deployer.app", "--format", FORMAT],
            capture_output=True, text=True, check=False,
        ).stdout
        for row in out.splitlines():
            parts = row.split("\t")
            if len(parts) == 3 and parts[1] in live:
                self._ship(*parts)

    def _ship(self, container: str, instance_id: str, app: str) -> None:
        args = ["docker", "logs", "--timestamps"]
        if container in self._since:
            args += ["--since", self._since[container]]
        proc = subprocess.run([*args, container], capture_output=True, text=True, check=False)
        lines = (proc.stdout + proc.stderr).splitlines()
        last = self._since.get(container)
        events = []
        for line in sorted(lines):
            stamp = line.split(" ", 1)[0]
            parsed = parse_line(line)
            if parsed is None or (last is not None and stamp <= last):
                continue
            events.append({"timestamp": parsed[0], "message": parsed[1]})
            self._since[container] = stamp
        if not events:
            return
        group, stream = f"/deployer/{app}", f"{instance_id}/{container}"
        if (group, stream) not in self._streams:
            with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                self.logs.create_log_group(logGroupName=group)
            with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self._streams.add((group, stream))
        self.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
        self.shipped += len(events)
