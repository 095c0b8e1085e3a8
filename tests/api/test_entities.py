"""Entity create / retrieve / delete / merge / replace through the HTTP API."""

from __future__ import annotations

from conftest import TEST_CONTEXT_URL, Api, camera, link


def test_create_then_retrieve_returns_what_was_sent(api: Api) -> None:
    api.create(camera(1))
    response = api.get("/entities/urn:ngsi-ld:Camera:001")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "rel=\"http://www.w3.org/ns/json-ld#context\"" in response.headers["link"]
    assert response.json() == camera(1)


def test_create_answers_201_with_location(api: Api) -> None:
    response = api.post("/entities", camera(7))
    assert response.status_code == 201
    assert response.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:Camera:007"


def test_creating_an_existing_id_is_409_already_exists(api: Api) -> None:
    api.create(camera(1))
    response = api.post("/entities", camera(1))
    assert response.status_code == 409
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_entity_is_404_resource_not_found(api: Api) -> None:
    response = api.get("/entities/urn:ngsi-ld:Camera:missing")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/ResourceNotFound")


def test_id_that_is_not_a_uri_is_400(api: Api) -> None:
    response = api.post("/entities", {"id": "camera one", "type": "Camera"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/BadRequestData")
    assert api.get("/entities/not-a-uri").status_code == 400


def test_entity_without_type_is_rejected_and_nothing_is_stored(api: Api) -> None:
    response = api.post("/entities", {"id": "urn:ngsi-ld:Camera:x", "status": {"type": "Property", "value": 1}})
    assert response.status_code == 400
    assert api.get("/entities/urn:ngsi-ld:Camera:x").status_code == 404


def test_bad_attribute_is_rejected_whole(api: Api) -> None:
    entity = camera(2, broken={"type": "Property"})
    response = api.post("/entities", entity)
    assert response.status_code == 400
    assert "value" in response.json()["detail"]
    assert api.get("/entities/urn:ngsi-ld:Camera:002").status_code == 404


def test_concise_input_is_stored_as_normalized(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Camera:c",
            "type": "Camera",
            "status": "on",
            "range": {"value": 50, "unitCode": "MTR"},
            "monitors": {"object": "urn:ngsi-ld:Street:1"},
            "location": {"type": "Point", "coordinates": [126.95, 37.39]},
        }
    )
    body = api.get("/entities/urn:ngsi-ld:Camera:c").json()
    assert body["status"] == {"type": "Property", "value": "on"}
    assert body["range"] == {"type": "Property", "value": 50, "unitCode": "MTR"}
    assert body["monitors"] == {"type": "Relationship", "object": "urn:ngsi-ld:Street:1"}
    assert body["location"]["type"] == "GeoProperty"


def test_output_formats(api: Api) -> None:
    api.create(camera(3, monitors={"type": "Relationship", "object": "urn:ngsi-ld:Street:9"}))
    key_values = api.get("/entities/urn:ngsi-ld:Camera:003", params={"options": "keyValues"}).json()
    assert key_values["status"] == "on"
    assert key_values["range"] == 50
    assert key_values["monitors"] == "urn:ngsi-ld:Street:9"
    assert key_values["location"] == {"type": "Point", "coordinates": [126.9568, 37.3943]}
    assert api.get("/entities/urn:ngsi-ld:Camera:003", params={"format": "simplified"}).json() == key_values
    concise = api.get("/entities/urn:ngsi-ld:Camera:003", params={"options": "concise"}).json()
    assert concise["status"] == "on"
    assert concise["range"] == {"value": 50, "unitCode": "MTR"}
    assert concise["monitors"] == {"object": "urn:ngsi-ld:Street:9"}
    assert concise["location"] == {"type": "Point", "coordinates": [126.9568, 37.3943]}


def test_sys_attrs_show_creation_and_modification_times(api: Api) -> None:
    api.create(camera(4))
    body = api.get("/entities/urn:ngsi-ld:Camera:004", params={"options": "sysAttrs"}).json()
    assert body["createdAt"].endswith("Z") and body["modifiedAt"] >= body["createdAt"]
    assert "createdAt" in body["status"] and "modifiedAt" in body["status"]
    assert "createdAt" not in api.entity("urn:ngsi-ld:Camera:004")


def test_attrs_pick_and_omit_project_the_entity(api: Api) -> None:
    api.create(camera(5))
    assert set(api.get("/entities/urn:ngsi-ld:Camera:005", params={"attrs": "status"}).json()) == {"id", "type", "status"}
    assert set(api.get("/entities/urn:ngsi-ld:Camera:005", params={"pick": "id,range"}).json()) == {"id", "range"}
    assert "location" not in api.entity("urn:ngsi-ld:Camera:005", omit="location")
    assert api.get("/entities/urn:ngsi-ld:Camera:005", params={"pick": "id", "omit": "type"}).status_code == 400


def test_delete_entity(api: Api) -> None:
    api.create(camera(6))
    assert api.delete("/entities/urn:ngsi-ld:Camera:006").status_code == 204
    assert api.get("/entities/urn:ngsi-ld:Camera:006").status_code == 404
    assert api.delete("/entities/urn:ngsi-ld:Camera:006").status_code == 404


def test_replace_entity_keeps_creation_time_and_drops_missing_attributes(api: Api) -> None:
    api.create(camera(8))
    created = api.get("/entities/urn:ngsi-ld:Camera:008", params={"options": "sysAttrs"}).json()["createdAt"]
    response = api.put("/entities/urn:ngsi-ld:Camera:008", {"type": "Camera", "status": {"type": "Property", "value": "off"}})
    assert response.status_code == 204
    body = api.get("/entities/urn:ngsi-ld:Camera:008", params={"options": "sysAttrs"}).json()
    assert body["status"]["value"] == "off"
    assert "range" not in body and "location" not in body
    assert body["createdAt"] == created
    assert api.put("/entities/urn:ngsi-ld:Camera:nope", {"type": "Camera"}).status_code == 404


def test_merge_entity_adds_replaces_and_deletes_with_null(api: Api) -> None:
    api.create(camera(9))
    response = api.patch(
        "/entities/urn:ngsi-ld:Camera:009",
        {"status": {"type": "Property", "value": "off"}, "range": "urn:ngsi-ld:null", "owner": {"type": "Property", "value": "Anyang"}},
    )
    assert response.status_code == 204
    body = api.get("/entities/urn:ngsi-ld:Camera:009").json()
    assert body["status"] == {"type": "Property", "value": "off"}
    assert body["owner"]["value"] == "Anyang"
    assert "range" not in body


def test_merge_keeps_sub_attributes_not_mentioned(api: Api) -> None:
    api.create(camera(10, status={"type": "Property", "value": "on", "reason": {"type": "Property", "value": "schedule"}}))
    api.patch("/entities/urn:ngsi-ld:Camera:010", {"status": {"type": "Property", "value": "off"}})
    status = api.get("/entities/urn:ngsi-ld:Camera:010").json()["status"]
    assert status["value"] == "off"
    assert status["reason"]["value"] == "schedule"


def test_user_context_from_link_header_expands_and_compacts(api: Api) -> None:
    api.create(camera(11), headers=link())
    with_context = api.get("/entities/urn:ngsi-ld:Camera:011", headers=link()).json()
    assert with_context["type"] == "Camera" and "range" in with_context
    without = api.get("/entities/urn:ngsi-ld:Camera:011").json()
    assert without["type"] == "https://smartdatamodels.org/dataModel.Device/Camera"
    assert "https://cityops.test/vocab#range" in without
    assert "status" in without  # a core term: user contexts cannot redefine it


def test_json_ld_body_carries_its_context(api: Api) -> None:
    entity = camera(12)
    entity["@context"] = [TEST_CONTEXT_URL, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"]
    response = api.post("/entities", content=__import__("json").dumps(entity), headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 201, response.text
    body = api.get("/entities/urn:ngsi-ld:Camera:012", headers={**link(), "Accept": "application/ld+json"})
    assert body.headers["content-type"] == "application/ld+json"
    assert body.json()["@context"] == TEST_CONTEXT_URL
    assert body.json()["type"] == "Camera"


def test_language_property_and_lang_parameter(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Building:1",
            "type": "Building",
            "name": {"type": "LanguageProperty", "languageMap": {"ko": "안양시청", "en": "Anyang City Hall"}},
        }
    )
    full = api.get("/entities/urn:ngsi-ld:Building:1").json()
    assert full["name"]["languageMap"]["ko"] == "안양시청"
    english = api.get("/entities/urn:ngsi-ld:Building:1", params={"lang": "en"}).json()
    assert english["name"] == {"type": "Property", "value": "Anyang City Hall", "lang": "en"}


def test_multi_attribute_with_dataset_ids(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Sensor:1",
            "type": "Sensor",
            "temperature": [
                {"type": "Property", "value": 20},
                {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:backup"},
            ],
        }
    )
    body = api.get("/entities/urn:ngsi-ld:Sensor:1").json()
    assert len(body["temperature"]) == 2
    duplicate = {
        "id": "urn:ngsi-ld:Sensor:2",
        "type": "Sensor",
        "temperature": [{"type": "Property", "value": 1}, {"type": "Property", "value": 2}],
    }
    assert api.post("/entities", duplicate).status_code == 400


def test_other_attribute_kinds_round_trip(api: Api) -> None:
    entity = {
        "id": "urn:ngsi-ld:Thing:kinds",
        "type": "Thing",
        "readings": {"type": "ListProperty", "valueList": [1, 2, 3]},
        "config": {"type": "JsonProperty", "json": {"any": ["json", 1]}},
        "category": {"type": "VocabProperty", "vocab": "commercial"},
        "parts": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Part:1"}]},
    }
    api.create(entity)
    assert api.get("/entities/urn:ngsi-ld:Thing:kinds").json() == entity


def test_an_entity_with_only_a_scope_is_deleted_whole(api: Api) -> None:
    api.create({"id": "urn:ngsi-ld:Building:scoped", "type": "Building", "scope": "/Madrid"})
    assert api.delete("/entities/urn:ngsi-ld:Building:scoped").status_code == 204
    assert api.get("/entities/urn:ngsi-ld:Building:scoped").status_code == 404
    assert api.get("/entities", params={"type": "Building", "count": "true"}).headers["NGSILD-Results-Count"] == "0"


def test_an_id_with_characters_a_header_cannot_carry_gets_an_encoded_location(api: Api) -> None:
    entity_id = "urn:ngsi-ld:Building:\u202eevil\u200bzero"
    response = api.post("/entities", {"id": entity_id, "type": "Building"})
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:%E2%80%AEevil%E2%80%8Bzero"
    assert api.entity(entity_id)["id"] == entity_id
