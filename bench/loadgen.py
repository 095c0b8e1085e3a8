"""A fast HTTP/1.1 keep-alive load generator on raw asyncio protocols.

Why not httpx or aiohttp: a client library spends tens of microseconds of Python per request,
which on a shared 2-core machine would take CPU from the server and become the bottleneck. Here a
request is pre-built bytes (or bytes from a cheap callable), written to a kept-alive connection;
the response is framed by its ``Content-Length`` (no body for 1xx/204/304) and only the status is
looked at, unless it is not an expected one.

Three ways to drive the server (``LoadSpec``):

- **closed loop** (``rate=None``): ``concurrency`` connections each send the next request as soon
  as the previous answer arrives. This measures the highest throughput at that concurrency; its
  latencies include queueing in the server (about concurrency / throughput).
- **open loop** (``rate=R``): requests are due at a fixed rate R whatever the server does, spread
  over ``concurrency`` connections. Latency is measured from when each request was *due*, so a
  server falling behind shows its full delay (no coordinated omission). Requests still waiting
  for a connection a second after the window count as unsent, with the wait so far as their
  latency. This answers "does it sustain R req/s with p95 under X ms".
- **fixed work** (``requests=N``, closed loop): send exactly N requests (e.g. a data load) and time
  the whole of it.

In the duration modes, requests sent during ``warmup`` seconds are not measured; throughput is the
number of answers received within the measurement window divided by its length, and latencies are
those of requests sent within it. Status codes and failures are counted over every request,
warm-up included.

Requests come from a ``RequestFactory``: ``make(seq) -> bytes``, called once per request with a
sequence number unique across connections and generator processes (``seq = process + k *
processes``), so factories can derive distinct entity ids from it. With ``processes > 1`` the
generator forks that many processes (connections and rate are split among them) and merges their
results; all timestamps are ``CLOCK_MONOTONIC`` (``time.monotonic_ns``), shared by all processes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import resource
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, TypeVar, cast

T = TypeVar("T")
RequestFactory = Callable[[int], bytes]
"""Builds the bytes of one whole HTTP/1.1 request from a sequence number unique to that request."""

WindowHook = Callable[[str], None]
"""Called with "start" and "end" at the edges of the measurement window (e.g. to sample server CPU)."""

NO_BODY_STATUSES = frozenset({204, 304})
MAX_FAILURE_SAMPLES = 10
REQUEST_SAMPLE_BYTES = 1500
RESPONSE_SAMPLE_BYTES = 4000
_NS = 1_000_000_000
OPEN_LOOP_DRAIN_S = 1.0
"""Open loop: seconds after the window during which requests already due may still be sent."""


class ProtocolError(Exception):
    """The server answered something this client cannot frame (e.g. no Content-Length)."""


class Response(NamedTuple):
    status: int
    head: bytes
    """Status line and headers, as received (without the blank line)."""
    body: bytes


def http_request(
    method: str,
    target: str,
    *,
    host: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive); ``target`` must already be URL-encoded."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class _Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._need = -1  # bytes of the whole response once its head is parsed, else -1
        self._body_start = 0
        self._status = 0
        self._head = b""
        self.closed = False
        self.keep_alive = True

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while buffer:
            if self._need < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end])
                try:
                    status = int(head[9:12])
                except ValueError:
                    self._fail(ProtocolError(f"not an HTTP/1.1 status line: {head[:80]!r}"))
                    return
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = lower.find(b"\r\n", at + 17)
                    length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
                elif status in NO_BODY_STATUSES or 100 <= status < 200:
                    length = 0
                else:
                    self._fail(ProtocolError(f"response without Content-Length: {head[:300]!r}"))
                    return
                if b"\r\nconnection: close" in lower:
                    self.keep_alive = False
                self._head, self._status = head, status
                self._body_start = end + 4
                self._need = end + 4 + length
            if len(buffer) < self._need:
                return
            body = bytes(buffer[self._body_start : self._need])
            del buffer[: self._need]
            self._need = -1
            waiter, self._waiter = self._waiter, None
            if waiter is None or waiter.done():
                self._fail(ProtocolError(f"unsolicited response: {self._head[:200]!r}"))
                return
            waiter.set_result(Response(self._status, self._head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # -- use ---------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self._transport is not None and not self.closed:
            self._transport.abort()
            self.closed = True

    def request(self, data: bytes) -> asyncio.Future[Response]:
        """Send one request; the future gets its response (or the connection's failure)."""
        waiter = self._waiter = self._loop.create_future()
        if self.closed or self._transport is None:
            waiter.set_exception(ConnectionResetError("the connection is closed"))
        else:
            self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
            self.closed = True


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Connection(loop), host, port)
    return protocol


async def fetch(host: str, port: int, data: bytes, timeout: float = 30.0) -> Response:
    """One request on a fresh connection (for set-up and probes, not for load)."""
    connection = await _connect(host, port)
    try:
        return await asyncio.wait_for(connection.request(data), timeout)
    finally:
        connection.close()


def fetch_sync(host: str, port: int, data: bytes, timeout: float = 30.0) -> Response:
    """``fetch`` from synchronous code."""
    return asyncio.run(fetch(host, port, data, timeout))


@dataclass
class LoadSpec:
    """What to send, how, and for how long."""

    name: str
    host: str
    port: int
    make_request: RequestFactory
    expected_status: frozenset[int]
    concurrency: int = 16
    """Connections (closed loop: requests in flight at once)."""
    duration: float = 10.0
    """Seconds measured after the warm-up (ignored with ``requests``)."""
    warmup: float = 2.0
    rate: float | None = None
    """Open loop: requests due per second (total over all processes)."""
    requests: int | None = None
    """Fixed work: send exactly this many requests, closed loop, no warm-up, and time them."""
    processes: int = 1
    """Generator processes (forked); connections, rate and fixed work are split among them."""
    units_per_request: int = 1
    """Items each request carries (e.g. entities per batch) for ``LoadResult.units_per_second``."""
    timeout: float = 60.0
    """Seconds after the end of the run to wait for answers still outstanding before giving up."""


@dataclass
class LoadResult:
    """What one run measured. Latencies are in nanoseconds; ``window_s`` is the measured time."""

    name: str
    mode: str
    concurrency: int
    processes: int
    rate: float | None
    units_per_request: int
    window_s: float = 0.0
    completed: int = 0
    """Answers received within the measurement window."""
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    """Latency of each request sent within the window (open loop: from when it was due)."""
    sent: int = 0
    """Every request sent, warm-up included."""
    status_counts: dict[int, int] = field(default_factory=dict)
    """Status codes of every answer, warm-up included."""
    unexpected: int = 0
    """Answers whose status is not an expected one, warm-up included."""
    connection_errors: int = 0
    """Requests that got no answer: connection closed or reset, unframeable response, timeout."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """The first few unexpected answers and connection errors, with request and response."""
    backlog: int = 0
    """Open loop: requests due in the window but never sent because no connection was free before
    the end of the window plus ``OPEN_LOOP_DRAIN_S``; their latencies count as the time waited
    until then (a lower bound)."""
    generator_cpu_s: float = 0.0
    """CPU seconds (user + system) of the generator process(es) within the window."""

    @property
    def throughput(self) -> float:
        """Answers per second within the window."""
        return self.completed / self.window_s if self.window_s > 0 else 0.0

    @property
    def units_per_second(self) -> float:
        return self.throughput * self.units_per_request

    @property
    def generator_cpu_percent(self) -> float:
        """Generator CPU as a percentage of one core."""
        return 100.0 * self.generator_cpu_s / self.window_s if self.window_s > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile of the measured latencies, in milliseconds (NaN without any)."""
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        rank = max(1, math.ceil(p / 100.0 * len(ordered)))
        return ordered[rank - 1] / 1e6

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest (no raw latencies)."""
        ordered = sorted(self.latencies_ns)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1] / 1e6, 3)

        return {
            "name": self.name,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "target_rate": self.rate,
            "window_s": round(self.window_s, 3),
            "completed": self.completed,
            "throughput_per_s": round(self.throughput, 1),
            "units_per_request": self.units_per_request,
            "units_per_s": round(self.units_per_second, 1),
            "latency_ms": {
                "mean": round(sum(ordered) / len(ordered) / 1e6, 3) if ordered else None,
                "p50": pct(50),
                "p95": pct(95),
                "p99": pct(99),
                "max": round(ordered[-1] / 1e6, 3) if ordered else None,
                "samples": len(ordered),
            },
            "sent": self.sent,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "unexpected_status": self.unexpected,
            "connection_errors": self.connection_errors,
            "backlog": self.backlog,
            "generator_cpu_percent": round(self.generator_cpu_percent, 1),
            "failures": self.failures,
        }

    def merge(self, other: LoadResult) -> None:
        """Fold another process's result of the same run into this one."""
        self.window_s = max(self.window_s, other.window_s)
        self.completed += other.completed
        self.latencies_ns.extend(other.latencies_ns)
        self.sent += other.sent
        for status, count in other.status_counts.items():
            self.status_counts[status] = self.status_counts.get(status, 0) + count
        self.unexpected += other.unexpected
        self.connection_errors += other.connection_errors
        room = MAX_FAILURE_SAMPLES - len(self.failures)
        self.failures.extend(other.failures[: max(0, room)])
        self.backlog += other.backlog
        self.generator_cpu_s += other.generator_cpu_s


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _clip(data: bytes, limit: int) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return text if len(data) <= limit else f"{text}… [{len(data) - limit} more bytes]"


class _Run:
    """The state of one run inside one generator process."""

    def __init__(self, spec: LoadSpec, index: int, processes: int, start_ns: int, hook: WindowHook | None):
        self.spec = spec
        self.hook = hook
        self.seq = itertools.count(index, processes)
        self.result = LoadResult(
            spec.name,
            "fixed" if spec.requests is not None else "open" if spec.rate is not None else "closed",
            spec.concurrency,
            processes,
            spec.rate,
            spec.units_per_request,
        )
        self.start_ns = start_ns
        self.window_start = start_ns + int(spec.warmup * _NS) if spec.requests is None else start_ns
        self.window_end = self.window_start + int(spec.duration * _NS) if spec.requests is None else 0
        self.drain_end = self.window_end + int(OPEN_LOOP_DRAIN_S * _NS)
        self.remaining = 0  # fixed work: requests still to send
        self.last_answer_ns = start_ns
        self._cpu_start = 0.0

    # -- recording ---------------------------------------------------------------------------
    def record(self, data: bytes, sent_ns: int, due_ns: int, response: Response) -> None:
        done_ns = time.monotonic_ns()
        result = self.result
        status = response.status
        result.status_counts[status] = result.status_counts.get(status, 0) + 1
        if status not in self.spec.expected_status:
            result.unexpected += 1
            self.sample_failure(data, f"HTTP {status}", response)
        if self.spec.requests is not None:
            result.completed += 1
            result.latencies_ns.append(done_ns - sent_ns)
            self.last_answer_ns = max(self.last_answer_ns, done_ns)
            return
        if self.window_start <= due_ns < self.window_end:
            result.latencies_ns.append(done_ns - due_ns)
        if self.window_start <= done_ns <= self.window_end:
            result.completed += 1

    def sample_failure(self, data: bytes, what: str, response: Response | None) -> None:
        if len(self.result.failures) >= MAX_FAILURE_SAMPLES:
            return
        self.result.failures.append(
            {
                "what": what,
                "request": _clip(data, REQUEST_SAMPLE_BYTES),
                "response": _clip(response.head + b"\r\n\r\n" + response.body, RESPONSE_SAMPLE_BYTES)
                if response is not None
                else None,
            }
        )

    # -- driving -----------------------------------------------------------------------------
    async def send(self, connection: _Connection, due_ns: int) -> _Connection:
        """Send one request and record it; returns the connection to use next (maybe a new one)."""
        data = self.spec.make_request(next(self.seq))
        self.result.sent += 1
        sent_ns = time.monotonic_ns()
        try:
            response = await connection.request(data)
        except (OSError, ProtocolError) as exc:
            self.result.connection_errors += 1
            self.sample_failure(data, f"{type(exc).__name__}: {exc}", None)
            return await _connect(self.spec.host, self.spec.port)
        self.record(data, sent_ns, due_ns if due_ns else sent_ns, response)
        if not connection.keep_alive:
            connection.close()
            return await _connect(self.spec.host, self.spec.port)
        return connection

    async def closed_worker(self, connection: _Connection) -> None:
        fixed = self.spec.requests is not None
        while True:
            if fixed:
                if self.remaining <= 0:
                    break
                self.remaining -= 1
            elif time.monotonic_ns() >= self.window_end:
                break
            connection = await self.send(connection, 0)
        connection.close()

    async def open_worker(self, connection: _Connection, queue: asyncio.Queue[int | None]) -> None:
        while True:
            due_ns = await queue.get()
            if due_ns is None:
                break
            if time.monotonic_ns() >= self.drain_end:
                self.unsent(due_ns)
                continue
            connection = await self.send(connection, due_ns)
        connection.close()

    def unsent(self, due_ns: int) -> None:
        """A request that was due but found no free connection before the end of the drain: it
        counts with the time it had waited by then, a lower bound of its latency."""
        if due_ns >= self.window_start:
            self.result.backlog += 1
            self.result.latencies_ns.append(time.monotonic_ns() - due_ns)

    async def producer(self, queue: asyncio.Queue[int | None], rate: float, workers: int) -> None:
        """Puts the due time of each request on the queue, at ``rate`` per second, until the end
        of the window; after the drain period, what is left is unsent."""
        interval = _NS / rate
        for k in itertools.count():
            due = self.start_ns + int(k * interval)
            if due >= self.window_end:
                break
            now = time.monotonic_ns()
            if due > now:
                await asyncio.sleep((due - now) / _NS)
            queue.put_nowait(due)
        await _sleep_until(self.drain_end)
        while not queue.empty():
            due_ns = queue.get_nowait()
            if due_ns is not None:
                self.unsent(due_ns)
        for _ in range(workers):
            queue.put_nowait(None)

    async def window_marks(self) -> None:
        """Calls the hook and samples generator CPU at the edges of the measurement window."""
        await _sleep_until(self.window_start)
        self.mark("start")
        if self.spec.requests is None:
            await _sleep_until(self.window_end)
            self.mark("end")

    def mark(self, edge: str) -> None:
        if edge == "start":
            self._cpu_start = _cpu_seconds()
        else:
            self.result.generator_cpu_s = _cpu_seconds() - self._cpu_start
        if self.hook is not None:
            self.hook(edge)

    async def run(self, connections: list[_Connection], requests: int | None) -> LoadResult:
        spec = self.spec
        await _sleep_until(self.start_ns)
        marks = asyncio.ensure_future(self.window_marks())
        if requests is not None:
            self.remaining = requests
            workers = [asyncio.ensure_future(self.closed_worker(c)) for c in connections]
        elif spec.rate is not None:
            queue: asyncio.Queue[int | None] = asyncio.Queue()
            share = spec.rate * len(connections) / max(1, spec.concurrency)
            workers = [asyncio.ensure_future(self.producer(queue, share, len(connections)))]
            workers += [asyncio.ensure_future(self.open_worker(c, queue)) for c in connections]
        else:
            workers = [asyncio.ensure_future(self.closed_worker(c)) for c in connections]
        deadline = (spec.warmup + spec.duration + spec.timeout) if requests is None else None
        done, pending = await asyncio.wait(workers, timeout=deadline)
        for task in pending:
            task.cancel()
            self.result.connection_errors += 1
            self.sample_failure(b"", f"no answer within {spec.timeout} s after the end of the run", None)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if requests is not None:
            self.window_end = self.last_answer_ns
            self.mark("end")
        await marks
        self.result.window_s = (self.window_end - self.window_start) / _NS
        return self.result


async def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / _NS
    if delay > 0:
        await asyncio.sleep(delay)


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


async def _run_process(
    spec: LoadSpec, index: int, processes: int, start_ns: int | None, hook: WindowHook | None
) -> LoadResult:
    connections_here = _split(spec.concurrency, processes, index)
    connections = await asyncio.gather(*(_connect(spec.host, spec.port) for _ in range(connections_here)))
    if start_ns is None:
        start_ns = time.monotonic_ns()
    run = _Run(spec, index, processes, start_ns, hook)
    requests = _split(spec.requests, processes, index) if spec.requests is not None else None
    return await run.run(list(connections), requests)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def event_loop_name() -> str:
    """Which event loop the generator runs on (uvloop when installed, else asyncio's own)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _run_in_new_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = _new_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _child(spec: LoadSpec, index: int, processes: int, start_ns: int, pipe: Connection) -> None:
    try:
        result = _run_in_new_loop(_run_process(spec, index, processes, start_ns, None))
        pipe.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 (report anything to the parent instead of dying silently)
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def run_load(spec: LoadSpec, hook: WindowHook | None = None) -> LoadResult:
    """Run one load and return what it measured. ``hook("start"/"end")`` marks the window."""
    if spec.concurrency < spec.processes:
        raise ValueError("need at least one connection per generator process")
    if spec.processes <= 1:
        return _run_in_new_loop(_run_process(spec, 0, 1, None, hook))
    context = multiprocessing.get_context("fork")
    start_ns = time.monotonic_ns() + int(0.5 * _NS)  # time for the children to connect
    pipes, children = [], []
    for index in range(spec.processes):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_child, args=(spec, index, spec.processes, start_ns, sender), daemon=True
        )
        child.start()
        sender.close()
        pipes.append(receiver)
        children.append(child)
    if spec.requests is None:
        window_start = start_ns + int(spec.warmup * _NS)
        _sleep_sync_until(window_start)
        if hook:
            hook("start")
        _sleep_sync_until(window_start + int(spec.duration * _NS))
        if hook:
            hook("end")
    elif hook:
        _sleep_sync_until(start_ns)
        hook("start")
    merged: LoadResult | None = None
    errors = []
    for receiver in pipes:
        status, payload = receiver.recv()
        if status != "ok":
            errors.append(payload)
        elif merged is None:
            merged = payload
        else:
            merged.merge(payload)
    for child in children:
        child.join()
    if errors or merged is None:
        raise RuntimeError(f"generator process failed: {'; '.join(errors)}")
    if spec.requests is not None and hook:
        hook("end")
    merged.processes = spec.processes
    merged.concurrency = spec.concurrency
    merged.rate = spec.rate
    return merged


def _sleep_sync_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / _NS
    if delay > 0:
        time.sleep(delay)
