"""A real Docker registry on loopback, with a front that can answer 5xx on demand.

Public API (stable; the local cloud and the host tests build on it):

- ``Registry(root_dir, port=None)``: ``/usr/bin/docker-registry serve`` with its own storage in
  ``root_dir``, bound to a private 127.0.0.1 port, behind a small stdlib HTTP front bound to
  ``127.0.0.1:port`` (a free port when ``None``). Use it as a context manager or call
  ``start()`` / ``stop()``; ``stop()`` closes both, so clients get "connection refused", and a
  later ``start()`` serves the same stored images again.
- ``address``: ``"127.0.0.1:<port>"`` of the front; pull through it (image references use it).
- ``push_address``: the registry itself, bypassing the front; push through it so that 5xx modes
  only affect pulls. A manifest digest is the same through either address.
- ``fail_next(n, status=503)``: the next ``n`` requests through the front get ``status``.
- ``fail_always(status=503)`` / ``heal()``: every request fails until healed.
- ``requests_seen`` / ``failures_served``: counters of requests through the front.
- ``notify_url``: when given, the registry posts its notifications (one envelope of events per
  push or pull, docker distribution's webhook format) to that URL; the playground turns a
  manifest push into ECR's push event this way (``localcloud.aws.push_events``).
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from localcloud.hosts.sandbox import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}


class _FrontState:
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.lock = threading.Lock()
        self.fail_remaining = 0
        self.fail_forever = False
        self.fail_status = 503
        self.requests_seen = 0
        self.failures_served = 0

    def should_fail(self) -> int | None:
        with self.lock:
            self.requests_seen += 1
            if self.fail_forever or self.fail_remaining > 0:
                if self.fail_remaining > 0:
                    self.fail_remaining -= 1
                self.failures_served += 1
                return self.fail_status
            return None


def _handler_for(state: _FrontState) -> type[BaseHTTPRequestHandler]:
    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _relay(self) -> None:
            status = state.should_fail()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if status is not None:
                payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected failure"}]}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection("127.0.0.1", state.backend_port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError:
                self.send_error(502)
                return
            finally:
                conn.close()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

    return Front


class Registry:
    """docker-registry on loopback with a failure-injecting front."""

    def __init__(self, root_dir: str | Path, port: int | None = None, notify_url: str | None = None) -> None:
        self.root_dir = Path(root_dir)
        self.notify_url = notify_url
        self.port = port or free_port()
        self.backend_port = free_port()
        self._state = _FrontState(self.backend_port)
        self._proc: subprocess.Popen[bytes] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def push_address(self) -> str:
        return f"127.0.0.1:{self.backend_port}"

    @property
    def requests_seen(self) -> int:
        return self._state.requests_seen

    @property
    def failures_served(self) -> int:
        return self._state.failures_served

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._state.lock:
            self._state.fail_remaining = n
            self._state.fail_status = status

    def fail_always(self, status: int = 503) -> None:
        with self._state.lock:
            self._state.fail_forever = True
            self._state.fail_status = status

    def heal(self) -> None:
        with self._state.lock:
            self._state.fail_forever = False
            self._state.fail_remaining = 0

    def start(self) -> Registry:
        storage = self.root_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.root_dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.backend_port}\n"
            + (
                "notifications:\n  endpoints:\n    - name: localcloud\n"
                f"      url: {self.notify_url}\n      timeout: 5s\n      threshold: 3\n      backoff: 1s\n"
                if self.notify_url
                else ""
            )
        )
        log = (self.root_dir / "registry.log").open("ab")
        self._proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
        self._wait_backend()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self._state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _wait_backend(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited; see {self.root_dir / 'registry.log'}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=1)
                conn.request("GET", "/v2/")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.push_address}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
