"""Shared fixtures.

Tests that need an external service call ``require_service``: without the service they skip,
unless CITYOPS_REQUIRE_SERVICES=1 (set by .ci/run), where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cityops.api.app import create_app
from cityops.settings import Settings

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


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database": str(tmp_path / "hub.db"),
        "preload_contexts": {TEST_CONTEXT_URL: CONTEXTS / "test-context.jsonld"},
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


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
