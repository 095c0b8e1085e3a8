"""The IoT gateway over HTTP, on both store backends: provisioning as FIWARE IoT agents take it,
measures in UltraLight and JSON becoming entity attributes and history, dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.testclient import TestClient

from cityops.api.app import create_app
from cityops.settings import Settings

SERVICE = {"fiware-service": "anyang", "fiware-servicepath": "/"}
TENANT = {"NGSILD-Tenant": "anyang"}


class Iot:
    def __init__(self, client: TestClient):
        self.client = client

    def provision_group(self, **fields: Any) -> None:
        group = {
            "apikey": "air-key",
            "resource": "/iot/d",
            "entity_type": "AirQualityObserved",
            "autoprovision": False,
            "attributes": [
                {"object_id": "t", "name": "temperature", "type": "Number", "metadata": {"unitCode": {"type": "Text", "value": "CEL"}}},
                {"object_id": "h", "name": "relativeHumidity", "type": "Number"},
                {"object_id": "p", "name": "pm10", "type": "Integer"},
            ],
            "static_attributes": [{"name": "district", "type": "Text", "value": "Manan-gu"}],
        }
        group.update(fields)
        response = self.client.post("/iot/services", json={"services": [group]}, headers=SERVICE)
        assert response.status_code == 201, response.text

    def provision(self, *device_ids: str, headers: dict[str, str] = SERVICE, **fields: Any) -> None:
        devices = [{"device_id": d, "protocol": "PDI-IoTA-UltraLight", "transport": "HTTP", "apikey": "air-key", **fields} for d in device_ids]
        response = self.client.post("/iot/devices", json={"devices": devices}, headers=headers)
        assert response.status_code == 201, response.text

    def ul(self, device_id: str, payload: str, apikey: str = "air-key"):
        return self.client.post(f"/iot/d?k={apikey}&i={device_id}", content=payload, headers={"Content-Type": "text/plain"})

    def json(self, device_id: str, payload: Any, apikey: str = "air-key"):
        return self.client.post(f"/iot/json?k={apikey}&i={device_id}", json=payload)

    def entity(self, entity_id: str) -> dict[str, Any]:
        response = self.client.get(f"/ngsi-ld/v1/entities/{entity_id}", headers=TENANT)
        assert response.status_code == 200, response.text
        return response.json()

    def history(self, entity_id: str, attrs: str) -> dict[str, Any]:
        response = self.client.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}", params={"attrs": attrs}, headers=TENANT)
        assert response.status_code == 200, response.text
        return response.json()

    def dead_letters(self, headers: dict[str, str] = SERVICE) -> list[dict[str, Any]]:
        response = self.client.get("/iot/deadletters", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["deadLetters"]


@pytest.fixture
def iot(settings: Settings) -> Iterator[Iot]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Iot(client)


ENTITY = "urn:ngsi-ld:AirQualityObserved:air-001"


def test_ultralight_measures_become_typed_attributes_with_history(iot: Iot) -> None:
    iot.provision_group()
    iot.provision("air-001")
    created = iot.entity(ENTITY)
    assert created["district"]["value"] == "Manan-gu"  # static attribute, on the entity from provisioning
    assert iot.ul("air-001", "t|21.5|h|40|p|35").status_code == 200
    entity = iot.entity(ENTITY)
    assert entity["temperature"]["value"] == 21.5
    assert entity["temperature"]["unitCode"] == "CEL"
    assert entity["pm10"]["value"] == 35 and isinstance(entity["pm10"]["value"], int)
    assert "observedAt" in entity["temperature"]
    assert iot.ul("air-001", "t|22.5").status_code == 200
    history = iot.history(ENTITY, "temperature")
    assert [i["value"] for i in history["temperature"]] == [21.5, 22.5]


def test_timestamps_from_the_payload_and_out_of_order_readings(iot: Iot) -> None:
    iot.provision_group()
    iot.provision("air-001")
    assert iot.ul("air-001", "2026-12-01T10:00:00Z|t|20#2026-12-01T10:05:00Z|t|21").status_code == 200
    assert iot.ul("air-001", "2026-12-01T09:55:00Z|t|19").status_code == 200  # late: history only
    entity = iot.entity(ENTITY)
    assert entity["temperature"]["value"] == 21
    assert entity["temperature"]["observedAt"] == "2026-12-01T10:05:00Z"
    history = iot.history(ENTITY, "temperature")
    assert sorted(i["observedAt"] for i in history["temperature"]) == [
        "2026-12-01T09:55:00Z", "2026-12-01T10:00:00Z", "2026-12-01T10:05:00Z",
    ]  # fmt: skip


def test_json_measures_with_timeinstant_and_location(iot: Iot) -> None:
    iot.provision_group(apikey="json-key", resource="/iot/json", attributes=[{"object_id": "t", "name": "temperature", "type": "Number"}])
    response = iot.client.post(
        "/iot/devices", json={"devices": [{"device_id": "bus-7", "entity_type": "Vehicle", "apikey": "json-key", "protocol": "IoTA-JSON"}]},
        headers=SERVICE,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    payload = [{"t": 3, "lat": 37.3943, "lon": 126.9568, "TimeInstant": "2026-12-01T08:00:00Z"}]
    assert iot.json("bus-7", payload, apikey="json-key").status_code == 200
    entity = iot.entity("urn:ngsi-ld:Vehicle:bus-7")
    assert entity["location"]["type"] == "GeoProperty"
    assert entity["location"]["value"] == {"type": "Point", "coordinates": [126.9568, 37.3943]}
    assert entity["temperature"]["observedAt"] == "2026-12-01T08:00:00Z"
    near = iot.client.get(
        "/ngsi-ld/v1/entities",
        params={"type": "Vehicle", "georel": "near;maxDistance==100", "geometry": "Point", "coordinates": "[126.9569,37.3943]"},
        headers=TENANT,
    )
    assert [e["id"] for e in near.json()] == ["urn:ngsi-ld:Vehicle:bus-7"]


def test_expressions_convert_units(iot: Iot) -> None:
    iot.provision_group(attributes=[{"object_id": "f", "name": "temperature", "type": "Number", "expression": "(f - 32) * 5 / 9"}])
    iot.provision("air-001")
    assert iot.ul("air-001", "f|212").status_code == 200
    assert iot.entity(ENTITY)["temperature"]["value"] == 100


def test_unknown_device_is_refused_kept_and_counted(iot: Iot) -> None:
    iot.provision_group()
    response = iot.ul("stranger", "t|1")
    assert response.status_code == 404
    assert "not provisioned" in response.json()["detail"]
    letters = iot.dead_letters()
    assert [(d["device_id"], d["reason"], d["payload"]) for d in letters] == [("stranger", "unknown_device", "t|1")]
    assert iot.ul("x", "t|1", apikey="nobody").status_code == 404  # unknown apikey: kept in the default tenant
    assert iot.dead_letters(headers={})[0]["apikey"] == "nobody"
    metrics = iot.client.get("/metrics").text
    assert 'cityops_ingest_dead_letters_total{reason="unknown_device"} 2.0' in metrics


def test_autoprovision_creates_the_device_and_its_entity(iot: Iot) -> None:
    iot.provision_group(autoprovision=True)
    assert iot.ul("new-sensor", "t|5").status_code == 200
    assert iot.entity("urn:ngsi-ld:AirQualityObserved:new-sensor")["temperature"]["value"] == 5
    device = iot.client.get("/iot/devices/new-sensor", headers=SERVICE).json()
    assert device["entity_name"] == "urn:ngsi-ld:AirQualityObserved:new-sensor"
    assert "lastSeen" in device


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("t|abc", "is not a number"),
        ("t|1|h", "without a value"),
        ("", "empty"),
    ],
)
def test_malformed_measures_are_dead_letters_and_nothing_is_written(iot: Iot, payload: str, reason: str) -> None:
    iot.provision_group()
    iot.provision("air-001")
    response = iot.ul("air-001", payload)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert "temperature" not in iot.entity(ENTITY)
    letter = iot.dead_letters()[0]
    assert letter["reason"] == "malformed" and reason in letter["detail"]


def test_explicit_attrs_refuses_a_reading_with_an_unknown_measure_whole(iot: Iot) -> None:
    iot.provision_group(explicitAttrs=True)
    iot.provision("air-001")
    response = iot.ul("air-001", "t|20|secret|1")
    assert response.status_code == 400
    assert "explicitAttrs" in response.json()["detail"]
    assert "temperature" not in iot.entity(ENTITY)  # no partial write
    assert iot.ul("air-001", "t|20").status_code == 200


def test_oversized_payload_is_a_dead_letter(settings: Settings) -> None:
    small = Settings(**{**settings.__dict__, "ingest_max_payload": 100})
    with TestClient(create_app(small), raise_server_exceptions=False) as client:
        iot = Iot(client)
        iot.provision_group()
        iot.provision("air-001")
        response = iot.ul("air-001", "t|1|" + "h|2|" * 50)
        assert response.status_code == 400
        assert "exceeds the limit of 100" in response.json()["detail"]
        assert iot.dead_letters()[0]["payload_bytes"] > 100


def test_provisioning_crud_paging_and_conflicts(iot: Iot) -> None:
    iot.provision_group()
    iot.provision(*[f"air-{i:03d}" for i in range(1, 26)])
    page = iot.client.get("/iot/devices", params={"limit": 10, "offset": 20}, headers=SERVICE).json()
    assert page["count"] == 25 and [d["device_id"] for d in page["devices"]] == [f"air-{i:03d}" for i in range(21, 26)]
    again = iot.client.post("/iot/devices", json={"devices": [{"device_id": "air-100"}, {"device_id": "air-001"}]}, headers=SERVICE)
    assert again.status_code == 409
    assert iot.client.get("/iot/devices/air-100", headers=SERVICE).status_code == 404  # the bulk request was all or nothing
    assert iot.client.put("/iot/devices/air-001", json={"timeout": 60}, headers=SERVICE).status_code == 204
    assert iot.client.get("/iot/devices/air-001", headers=SERVICE).json()["timeout"] == 60
    assert iot.client.delete("/iot/devices/air-001", headers=SERVICE).status_code == 204
    assert iot.client.get("/iot/devices/air-001", headers=SERVICE).status_code == 404
    assert iot.ul("air-001", "t|1").status_code == 404
    assert iot.entity(ENTITY)["district"]["value"] == "Manan-gu"  # the city's data stays
    duplicate = iot.client.post("/iot/services", json={"services": [{"apikey": "air-key", "resource": "/iot/d", "entity_type": "X"}]}, headers=SERVICE)
    assert duplicate.status_code == 409
    services = iot.client.get("/iot/services", headers=SERVICE).json()
    assert services["count"] == 1 and services["services"][0]["entity_type"] == "AirQualityObserved"
    other = iot.client.get("/iot/services", headers={"fiware-service": "gwacheon"}).json()
    assert other == {"count": 0, "services": []}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"devices": [{"entity_type": "X"}]}, "'device_id' is required"),
        ({"devices": [{"device_id": "a/b", "entity_type": "X"}]}, "not allowed"),
        ({"devices": [{"device_id": "a", "entity_type": "X", "transport": "CoAP"}]}, "transport"),
        ({"devices": []}, "non-empty 'devices'"),
        ({"devices": [{"device_id": "a", "entity_type": "X", "attributes": [{"object_id": "t", "name": "t", "expression": "t *"}]}]}, "expression"),
    ],
)
def test_bad_provisioning_gets_a_precise_400(iot: Iot, body: Any, detail: str) -> None:
    response = iot.client.post("/iot/devices", json=body, headers=SERVICE)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


def test_service_path_becomes_the_entity_scope(iot: Iot) -> None:
    iot.provision_group()
    iot.provision("air-001", headers={"fiware-service": "anyang", "fiware-servicepath": "/dongan"})
    assert iot.entity(ENTITY)["scope"] == "/dongan"


def test_a_silent_device_is_marked_offline_when_its_interval_passes(iot: Iot) -> None:
    iot.provision_group(timeout=1)
    iot.provision("air-001")
    assert iot.ul("air-001", "t|20").status_code == 200
    assert iot.entity(ENTITY)["deviceState"]["value"] == "online"
    deadline = time.monotonic() + 30
    while iot.entity(ENTITY)["deviceState"]["value"] != "offline":
        assert time.monotonic() < deadline, "the device was never marked offline"
        time.sleep(0.2)
    assert iot.ul("air-001", "t|21").status_code == 200
    assert iot.entity(ENTITY)["deviceState"]["value"] == "online"
    states = [i["value"] for i in iot.history(ENTITY, "deviceState")["deviceState"]]
    assert states == ["online", "offline", "online"]


class LockerEndpoint(BaseHTTPRequestHandler):
    """A parcel locker taking commands over HTTP (IoT agent JSON): it answers with its result."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        LockerEndpoint.bodies.append(body)
        answer = b'{"unlock": "door 3 open"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_command_to_an_http_device_is_posted_to_its_endpoint(iot: Iot) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LockerEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        iot.provision_group(apikey="locker-key", resource="/iot/json", attributes=[])
        locker = {
            "device_id": "locker-1", "entity_type": "ParcelLocker", "apikey": "locker-key", "protocol": "IoTA-JSON",
            "transport": "HTTP", "endpoint": f"http://127.0.0.1:{server.server_port}/cmd", "commands": [{"name": "unlock"}],
        }  # fmt: skip
        assert iot.client.post("/iot/devices", json={"devices": [locker]}, headers=SERVICE).status_code == 201
        response = iot.client.post("/iot/devices/locker-1/commands", json={"command": "unlock", "value": {"door": 3}}, headers=SERVICE)
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while iot.entity("urn:ngsi-ld:ParcelLocker:locker-1").get("unlock_status", {}).get("value") != "OK":
            assert time.monotonic() < deadline, "the command never completed"
            time.sleep(0.1)
        assert LockerEndpoint.bodies == [b'{"unlock":{"door":3}}']
        assert iot.entity("urn:ngsi-ld:ParcelLocker:locker-1")["unlock_info"]["value"] == "door 3 open"
    finally:
        server.shutdown()
        LockerEndpoint.bodies.clear()


def test_readings_without_timestamps_never_share_an_observed_time(iot: Iot) -> None:
    iot.provision_group()
    iot.provision("air-001")
    for request in range(40):  # ten groups a request, quickly one after another: 400 readings
        payload = "#".join(f"t|{request * 10 + group}" for group in range(10))
        assert iot.ul("air-001", payload).status_code == 200
    history = iot.history(ENTITY, "temperature")["temperature"]
    assert sorted(i["value"] for i in history) == list(range(400))
    assert len({i["observedAt"] for i in history}) == 400
    assert iot.entity(ENTITY)["temperature"]["value"] == 399  # the last one sent is the current value
