"""Batch operations: create, upsert, update, merge, delete."""

from __future__ import annotations

from conftest import Api, camera


def test_batch_create_all_good_is_201_with_ids(api: Api) -> None:
    response = api.post("/entityOperations/create", [camera(1), camera(2)])
    assert response.status_code == 201
    assert response.json() == ["urn:ngsi-ld:Camera:001", "urn:ngsi-ld:Camera:002"]
    assert api.get("/entities/urn:ngsi-ld:Camera:002").status_code == 200


def test_batch_create_reports_each_failure_and_keeps_the_rest(api: Api) -> None:
    api.create(camera(1))
    bad = {"id": "urn:ngsi-ld:Camera:bad", "type": "Camera", "range": {"type": "Property"}}
    response = api.post("/entityOperations/create", [camera(1), camera(2), bad, camera(2)])
    assert response.status_code == 207
    result = response.json()
    assert result["success"] == ["urn:ngsi-ld:Camera:002"]
    errors = {(e["entityId"], e["error"]["type"].rsplit("/", 1)[1]) for e in result["errors"]}
    assert errors == {
        ("urn:ngsi-ld:Camera:001", "AlreadyExists"),
        ("urn:ngsi-ld:Camera:bad", "BadRequestData"),
        ("urn:ngsi-ld:Camera:002", "AlreadyExists"),
    }
    assert api.get("/entities/urn:ngsi-ld:Camera:bad").status_code == 404


def test_batch_upsert_creates_then_replaces(api: Api) -> None:
    response = api.post("/entityOperations/upsert", [camera(1), camera(2)])
    assert response.status_code == 201
    assert sorted(response.json()) == ["urn:ngsi-ld:Camera:001", "urn:ngsi-ld:Camera:002"]
    replaced = {"id": "urn:ngsi-ld:Camera:001", "type": "Camera", "status": {"type": "Property", "value": "off"}}
    assert api.post("/entityOperations/upsert", [replaced]).status_code == 204
    body = api.get("/entities/urn:ngsi-ld:Camera:001").json()
    assert body["status"]["value"] == "off" and "range" not in body


def test_batch_upsert_update_mode_keeps_other_attributes(api: Api) -> None:
    api.create(camera(1))
    patch = {"id": "urn:ngsi-ld:Camera:001", "type": "Camera", "status": {"type": "Property", "value": "off"}}
    assert api.post("/entityOperations/upsert", [patch], params={"options": "update"}).status_code == 204
    body = api.get("/entities/urn:ngsi-ld:Camera:001").json()
    assert body["status"]["value"] == "off" and body["range"]["value"] == 50


def test_batch_upsert_mixed_created_and_updated_returns_created_ids(api: Api) -> None:
    api.create(camera(1))
    response = api.post("/entityOperations/upsert", [camera(1), camera(3)])
    assert response.status_code == 201
    assert response.json() == ["urn:ngsi-ld:Camera:003"]


def test_batch_update_with_no_overwrite(api: Api) -> None:
    api.create(camera(1))
    update = {"id": "urn:ngsi-ld:Camera:001", "status": {"type": "Property", "value": "off"}, "owner": {"type": "Property", "value": "x"}}
    missing = {"id": "urn:ngsi-ld:Camera:404", "status": {"type": "Property", "value": "off"}}
    response = api.post("/entityOperations/update", [update, missing], params={"options": "noOverwrite"})
    assert response.status_code == 207
    assert response.json()["success"] == ["urn:ngsi-ld:Camera:001"]
    errors = {e["entityId"]: e["error"]["detail"] for e in response.json()["errors"]}
    assert "does not exist" in errors["urn:ngsi-ld:Camera:404"]
    assert "status" in errors["urn:ngsi-ld:Camera:001"]  # kept, and reported as not updated
    body = api.get("/entities/urn:ngsi-ld:Camera:001").json()
    assert body["status"]["value"] == "on" and body["owner"]["value"] == "x"


def test_batch_merge(api: Api) -> None:
    api.create(camera(1))
    response = api.post("/entityOperations/merge", [{"id": "urn:ngsi-ld:Camera:001", "range": "urn:ngsi-ld:null", "owner": "city"}])
    assert response.status_code == 204
    body = api.get("/entities/urn:ngsi-ld:Camera:001").json()
    assert "range" not in body and body["owner"] == {"type": "Property", "value": "city"}


def test_batch_delete(api: Api) -> None:
    api.post("/entityOperations/create", [camera(1), camera(2)])
    assert api.post("/entityOperations/delete", ["urn:ngsi-ld:Camera:001", "urn:ngsi-ld:Camera:002"]).status_code == 204
    response = api.post("/entityOperations/delete", ["urn:ngsi-ld:Camera:001", "nonsense id"])
    assert response.status_code == 207
    assert len(response.json()["errors"]) == 2


def test_batch_body_must_be_a_non_empty_array(api: Api) -> None:
    assert api.post("/entityOperations/create", camera(1)).status_code == 400
    assert api.post("/entityOperations/create", []).status_code == 400


def test_big_batch_is_written_in_one_go(api: Api) -> None:
    entities = [camera(i, lon=126.9 + i * 1e-5) for i in range(1, 1001)]
    assert api.post("/entityOperations/upsert", entities).status_code == 201
    response = api.get("/entities", params={"type": "Camera", "count": "true", "limit": "1"})
    assert response.headers["NGSILD-Results-Count"] == "1000"
