"""Shared fixtures.

Tests that need an external service call ``require_service``: without the service they skip,
unless CITYOPS_REQUIRE_SERVICES=1 (set by .ci/run), where a missing service is a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from starlette.testclient import TestClient

from cityops.api.app import create_app
from cityops.settings import Settings
from cityops.store.postgres_schema import migrate_database

REQUIRE_SERVICES = os.environ.get("CITYOPS_REQUIRE_SERVICES") == "1"
CONTEXTS = Path(__file__).parent / "contexts"
TEST_CONTEXT_URL = "https://cityops.test/contexts/test-context.jsonld"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, in CI, fail) when ``name`` is not listening on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; CITYOPS_REQUIRE_SERVICES=1 makes this a failure")
        pytest.skip(message)


class Api:
    """A TestClient with NGSI-LD shorthands: paths are relative to /ngsi-ld/v1."""

    def __init__(self, client: TestClient):
        self.client = client

    def request(self, method: str, path: str, **kwargs: Any):
        return self.client.request(method, "/ngsi-ld/v1" + path, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def entity(self, entity_id: str, **params: Any) -> dict[str, Any]:
        """GET /entities/{id} that must succeed, as JSON."""
        response = self.get(f"/entities/{entity_id}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, json: Any = None, **kwargs: Any):
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any):
        return self.request("PATCH", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any):
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)

    def create(self, entity: dict[str, Any], **kwargs: Any) -> None:
        response = self.post("/entities", entity, **kwargs)
        assert response.status_code == 201, response.text


BACKENDS = ("sqlite", "postgresql")
# A server where tests may create and drop databases (trust authentication on the CI machine).
POSTGRES_ADMIN_URL = os.environ.get("CITYOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_TEMPLATE = "cityops_test_template"
_template_ready = False


def _admin(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def _database_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _make_template() -> None:
    """A database with the current schema, copied for each test (much faster than migrating each)."""
    global _template_ready
    if _template_ready:
        return
    parsed = urlsplit(POSTGRES_ADMIN_URL)
    require_service("PostgreSQL", parsed.hostname or "127.0.0.1", parsed.port or 5432)
    _admin(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {_TEMPLATE}")
    asyncio.run(migrate_database(_database_url(_TEMPLATE)))
    _template_ready = True


@contextmanager
def postgres_database(*, migrated: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards), with the current schema or
    (``migrated=False``) empty; its URL."""
    _make_template()
    name = f"cityops_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {_TEMPLATE}" if migrated else ""))
    try:
        yield _database_url(name)
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database": str(tmp_path / "hub.db"),
        "preload_contexts": {TEST_CONTEXT_URL: CONTEXTS / "test-context.jsonld"},
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that uses the hub runs once on each store backend."""
    return request.param


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """Where a server process keeps its data: a SQLite file, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        yield str(tmp_path / "hub.db")
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    if backend == "sqlite":
        yield make_settings(tmp_path)
        return
    with postgres_database() as url:
        yield make_settings(tmp_path, database_url=url)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(client)


def link(url: str = TEST_CONTEXT_URL) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'}


def camera(number: int = 1, lon: float = 126.9568, lat: float = 37.3943, **attrs: Any) -> dict[str, Any]:
    entity = {
        "id": f"urn:ngsi-ld:Camera:{number:03d}",
        "type": "Camera",
        "status": {"type": "Property", "value": "on"},
        "range": {"type": "Property", "value": 50, "unitCode": "MTR"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
    }
    entity.update(attrs)
    return entity
