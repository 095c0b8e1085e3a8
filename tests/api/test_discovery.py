"""Types and attributes discovery."""

from __future__ import annotations

from conftest import Api, camera, link


def fill(api: Api) -> None:
    api.create(camera(1))
    api.create({**camera(2), "monitors": {"type": "Relationship", "object": "urn:ngsi-ld:Street:1"}})
    api.create({"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "range": {"type": "Property", "value": 3}})


def test_types_list_and_details(api: Api) -> None:
    fill(api)
    body = api.get("/types").json()
    assert body["type"] == "EntityTypeList" and body["id"].startswith("urn:ngsi-ld:EntityTypeList:")
    assert body["typeList"] == ["Camera", "Sensor"]
    details = api.get("/types", params={"details": "true"}).json()
    camera_type = next(t for t in details if t["typeName"] == "Camera")
    assert camera_type["type"] == "EntityType"
    assert camera_type["id"] == "https://uri.etsi.org/ngsi-ld/default-context/Camera"
    assert camera_type["attributeNames"] == ["location", "monitors", "range", "status"]


def test_type_information(api: Api) -> None:
    fill(api)
    info = api.get("/types/Camera").json()
    assert info["type"] == "EntityTypeInfo" and info["entityCount"] == 2
    kinds = {a["attributeName"]: a["attributeTypes"] for a in info["attributeDetails"]}
    assert kinds == {"location": ["GeoProperty"], "monitors": ["Relationship"], "range": ["Property"], "status": ["Property"]}
    assert api.get("/types/Nothing").status_code == 404


def test_attributes_list_details_and_information(api: Api) -> None:
    fill(api)
    listing = api.get("/attributes").json()
    assert listing["type"] == "AttributeList"
    assert sorted(listing["attributeList"]) == ["location", "monitors", "range", "status"]
    details = api.get("/attributes", params={"details": "true"}).json()
    assert {d["attributeName"]: d["typeNames"] for d in details}["range"] == ["Camera", "Sensor"]
    info = api.get("/attributes/range").json()
    assert info == {
        "id": "https://uri.etsi.org/ngsi-ld/default-context/range",
        "type": "Attribute",
        "attributeName": "range",
        "attributeCount": 3,
        "attributeTypes": ["Property"],
        "typeNames": ["Camera", "Sensor"],
    }
    assert api.get("/attributes/nothing").status_code == 404


def test_discovery_compacts_with_the_requesters_context(api: Api) -> None:
    api.create(camera(1), headers=link())
    assert api.get("/types", headers=link()).json()["typeList"] == ["Camera"]
    assert api.get("/types").json()["typeList"] == ["https://smartdatamodels.org/dataModel.Device/Camera"]


def test_deleted_entities_leave_discovery(api: Api) -> None:
    fill(api)
    api.delete("/entities/urn:ngsi-ld:Sensor:1")
    assert api.get("/types").json()["typeList"] == ["Camera"]
    assert api.get("/attributes/range").json()["typeNames"] == ["Camera"]
