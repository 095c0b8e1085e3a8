"""The real server process: `cityops serve` over TCP, and what survives kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from server_process import free_port, start_server

pytestmark = pytest.mark.slow


def test_every_acknowledged_write_survives_kill_9(database: str) -> None:
    port = free_port()
    server = start_server(database, port)
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    acknowledged = []
    try:
        with httpx.Client(timeout=5) as client:
            for i in range(300):
                entity = {"id": f"urn:ngsi-ld:Meter:{i}", "type": "WaterMeter", "reading": {"type": "Property", "value": i}}
                if client.post(f"{base}/entities", json=entity).status_code == 201:
                    acknowledged.append(entity["id"])
            batch = [{"id": f"urn:ngsi-ld:Meter:b{i}", "type": "WaterMeter", "reading": {"type": "Property", "value": i}} for i in range(500)]
            assert client.post(f"{base}/entityOperations/upsert", json=batch).status_code == 201
            acknowledged += [e["id"] for e in batch]
            assert client.patch(f"{base}/entities/urn:ngsi-ld:Meter:7/attrs/reading", json={"value": 700}).status_code == 204
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    assert len(acknowledged) == 800

    server = start_server(database, port)
    try:
        with httpx.Client(timeout=5) as client:
            count = client.get(f"{base}/entities", params={"type": "WaterMeter", "count": "true", "limit": "0"})
            assert count.headers["NGSILD-Results-Count"] == "800"
            assert client.get(f"{base}/entities/urn:ngsi-ld:Meter:7").json()["reading"]["value"] == 700
            history = client.get(f"{base}/temporal/entities/urn:ngsi-ld:Meter:7").json()["reading"]
            assert [instance["value"] for instance in history] == [7, 700]  # no accepted change missing from history
            assert client.get(f"{base}/entities", params={"type": "WaterMeter", "q": "reading>=499", "count": "true", "limit": "0"}).headers[
                "NGSILD-Results-Count"
            ] == "2"  # Meter:7 (700) and Meter:b499
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_cli_help_reads_like_a_manual() -> None:
    output = subprocess.run([sys.executable, "-m", "cityops", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "demo", "settings"):
        assert command in output
    serve_help = subprocess.run([sys.executable, "-m", "cityops", "serve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--preload-context" in serve_help and "CITYOPS_PORT" in serve_help


def test_several_server_processes_share_one_database(database: str) -> None:
    """--workers 2: writes from both processes land once each, new names from both are consistent."""
    import asyncio

    port = free_port()
    server = start_server(database, port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"

    async def load() -> list[int]:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)  # new connections spread over both workers
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            async def create(i: int) -> int:
                entity = {"id": f"urn:ngsi-ld:Sensor:{i}", "type": f"Kind{i % 7}", f"reading{i % 13}": {"type": "Property", "value": i}}
                return (await client.post(f"{base}/entities", json=entity)).status_code

            return await asyncio.gather(*(create(i) for i in range(300)))

    try:
        statuses = asyncio.run(load())
        assert statuses.count(201) == 300, statuses
        with httpx.Client(timeout=5) as client:
            types = client.get(f"{base}/types").json()["typeList"]
            assert sorted(types) == [f"Kind{k}" for k in range(7)]
            for k in range(13):
                found = client.get(f"{base}/entities", params={"q": f"reading{k}>=0", "count": "true", "limit": "0"})
                assert found.headers["NGSILD-Results-Count"] == str(len([i for i in range(300) if i % 13 == k]))
            for i in (0, 151, 299):  # whichever process answers, it reads what the other one wrote
                body = client.get(f"{base}/entities/urn:ngsi-ld:Sensor:{i}").json()
                assert body["type"] == f"Kind{i % 7}" and body[f"reading{i % 13}"]["value"] == i
    finally:
        server.terminate()
        server.wait(timeout=15)
