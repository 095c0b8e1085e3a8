"""PostgreSQL failures under a running server: connections killed under write load, and the
database unreachable. Every acknowledged write must be kept, errors must be 503 ProblemDetails
(never a 500, never a hang), and the server must recover by itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from conftest import postgres_database
from server_process import serving

pytestmark = pytest.mark.slow


def reading(number: int) -> dict:
    return {"id": f"urn:ngsi-ld:Meter:{number}", "type": "WaterMeter", "reading": {"type": "Property", "value": number}}


def assert_problem_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"]


def terminate_connections(url: str) -> int:
    """pg_terminate_backend on every connection to the database of ``url`` but this one; how many."""

    async def run() -> int:
        connection = await asyncpg.connect(url)
        try:
            return len(
                await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        finally:
            await connection.close()

    return asyncio.run(run())


def count_meters(client: httpx.Client, base: str) -> int:
    response = client.get(f"{base}/entities", params={"type": "WaterMeter", "count": "true", "limit": "0"})
    assert response.status_code == 200, response.text
    return int(response.headers["NGSILD-Results-Count"])


def test_connections_killed_under_write_load_lose_no_acknowledged_write() -> None:
    with postgres_database() as url, serving(url, env={"CITYOPS_DB_TIMEOUT": "2"}) as (_, base):
        acknowledged: list[int] = []
        answers: dict[int, int] = {}
        unexpected: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def writer(first: int) -> None:
            number = first
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    response = client.post(f"{base}/entities", json=reading(number))
                    with lock:
                        answers[response.status_code] = answers.get(response.status_code, 0) + 1
                        if response.status_code == 201:
                            acknowledged.append(number)
                        elif response.status_code != 503 or not response.headers["content-type"].startswith("application/problem+json"):
                            unexpected.append(response.text)
                    number += 1

        threads = [threading.Thread(target=writer, args=(k * 1_000_000,)) for k in range(4)]
        for thread in threads:
            thread.start()
        killed = 0
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                time.sleep(0.4)
                killed += terminate_connections(url)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert killed > 0 and len(acknowledged) > 100
        assert not unexpected, (answers, unexpected[:3])

        with httpx.Client(timeout=30) as client:
            recovered = time.monotonic() + 20  # the pool replaces the killed connections by itself
            while client.post(f"{base}/entities", json=reading(-1)).status_code != 201:
                assert time.monotonic() < recovered, "the server did not recover after the database connections came back"
                time.sleep(0.2)
            ids = [f"urn:ngsi-ld:Meter:{n}" for n in acknowledged]
            for start in range(0, len(ids), 100):
                found = client.post(
                    f"{base}/entityOperations/query",
                    json={"type": "Query", "entities": [{"type": "WaterMeter"}], "q": f"reading=={','.join(str(n) for n in acknowledged[start : start + 100])}"},
                    params={"limit": "1000"},
                )
                assert found.status_code == 200, found.text
                assert {e["id"] for e in found.json()} >= set(ids[start : start + 100])
            assert count_meters(client, base) >= len(acknowledged) + 1


class Proxy:
    """A TCP proxy in front of PostgreSQL that a test can cut (refusing and dropping connections)
    or freeze (holding connections open, forwarding nothing), then restore."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.mode = "open"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.mode == "frozen":
                    time.sleep(0.05)
                if self.mode == "cut":
                    break
                sink.sendall(data)
        for end in (source, sink):  # shutdown, not only close: it wakes the other direction's recv
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                end.close()

    def cut(self) -> None:
        self.mode = "cut"
        with self._lock:
            for client, upstream in self.pairs:
                for end in (client, upstream):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
            self.pairs.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


@contextlib.contextmanager
def proxied(url: str) -> Iterator[tuple[Proxy, str]]:
    parts = urlsplit(url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    finally:
        proxy.close()


@pytest.mark.parametrize("failure", ["cut", "frozen"])
def test_an_unreachable_database_gives_503_not_a_hang_and_the_server_recovers(failure: str) -> None:
    with postgres_database() as url, proxied(url) as (proxy, through_proxy):
        with serving(through_proxy, env={"CITYOPS_DB_TIMEOUT": "1"}) as (_, base), httpx.Client(timeout=60) as client:
            assert client.post(f"{base}/entities", json=reading(1)).status_code == 201
            if failure == "cut":
                proxy.cut()
            else:
                proxy.mode = "frozen"
            for request in (
                lambda: client.post(f"{base}/entities", json=reading(2)),
                lambda: client.get(f"{base}/entities/urn:ngsi-ld:Meter:1"),
                lambda: client.get(f"{base}/entities", params={"type": "WaterMeter"}),
            ):
                started = time.monotonic()
                response = request()
                assert_problem_503(response)
                assert time.monotonic() - started < 15, "a request waited on the database far past CITYOPS_DB_TIMEOUT"
            proxy.cut()  # frozen connections are dropped too, as a restarted database would
            proxy.mode = "open"
            recovered = time.monotonic() + 30
            while (response := client.post(f"{base}/entities", json=reading(3))).status_code != 201:
                assert response.status_code == 503, response.text
                assert time.monotonic() < recovered, "the server did not recover once the database was back"
                time.sleep(0.3)
            assert client.get(f"{base}/entities/urn:ngsi-ld:Meter:1").status_code == 200
            assert client.get(f"{base}/entities/urn:ngsi-ld:Meter:2").status_code == 404  # refused, so not written
