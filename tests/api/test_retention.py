"""History retention per entity type is enforced: older instances go, the rest stay."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from cityops.api.app import create_app
from cityops.settings import Settings, SettingsError
from conftest import Api


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_history_older_than_its_types_retention_is_removed(settings: Settings) -> None:
    app = create_app(replace(settings, history_retention="Person=P1D,*=P30D"))
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client)
        readings = {"urn:ngsi-ld:Person:1": ("Person", [3, 0.5]), "urn:ngsi-ld:Meter:1": ("Meter", [40, 10, 2])}
        for entity_id, (entity_type, ages) in readings.items():
            instances = [{"type": "Property", "value": age, "observedAt": days_ago(age)} for age in ages]
            assert api.post("/temporal/entities", {"id": entity_id, "type": entity_type, "reading": instances}).status_code == 201
        removed = client.portal.call(app.state.cityops.retention.enforce)
        assert removed == 2
        kept = {e: [i["value"] for i in api.get(f"/temporal/entities/{e}").json()["reading"]] for e in readings}
        assert kept == {"urn:ngsi-ld:Person:1": [0.5], "urn:ngsi-ld:Meter:1": [10, 2]}
        assert api.entity("urn:ngsi-ld:Person:1")["reading"]["value"] == 0.5  # the current state is not history


def test_a_malformed_retention_is_refused_with_its_setting_named() -> None:
    with pytest.raises(SettingsError, match="CITYOPS_HISTORY_RETENTION"):
        Settings(history_retention="Person=30 days")
