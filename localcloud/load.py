"""A bounded, fixed-rate HTTP load generator with keep-alive clients (stdlib asyncio).

Public API (stable):

- ``LoadGenerator(host, port, *, rate=1000.0, connections=20, path="/", max_seconds=120.0,
  timeout=30.0)``: ``connections`` persistent HTTP/1.1 clients sharing a fixed total ``rate``
  (requests/s), run on a background thread. Bounded: it stops by itself after ``max_seconds``.
  Use it as a context manager, or ``start()`` then ``stop() -> LoadResult``.
- ``mark() -> float``: the current time on the generator's clock, for slicing results.
- ``LoadResult``: ``sent``, ``ok``, ``failed``, ``rate_rps`` (achieved), ``bodies``
  (body -> count), ``errors`` (kind -> count), ``samples`` (``(send_time, body_or_None)`` per
  request, in send order), ``failures`` (``(send_time, kind)``), ``latency(q)`` (seconds at
  quantile ``q`` of successful requests), ``bodies_since(t)`` (the set of bodies of requests
  sent at or after ``t``) and ``bodies_between(start, end)``.

A request fails when the connection breaks, is closed or times out before a full response
(nothing is resent: a proxy that closes a keep-alive connection under a request is an outage),
or when the status is not 2xx. A response with ``Connection: close`` ends that connection
cleanly: the client reconnects for its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class LoadResult:
    """What one run of the generator saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    duration: float = 0.0
    bodies: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[float, str | None]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rate_rps(self) -> float:
        return self.sent / self.duration if self.duration else 0.0

    def latency(self, quantile: float) -> float:
        """Latency (seconds) of successful requests at ``quantile`` (0..1), 0.0 when none."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def bodies_since(self, t: float) -> set[str | None]:
        return {body for sent_at, body in self.samples if sent_at >= t}

    def bodies_between(self, start: float, end: float) -> set[str | None]:
        return {body for sent_at, body in self.samples if start <= sent_at < end}


class LoadGenerator:
    """Fixed-rate keep-alive load on one HTTP endpoint; see the module docstring."""

    def __init__(self, host: str, port: int, *, rate: float = 1000.0, connections: int = 20,
                 path: str = "/", max_seconds: float = 120.0, timeout: float = 30.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.rate, self.connections = rate, connections
        self.max_seconds, self.timeout = max_seconds, timeout
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "User-Agent: deployer-load\r\n\r\n").encode()

    def mark(self) -> float:
        return time.monotonic()

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        if not self._stop.is_set() and self._started:
            self.result.duration = time.monotonic() - self._started
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 10)
        return self.result

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------------

    def _run(self) -> None:
        self._started = time.monotonic()
        asyncio.run(self._main(self._started))
        if not self._stop.is_set():  # ended by max_seconds
            self.result.duration = time.monotonic() - self._started

    async def _main(self, started: float) -> None:
        deadline = started + self.max_seconds
        interval = self.connections / self.rate
        workers = [asyncio.create_task(self._worker(started + i * interval / self.connections,
                                                    interval, deadline))
                   for i in range(self.connections)]
        await asyncio.gather(*workers)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)

    async def _worker(self, first: float, interval: float, deadline: float) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        next_at = first
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
            sent_at = time.monotonic()
            self.result.sent += 1
            body: str | None = None
            try:
                if conn is None:
                    conn = await self._connect()
                status, text, keep = await asyncio.wait_for(self._exchange(*conn), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                await self._close(conn)
                conn = None
                self._fail(type(exc).__name__, sent_at)
            else:
                if not keep:
                    await self._close(conn)
                    conn = None
                if 200 <= status < 300:
                    body = text
                    self.result.ok += 1
                    self.result.latencies.append(time.monotonic() - sent_at)
                    self.result.bodies[text] += 1
                else:
                    self._fail(f"http_{status}", sent_at)
            self.result.samples.append((sent_at, body))
        await self._close(conn)

    def _fail(self, kind: str, sent_at: float) -> None:
        self.result.failed += 1
        self.result.errors[kind] += 1
        self.result.failures.append((sent_at, kind))

    async def _exchange(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> tuple[int, str, bool]:
        writer.write(self._request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        payload = await reader.readexactly(length) if length else b""
        keep = headers.get("connection", "").lower() != "close"
        return status, payload.decode(errors="replace"), keep

    @staticmethod
    async def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is None:
            return
        writer = conn[1]
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
