"""Providing and correcting history through the temporal API."""

from __future__ import annotations

from typing import Any

from conftest import Api

VEHICLE = "urn:ngsi-ld:Vehicle:1"
BASE = f"/temporal/entities/{VEHICLE}"


def vehicle(**attrs: Any) -> dict[str, Any]:
    return {"id": VEHICLE, "type": "Vehicle", **attrs}


def at(value: Any, minute: int, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": f"2020-08-01T12:{minute:02d}:00Z", **extra}


def values(api: Api, attr: str, **params: Any) -> list[Any]:
    response = api.get(BASE, params=params)
    assert response.status_code == 200, response.text
    return [instance["value"] for instance in response.json().get(attr, [])]


def test_create_then_update_replaces_instances_at_the_same_time(api: Api) -> None:
    created = api.post("/temporal/entities", vehicle(speed=[at(120, 3), at(80, 5)], fuel=[at(67, 3), at(40, 7, datasetId="urn:ngsi-ld:Dataset:tank")]))
    assert created.status_code == 201 and created.headers["Location"] == f"/ngsi-ld/v1{BASE}"
    updated = api.post("/temporal/entities/", vehicle(speed=[at(121, 3), at(100, 7)]))
    assert updated.status_code == 204
    assert values(api, "speed") == [121, 80, 100]
    assert sorted(values(api, "fuel")) == [40, 67]
    # The entity's state holds the newest instance of each attribute and dataset.
    state = api.entity(VEHICLE)
    assert state["speed"]["value"] == 100
    assert {i.get("datasetId"): i["value"] for i in state["fuel"]} == {None: 67, "urn:ngsi-ld:Dataset:tank": 40}


def test_provided_history_notifies_like_any_change_and_reads_back_by_time(api: Api) -> None:
    assert api.post("/temporal/entities", vehicle(speed=[at(1, 3)])).status_code == 201
    assert api.post(f"{BASE}/attrs", {"speed": [at(2, 4), at(3, 5)], "load": at(9, 4)}).status_code == 204
    assert values(api, "speed", timerel="after", timeAt="2020-08-01T12:04:00Z") == [2, 3]
    assert values(api, "load") == [9]
    assert api.post("/temporal/entities/urn:ngsi-ld:Vehicle:none/attrs", {"speed": at(1, 1)}).status_code == 404


def test_one_instance_is_modified_or_deleted_by_its_id(api: Api) -> None:
    api.post("/temporal/entities", vehicle(speed=[at(120, 3), at(80, 5)]))
    first = api.get(BASE).json()["speed"][0]
    assert first["value"] == 120
    patched = api.patch(f"{BASE}/attrs/speed/{first['instanceId']}", at(129, 3))
    assert patched.status_code == 204, patched.text
    after = api.get(BASE).json()["speed"]
    assert after[0]["instanceId"] == first["instanceId"] and after[0]["value"] == 129
    assert api.delete(f"{BASE}/attrs/speed/{first['instanceId']}").status_code == 204
    assert values(api, "speed") == [80]
    assert api.delete(f"{BASE}/attrs/speed/{first['instanceId']}").status_code == 404
    assert api.patch(f"{BASE}/attrs/speed/urn:ngsi-ld:attribute:instance:999999", at(1, 1)).status_code == 404
    assert api.patch(f"{BASE}/attrs/speed/not-a-uri", at(1, 1)).status_code == 400


def test_attribute_instances_are_deleted_by_dataset_or_all(api: Api) -> None:
    api.post("/temporal/entities", vehicle(fuel=[at(67, 3), at(53, 5), at(40, 7, datasetId="urn:ngsi-ld:Dataset:tank")]))
    assert api.delete(f"{BASE}/attrs/fuel").status_code == 204  # the default dataset only
    assert values(api, "fuel") == [40]
    assert api.delete(f"{BASE}/attrs/fuel", params={"datasetId": "urn:ngsi-ld:Dataset:tank"}).status_code == 204
    assert "fuel" not in api.get(BASE).json()
    assert api.delete(f"{BASE}/attrs/fuel", params={"deleteAll": "true"}).status_code == 404
    assert api.delete(f"{BASE}/attrs/%2e%2e").status_code == 400  # a dot segment is not "the entity itself"
    assert api.get(BASE).status_code == 200


def test_deleting_the_temporal_representation_deletes_the_entity_and_its_history(api: Api) -> None:
    api.post("/temporal/entities", vehicle(speed=[at(120, 3)]))
    assert api.delete(BASE).status_code == 204
    assert api.get(BASE).status_code == 404
    assert api.get(f"/entities/{VEHICLE}").status_code == 404
    assert api.delete(BASE).status_code == 404
    assert api.post("/temporal/entities", vehicle(speed=[at(1, 3)])).status_code == 201  # a new entity again
    assert api.delete("/temporal/entities/not-a-uri").status_code == 400


def test_bad_temporal_payloads_are_refused_whole(api: Api) -> None:
    for payload in ({"type": "Vehicle", "speed": [at(1, 1)]}, vehicle(speed=[{"type": "Property"}]), [vehicle()], vehicle(id="invalid")):
        response = api.post("/temporal/entities", payload)
        assert response.status_code == 400, (payload, response.text)
    empty = api.request("POST", "/temporal/entities", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400 and empty.json()["type"].endswith("InvalidRequest")
    assert api.get("/entities", params={"type": "Vehicle"}).json() == []
