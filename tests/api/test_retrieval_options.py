"""Retrieval options: linked entities (join), nested pick/omit, orderBy, datasetId, lang preferences."""

from __future__ import annotations

import pytest

from conftest import Api


@pytest.fixture
def chain(api: Api) -> Api:
    """A camera on a street in a district: two hops of relationships."""
    api.create({"id": "urn:ngsi-ld:District:manan", "type": "District", "name": {"type": "Property", "value": "Manan-gu"}})
    api.create(
        {
            "id": "urn:ngsi-ld:Street:1",
            "type": "Street",
            "name": {"type": "Property", "value": "Anyang-ro"},
            "width": {"type": "Property", "value": 12},
            "inDistrict": {"type": "Relationship", "object": "urn:ngsi-ld:District:manan"},
        }
    )
    for number, name in ((1, "b camera"), (2, "a camera"), (3, "c camera")):
        api.create(
            {
                "id": f"urn:ngsi-ld:Camera:{number}",
                "type": "Camera",
                "name": {"type": "Property", "value": name, "quality": {"type": "Property", "value": 4 - number}},
                "onStreet": {"type": "Relationship", "object": "urn:ngsi-ld:Street:1"},
            }
        )
    return api


def test_join_inline_puts_the_linked_entity_in_the_relationship(chain: Api) -> None:
    body = chain.get("/entities/urn:ngsi-ld:Camera:1", params={"join": "inline", "joinLevel": "2"}).json()
    street = body["onStreet"]["entity"]
    assert street["id"] == "urn:ngsi-ld:Street:1" and street["width"]["value"] == 12
    assert street["inDistrict"]["entity"]["name"]["value"] == "Manan-gu"
    one_level = chain.get("/entities/urn:ngsi-ld:Camera:1", params={"join": "inline"}).json()
    assert "entity" not in one_level["onStreet"]["entity"]["inDistrict"]
    simplified = chain.get("/entities/urn:ngsi-ld:Camera:1", params={"join": "inline", "options": "keyValues"}).json()
    assert simplified["onStreet"]["id"] == "urn:ngsi-ld:Street:1"


def test_join_flat_lists_linked_entities_once(chain: Api) -> None:
    body = chain.get("/entities", params={"type": "Camera", "join": "flat", "joinLevel": "2"}).json()
    assert [e["id"] for e in body] == [
        "urn:ngsi-ld:Camera:1",
        "urn:ngsi-ld:Camera:2",
        "urn:ngsi-ld:Camera:3",
        "urn:ngsi-ld:Street:1",
        "urn:ngsi-ld:District:manan",
    ]


def test_nested_pick_projects_linked_entities(chain: Api) -> None:
    body = chain.get(
        "/entities/urn:ngsi-ld:Camera:1", params={"join": "inline", "joinLevel": "2", "pick": "id,onStreet{id,width}"}
    ).json()
    assert set(body) == {"id", "onStreet"}
    assert set(body["onStreet"]["entity"]) == {"id", "width"}
    omitted = chain.get("/entities/urn:ngsi-ld:Camera:1", params={"join": "inline", "omit": "name,onStreet{name}"}).json()
    assert "name" not in omitted and "name" not in omitted["onStreet"]["entity"]


@pytest.mark.parametrize("pick", ["id;name", "id,onStreet{name", "id,,name", "id,onStreet{}", "id,onStreet{{name}}"])
def test_malformed_pick_is_400(chain: Api, pick: str) -> None:
    assert chain.get("/entities/urn:ngsi-ld:Camera:1", params={"pick": pick}).status_code == 400


def test_pick_or_attrs_that_leave_nothing_are_404(chain: Api) -> None:
    assert chain.get("/entities/urn:ngsi-ld:Camera:1", params={"pick": "nothing"}).status_code == 404
    assert chain.get("/entities/urn:ngsi-ld:Camera:1", params={"attrs": "nothing"}).status_code == 404
    assert chain.get("/entities/urn:ngsi-ld:Camera:1", params={"attrs": "name", "pick": "id"}).status_code == 400


def test_order_by(chain: Api) -> None:
    def order(spec: str) -> list[str]:
        return [e["id"][-1] for e in chain.get("/entities", params={"type": "Camera", "orderBy": spec}).json()]

    assert order("name") == ["2", "1", "3"]
    assert order("name;desc") == ["3", "1", "2"]
    assert order("name.quality") == ["3", "2", "1"]
    assert order("id;desc") == ["3", "2", "1"]
    assert chain.get("/entities", params={"type": "Camera", "orderBy": "name;sideways"}).status_code == 400


def test_dataset_id_selects_instances(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Sign:1",
            "type": "Sign",
            "label": [
                {"type": "Property", "value": "Exit"},
                {"type": "Property", "value": "출구", "datasetId": "urn:ngsi-ld:Dataset:ko"},
            ],
        }
    )
    korean = api.get("/entities/urn:ngsi-ld:Sign:1", params={"datasetId": "urn:ngsi-ld:Dataset:ko"}).json()
    assert korean["label"] == {"type": "Property", "value": "출구", "datasetId": "urn:ngsi-ld:Dataset:ko"}
    default = api.get("/entities/urn:ngsi-ld:Sign:1", params={"datasetId": "@none"}).json()
    assert default["label"] == {"type": "Property", "value": "Exit"}
    none = api.get("/entities/urn:ngsi-ld:Sign:1", params={"datasetId": "urn:ngsi-ld:Dataset:fr"}).json()
    assert set(none) == {"id", "type"}


def test_lang_preferences(api: Api) -> None:
    api.create(
        {
            "id": "urn:ngsi-ld:Place:1",
            "type": "Place",
            "name": {"type": "LanguageProperty", "languageMap": {"ko": "안양", "en": "Anyang"}},
        }
    )
    def value(lang: str) -> str:
        return api.get("/entities/urn:ngsi-ld:Place:1", params={"lang": lang, "options": "keyValues"}).json()["name"]

    assert value("en") == "Anyang"
    assert value("de,en;q=0.9,ko;q=0.5") == "Anyang"
    assert value("ko-KR") == "안양"
    assert value("*") == "안양"
