"""Attribute operations: append, update, partial update, replace, delete."""

from __future__ import annotations

from conftest import Api, camera

ID = "urn:ngsi-ld:Camera:001"


def test_append_adds_and_overwrites(api: Api) -> None:
    api.create(camera(1))
    response = api.post(f"/entities/{ID}/attrs", {"status": {"type": "Property", "value": "off"}, "owner": {"type": "Property", "value": "city"}})
    assert response.status_code == 204
    body = api.get(f"/entities/{ID}").json()
    assert body["status"]["value"] == "off" and body["owner"]["value"] == "city"


def test_append_no_overwrite_reports_what_it_kept(api: Api) -> None:
    api.create(camera(1))
    response = api.post(
        f"/entities/{ID}/attrs",
        {"status": {"type": "Property", "value": "off"}, "owner": {"type": "Property", "value": "city"}},
        params={"options": "noOverwrite"},
    )
    assert response.status_code == 207
    result = response.json()  # names are IRIs in an UpdateResult
    assert result["updated"] == ["https://uri.etsi.org/ngsi-ld/default-context/owner"]
    assert result["notUpdated"][0]["attributeName"] == "https://uri.etsi.org/ngsi-ld/status"
    assert api.get(f"/entities/{ID}").json()["status"]["value"] == "on"


def test_update_attributes_replaces_adds_and_deletes(api: Api) -> None:
    api.create(camera(1))
    response = api.patch(
        f"/entities/{ID}/attrs",
        {"status": {"type": "Property", "value": "off"}, "owner": {"type": "Property", "value": 1}, "range": "urn:ngsi-ld:null"},
    )
    assert response.status_code == 204
    body = api.get(f"/entities/{ID}").json()
    assert body["status"] == {"type": "Property", "value": "off"} and body["owner"]["value"] == 1 and "range" not in body
    missing = api.patch(f"/entities/{ID}/attrs", {"ghost": "urn:ngsi-ld:null"})
    assert missing.status_code == 207
    assert missing.json()["notUpdated"][0]["attributeName"] == "https://uri.etsi.org/ngsi-ld/default-context/ghost"


def test_scope_is_appended_updated_and_deleted_like_an_attribute(api: Api) -> None:
    api.create({**camera(1), "scope": "/Anyang/Manan"})
    assert api.post(f"/entities/{ID}/attrs", {"scope": "/Anyang/Dongan"}, params={"options": "noOverwrite"}).status_code == 204
    assert api.get(f"/entities/{ID}").json()["scope"] == ["/Anyang/Manan", "/Anyang/Dongan"]
    assert api.patch(f"/entities/{ID}/attrs", {"scope": "/Gwacheon"}).status_code == 204
    assert api.get(f"/entities/{ID}").json()["scope"] == "/Gwacheon"
    assert api.delete(f"/entities/{ID}/attrs/scope").status_code == 204
    assert "scope" not in api.entity(ID)
    assert api.patch(f"/entities/{ID}/attrs", {"scope": "/Gwacheon"}).status_code == 207
    assert api.put(f"/entities/{ID}/attrs/scope", {"value": "/x"}).status_code == 400


def test_partial_update_with_null_deletes_the_instance(api: Api) -> None:
    api.create(camera(1))
    assert api.patch(f"/entities/{ID}/attrs/range", {"type": "Property", "value": "urn:ngsi-ld:null"}).status_code == 204
    assert "range" not in api.entity(ID)


def test_partial_update_of_sub_attributes_only(api: Api) -> None:
    api.create(camera(1, monitors={"type": "Relationship", "object": "urn:ngsi-ld:Street:1"}))
    response = api.patch(f"/entities/{ID}/attrs/monitors", {"checkedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}})
    assert response.status_code == 204
    monitors = api.get(f"/entities/{ID}").json()["monitors"]
    assert monitors["object"] == "urn:ngsi-ld:Street:1" and monitors["checkedBy"]["object"] == "urn:ngsi-ld:Person:1"
    assert api.patch(f"/entities/{ID}/attrs/monitors", {"type": "Property", "value": 1}).status_code == 400
    assert api.patch(f"/entities/{ID}/attrs/monitors", {}).status_code == 400


def test_partial_attribute_update_keeps_other_members(api: Api) -> None:
    api.create(camera(1))
    response = api.patch(f"/entities/{ID}/attrs/range", {"type": "Property", "value": 80})
    assert response.status_code == 204
    assert api.get(f"/entities/{ID}").json()["range"] == {"type": "Property", "value": 80, "unitCode": "MTR"}


def test_partial_update_of_a_missing_attribute_is_404(api: Api) -> None:
    api.create(camera(1))
    assert api.patch(f"/entities/{ID}/attrs/nothing", {"value": 1}).status_code == 404
    assert api.patch("/entities/urn:ngsi-ld:Camera:none/attrs/range", {"value": 1}).status_code == 404


def test_partial_update_accepts_a_bare_value(api: Api) -> None:
    api.create(camera(1))
    assert api.patch(f"/entities/{ID}/attrs/range", 120).status_code == 204
    assert api.get(f"/entities/{ID}").json()["range"]["value"] == 120


def test_replace_attribute_drops_old_members(api: Api) -> None:
    api.create(camera(1))
    assert api.put(f"/entities/{ID}/attrs/range", {"type": "Property", "value": 70}).status_code == 204
    assert api.get(f"/entities/{ID}").json()["range"] == {"type": "Property", "value": 70}
    assert api.put(f"/entities/{ID}/attrs/none", {"type": "Property", "value": 70}).status_code == 404


def test_attribute_timestamps_follow_changes(api: Api) -> None:
    api.create(camera(1))
    before = api.get(f"/entities/{ID}", params={"options": "sysAttrs"}).json()
    api.patch(f"/entities/{ID}/attrs/range", {"type": "Property", "value": 90})
    after = api.get(f"/entities/{ID}", params={"options": "sysAttrs"}).json()
    assert after["range"]["createdAt"] == before["range"]["createdAt"]
    assert after["range"]["modifiedAt"] >= before["range"]["modifiedAt"]
    assert after["status"]["modifiedAt"] == before["status"]["modifiedAt"]
    assert after["modifiedAt"] >= before["modifiedAt"]


def test_delete_attribute(api: Api) -> None:
    api.create(camera(1))
    assert api.delete(f"/entities/{ID}/attrs/range").status_code == 204
    assert "range" not in api.entity(ID)
    assert api.delete(f"/entities/{ID}/attrs/range").status_code == 404


def test_delete_attribute_by_dataset_id_and_all(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Sensor:1",
            "type": "Sensor",
            "temperature": [
                {"type": "Property", "value": 20},
                {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:a"},
                {"type": "Property", "value": 22, "datasetId": "urn:ngsi-ld:Dataset:b"},
            ],
        }
    )
    path = "/entities/urn:ngsi-ld:Sensor:1/attrs/temperature"
    assert api.delete(path, params={"datasetId": "urn:ngsi-ld:Dataset:a"}).status_code == 204
    values = [i["value"] for i in api.get("/entities/urn:ngsi-ld:Sensor:1").json()["temperature"]]
    assert values == [20, 22]
    assert api.delete(path, params={"datasetId": "urn:ngsi-ld:Dataset:zzz"}).status_code == 404
    assert api.delete(path, params={"deleteAll": "true"}).status_code == 204
    assert "temperature" not in api.entity("urn:ngsi-ld:Sensor:1")


def test_partial_update_targets_the_dataset_instance(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Sensor:2",
            "type": "Sensor",
            "temperature": [
                {"type": "Property", "value": 20},
                {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:a"},
            ],
        }
    )
    assert api.patch(
        "/entities/urn:ngsi-ld:Sensor:2/attrs/temperature", {"value": 30, "datasetId": "urn:ngsi-ld:Dataset:a"}
    ).status_code == 204
    instances = api.get("/entities/urn:ngsi-ld:Sensor:2").json()["temperature"]
    assert [i["value"] for i in instances] == [20, 30]


def test_attribute_update_with_a_bad_value_changes_nothing(api: Api) -> None:
    api.create(camera(1))
    response = api.post(f"/entities/{ID}/attrs", {"status": {"type": "Property", "value": "off"}, "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 1]}}})
    assert response.status_code == 400
    assert "longitude" in response.json()["detail"]
    assert api.get(f"/entities/{ID}").json()["status"]["value"] == "on"
