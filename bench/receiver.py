"""A fast notification receiver for the notification benchmark: a raw asyncio HTTP/1.1 server
(keep-alive, Content-Length bodies) that counts notifications and the entities they carry, and
measures each entity's delay from the send time the benchmark wrote into its value.

``python -m bench.receiver PORT`` serves POST anywhere (answers 204) and GET /stats (JSON), and
POST /reset clears the counters. Run in its own process so it does not share the hub's cores'
time slices with the load generator.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    uvloop = None


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.notifications = 0
        self.entities = 0
        self.first_ns = 0
        self.last_ns = 0
        self.delays_ms: list[float] = []
        self.subscriptions: set[str] = set()
        self.out_of_order = 0
        self._last_value: dict[tuple[str, str], float] = {}

    def record(self, body: bytes) -> None:
        now = time.time_ns()
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.notifications += 1
        notification = orjson.loads(body)
        self.subscriptions.add(notification.get("subscriptionId", ""))
        for entity in notification.get("data", ()):
            self.entities += 1
            sent = _sent_ns(entity)
            if sent is not None:
                self.delays_ms.append((now - sent) / 1e6)
                key = (notification.get("subscriptionId", ""), entity.get("id", ""))  # ordered per subscription
                if sent < self._last_value.get(key, 0):
                    self.out_of_order += 1
                self._last_value[key] = sent

    def summary(self) -> dict[str, Any]:
        delays = sorted(self.delays_ms)

        def pct(p: float) -> float | None:
            return round(delays[max(0, min(len(delays) - 1, int(p / 100 * len(delays))))], 2) if delays else None

        return {
            "notifications": self.notifications,
            "entities": self.entities,
            "subscriptions": len(self.subscriptions),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "delay_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": round(delays[-1], 2) if delays else None, "samples": len(delays)},
            "out_of_order": self.out_of_order,
        }


def _sent_ns(entity: dict[str, Any]) -> int | None:
    sent = entity.get("sentAt")
    if isinstance(sent, dict):
        sent = sent.get("value")
    return sent if isinstance(sent, int) else None


class Receiver(asyncio.Protocol):
    def __init__(self, stats: Stats):
        self.stats = stats
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.answer(head.split(" ", 2), body)

    def answer(self, request_line: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, target = request_line[0], request_line[1] if len(request_line) > 1 else "/"
        if method == "GET" and target.startswith("/stats"):
            payload = orjson.dumps(self.stats.summary())
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
            return
        if method == "POST" and target.startswith("/reset"):
            self.stats.reset()
        elif method == "POST":
            self.stats.record(body)
        self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


async def serve(port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Receiver(stats), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1])
    if uvloop is not None:
        uvloop.install()
    asyncio.run(serve(port))


if __name__ == "__main__":
    main()
