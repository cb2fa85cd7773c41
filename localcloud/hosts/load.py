"""A bounded, fixed-rate HTTP load generator with keep-alive clients (stdlib asyncio).

Public API (stable):

- ``LoadGenerator(host, port, *, rate=1000.0, connections=20, path="/", max_seconds=120.0,
  timeout=30.0, post_ratio=0.0, post_path="/echo", post_bytes=512, slow_path=None,
  slow_rate=0.0)``: ``connections`` persistent HTTP/1.1 clients sharing a fixed total ``rate``
  (requests/s), run on a background thread. Bounded: it stops by itself after ``max_seconds``.
  A ``post_ratio`` share of those requests are POSTs to ``post_path`` with a unique
  ``post_bytes`` body that must come back verbatim (anything else fails as ``echo_mismatch``).
  With ``slow_path``, separate keep-alive clients add ``slow_rate`` GETs/s to it (slow answers,
  e.g. ``/cgi-bin/slow?sleep=1``), outside ``rate``.
  Use it as a context manager, or ``start()`` then ``stop() -> LoadResult``.
- ``mark() -> float``: the current time on the generator's clock, for slicing results.
- ``LoadResult``: ``sent``, ``ok``, ``failed``, ``rate_rps`` (achieved), ``bodies``
  (body -> count, GETs only), ``errors`` (kind -> count), ``samples`` (``(send_time,
  body_or_None)`` per GET, in send order), ``failures`` (``(send_time, kind)``), ``latency(q)``
  (seconds at quantile ``q`` of successful GETs to ``path`` and POSTs), ``bodies_since(t)`` and
  ``bodies_between(start, end)`` (the set of bodies of GETs sent in that window), ``records``
  (one ``Record(kind, sent_at, ended_at, error)`` per request, kind ``get``, ``post`` or
  ``slow``), ``sent_by_kind`` / ``failed_by_kind`` (kind -> count) and ``slow_latencies``.
- Per release (GETs only; the release is the ``<app> release <n>`` line of the body, which the
  test images send with their errors too): ``by_release`` (release -> responses, any status),
  ``errors_by_release`` (release -> 5xx responses), ``first_at`` / ``last_at`` (release -> when
  its first / last response ended), ``first_error_at`` (release -> when its first 5xx ended),
  ``answers`` (``(ended_at, release_or_None, status)`` per GET answered, in end order) and
  ``first_answer_after(t, release)`` (when the first response of ``release`` that ended after
  ``t`` ended, or None). A 5xx that names a release is still counted in ``failed``: callers that
  expect one release's errors subtract ``errors_by_release[that release]``.
- ``release_of(body) -> str | None``: the release line a body carries.

A request fails when the connection breaks, is closed or times out before a full response
(nothing is resent: a proxy that closes a keep-alive connection under a request is an outage),
or when the status is not 2xx. A response with ``Connection: close`` ends that connection
cleanly: the client reconnects for its next request. Bodies may be sized by Content-Length,
chunked, or delimited by the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple

_RELEASE_LINE = re.compile(r"^(\S+ release \d+)\s*$")


def release_of(body: bytes | str | None) -> str | None:
    """The ``<app> release <n>`` line a body carries (the test images' answers), or None."""
    if body is None:
        return None
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    match = _RELEASE_LINE.match(text.split("\n", 1)[0])
    return match.group(1) if match else None


class Record(NamedTuple):
    """One request: what it was, when it was sent and ended, and why it failed (None: ok)."""

    kind: str
    sent_at: float
    ended_at: float
    error: str | None


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
    slow_latencies: list[float] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    sent_by_kind: Counter[str] = field(default_factory=Counter)
    failed_by_kind: Counter[str] = field(default_factory=Counter)
    by_release: Counter[str] = field(default_factory=Counter)
    errors_by_release: Counter[str] = field(default_factory=Counter)
    first_at: dict[str, float] = field(default_factory=dict)
    last_at: dict[str, float] = field(default_factory=dict)
    first_error_at: dict[str, float] = field(default_factory=dict)
    answers: list[tuple[float, str | None, int]] = field(default_factory=list)

    def first_answer_after(self, t: float, release: str) -> float | None:
        """When the first response of ``release`` that ended after ``t`` ended (None: none)."""
        return next((ended for ended, rel, _ in self.answers if ended > t and rel == release), None)

    def record_answer(self, ended_at: float, release: str | None, status: int) -> None:
        """Record one answered GET under the release that answered it."""
        self.answers.append((ended_at, release, status))
        if release is None:
            return
        self.by_release[release] += 1
        self.first_at.setdefault(release, ended_at)
        self.last_at[release] = ended_at
        if 500 <= status < 600:
            self.errors_by_release[release] += 1
            self.first_error_at.setdefault(release, ended_at)

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


class Response(NamedTuple):
    status: int
    body: bytes
    keep_alive: bool


class LoadGenerator:
    """Fixed-rate keep-alive load on one HTTP endpoint; see the module docstring."""

    def __init__(self, host: str, port: int, *, rate: float = 1000.0, connections: int = 20,
                 path: str = "/", max_seconds: float = 120.0, timeout: float = 30.0,
                 post_ratio: float = 0.0, post_path: str = "/echo", post_bytes: int = 512,
                 slow_path: str | None = None, slow_rate: float = 0.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.rate, self.connections = rate, connections
        self.max_seconds, self.timeout = max_seconds, timeout
        self.post_ratio, self.post_path, self.post_bytes = post_ratio, post_path, max(post_bytes, 32)
        self.slow_path, self.slow_rate = slow_path, slow_rate
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._get = self._head("GET", path)
        self._slow = self._head("GET", slow_path or path)

    def _head(self, method: str, path: str, length: int | None = None) -> bytes:
        extra = f"Content-Length: {length}\r\nContent-Type: application/octet-stream\r\n" if length else ""
        return (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"User-Agent: deployer-load\r\n{extra}\r\n").encode()

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
        workers = [asyncio.create_task(self._worker(i, started + i * interval / self.connections,
                                                    interval, deadline, slow=False))
                   for i in range(self.connections)]
        if self.slow_path and self.slow_rate > 0:
            # Enough clients that each has time to finish a slow answer before its next turn.
            count = max(1, math.ceil(self.slow_rate * 2))
            slow_interval = count / self.slow_rate
            workers += [asyncio.create_task(self._worker(1000 + i, started + i * slow_interval / count,
                                                         slow_interval, deadline, slow=True))
                        for i in range(count)]
        await asyncio.gather(*workers)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)

    def _next_request(self, worker: int, n: int, slow: bool) -> tuple[str, bytes, bytes | None]:
        """(kind, bytes to send, expected echo) of request ``n`` of ``worker``."""
        if slow:
            return "slow", self._slow, None
        share = self.post_ratio
        # Spread POSTs evenly: request n is a POST when the running share crosses an integer.
        offset = worker / max(self.connections, 1)
        if share > 0 and math.floor((n + 1) * share + offset) > math.floor(n * share + offset):
            tag = f"{worker}:{n}:{time.monotonic_ns()}:".encode()
            body = tag + b"x" * (self.post_bytes - len(tag))
            return "post", self._head("POST", self.post_path, len(body)) + body, body
        return "get", self._get, None

    async def _worker(self, worker: int, first: float, interval: float, deadline: float,
                      *, slow: bool) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        next_at = first
        n = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if next_at > now:
                await asyncio.sleep(next_at - now)
                if self._stop.is_set():
                    break
            next_at += interval
            kind, request, echo = self._next_request(worker, n, slow)
            n += 1
            sent_at = time.monotonic()
            self.result.sent += 1
            self.result.sent_by_kind[kind] += 1
            error: str | None = None
            text: str | None = None
            answered: Response | None = None
            try:
                if conn is None:
                    conn = await self._connect()
                resp = await asyncio.wait_for(self._exchange(*conn, request), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                await self._close(conn)
                conn = None
                error = type(exc).__name__
            else:
                answered = resp
                if not resp.keep_alive:
                    await self._close(conn)
                    conn = None
                if not 200 <= resp.status < 300:
                    error = f"http_{resp.status}"
                elif echo is not None and resp.body != echo:
                    error = "echo_mismatch"
                else:
                    text = resp.body.decode(errors="replace")
            ended_at = time.monotonic()
            self.result.records.append(Record(kind, sent_at, ended_at, error))
            if kind != "post" and answered is not None:
                self.result.record_answer(ended_at, release_of(answered.body), answered.status)
            if error is None:
                self.result.ok += 1
                (self.result.slow_latencies if slow else self.result.latencies).append(ended_at - sent_at)
            else:
                self.result.failed += 1
                self.result.errors[error] += 1
                self.result.failed_by_kind[kind] += 1
                self.result.failures.append((sent_at, error))
            if kind != "post":
                self.result.samples.append((sent_at, text))
                if text is not None:
                    self.result.bodies[text] += 1
        await self._close(conn)

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> Response:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers are sent here
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return Response(status, b"".join(parts), keep)
        if "content-length" in headers:
            length = int(headers["content-length"])
            return Response(status, await reader.readexactly(length) if length else b"", keep)
        if keep:  # no length and the connection stays: an empty body
            return Response(status, b"", keep)
        return Response(status, await reader.read(), False)

    @staticmethod
    async def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is None:
            return
        writer = conn[1]
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
