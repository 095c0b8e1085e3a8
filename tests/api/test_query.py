"""Queries: type expressions, ids, idPattern, q, attrs, paging, count, POST query."""

from __future__ import annotations

import pytest

from conftest import Api, camera, link


@pytest.fixture
def city(api: Api) -> Api:
    entities = []
    for i in range(1, 31):
        entities.append(
            {
                "id": f"urn:ngsi-ld:AirQualityObserved:{i:03d}",
                "type": "AirQualityObserved",
                "pm10": {"type": "Property", "value": i * 5, "unitCode": "GQ", "observedAt": f"2026-11-{(i % 28) + 1:02d}T10:00:00Z"},
                "station": {"type": "Property", "value": f"station-{i % 3}"},
                "ok": {"type": "Property", "value": i % 2 == 0},
                "tags": {"type": "Property", "value": ["urban", "road"] if i % 5 == 0 else ["park"]},
                "address": {"type": "Property", "value": {"district": "Manan-gu" if i <= 15 else "Dongan-gu"}},
                "refSensor": {"type": "Relationship", "object": f"urn:ngsi-ld:Sensor:{i % 4}"},
            }
        )
    entities.append(camera(1))
    entities.append({**camera(2), "type": ["Camera", "Device"]})
    response = api.post("/entityOperations/upsert", entities)
    assert response.status_code == 201
    return api


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["id"].rsplit(":", 1)[1] for e in response.json()]


def query(api: Api, **params: str) -> list[str]:
    params.setdefault("limit", "100")
    return ids(api.get("/entities", params=params))


def test_type_expressions(city: Api) -> None:
    assert query(city, type="Camera") == ["001", "002"]
    assert query(city, type="Camera;Device") == ["002"]
    assert len(query(city, type="Camera,AirQualityObserved")) == 32
    assert len(query(city, type="Device|AirQualityObserved")) == 31
    assert query(city, type="(Camera;Device)|Nothing") == ["002"]
    assert query(city, type="Unknown") == []


def test_id_and_id_pattern(city: Api) -> None:
    assert query(city, id="urn:ngsi-ld:Camera:002,urn:ngsi-ld:Camera:001", type="Camera") == ["001", "002"]
    assert query(city, idPattern="^urn:ngsi-ld:AirQualityObserved:00[1-3]$", local="true") == ["001", "002", "003"]
    only_ids = city.get("/entities", params={"id": "urn:ngsi-ld:Camera:001"})
    assert only_ids.status_code == 400  # an id list alone is not a query (ETSI 019_03_05)
    assert query(city, type="AirQualityObserved", idPattern="01[0-2]$") == ["010", "011", "012"]


@pytest.mark.parametrize(
    "q, expected",
    [
        ("pm10>140", ["029", "030"]),
        ("pm10>=145", ["029", "030"]),
        ("pm10<10", ["001"]),
        ("pm10<=10", ["001", "002"]),
        ("pm10==25", ["005"]),
        ("pm10==25,30", ["005", "006"]),
        ("pm10==10..20", ["002", "003", "004"]),
        ("pm10!=10..140", ["001", "029", "030"]),
        ('station=="station-0";pm10>100', ["021", "024", "027", "030"]),
        ('pm10<10|station=="nope"', ["001"]),
        ("(pm10<10|pm10>145);ok==true", ["030"]),
        ("ok==false;pm10<20", ["001", "003"]),
        ('tags=="road";pm10<50', ["005"]),
        ('address[district]=="Dongan-gu";pm10<85', ["016"]),
        ("refSensor==urn:ngsi-ld:Sensor:3;pm10<60", ["003", "007", "011"]),
        ('station~="-2$";pm10<30', ["002", "005"]),
        ('station!~="station-[01]";pm10<30', ["002", "005"]),
        ("pm10.observedAt>=2026-11-28T00:00:00Z", ["027"]),
        ('pm10.unitCode=="GQ";pm10<10', ["001"]),
        ("nothing", []),
        ("!nothing;pm10<10", ["001"]),
        ('pm10=="5"', []),
    ],
)
def test_q_language(city: Api, q: str, expected: list[str]) -> None:
    assert query(city, type="AirQualityObserved", q=q) == expected


def test_q_with_user_context_terms(city: Api) -> None:
    city.create(
        {"id": "urn:ngsi-ld:AirQualityObserved:ctx", "type": "AirQualityObserved", "pm10": {"type": "Property", "value": 999}},
        headers=link(),
    )
    assert ids(city.get("/entities", params={"type": "AirQualityObserved", "q": "pm10>500"}, headers=link())) == ["ctx"]
    assert ids(city.get("/entities", params={"type": "AirQualityObserved", "q": "pm10>500"})) == []


@pytest.mark.parametrize("q", ["pm10>", "(pm10>1", "pm10>>1", "pm10==\"open", "pm10~=\"[\"", ";", "pm10>1;;pm10<2", ""])
def test_malformed_q_is_400(city: Api, q: str) -> None:
    response = city.get("/entities", params={"type": "AirQualityObserved", "q": q})
    assert response.status_code == 400
    assert response.json()["type"].endswith("BadRequestData")


def test_attrs_selects_entities_with_any_of_them_and_projects(city: Api) -> None:
    response = city.get("/entities", params={"attrs": "range", "limit": "100"})
    assert ids(response) == ["001", "002"]
    assert set(response.json()[0]) == {"id", "type", "range"}


def test_paging_and_count(city: Api) -> None:
    first = city.get("/entities", params={"type": "AirQualityObserved", "limit": "10", "count": "true"})
    assert first.headers["NGSILD-Results-Count"] == "30"
    assert ids(first) == [f"{i:03d}" for i in range(1, 11)]
    third = city.get("/entities", params={"type": "AirQualityObserved", "limit": "10", "offset": "20"})
    assert ids(third) == [f"{i:03d}" for i in range(21, 31)]
    assert "NGSILD-Results-Count" not in third.headers
    only_count = city.get("/entities", params={"type": "AirQualityObserved", "limit": "0", "count": "true", "q": "pm10>100"})
    assert only_count.json() == [] and only_count.headers["NGSILD-Results-Count"] == "10"
    default = city.get("/entities", params={"type": "AirQualityObserved"})
    assert len(default.json()) == 20


def test_paging_errors(city: Api) -> None:
    assert city.get("/entities", params={"type": "Camera", "limit": "-1"}).status_code == 400
    assert city.get("/entities", params={"type": "Camera", "limit": "x"}).status_code == 400
    assert city.get("/entities", params={"type": "Camera", "limit": "0"}).status_code == 400
    too_many = city.get("/entities", params={"type": "Camera", "limit": "100000"})
    assert too_many.status_code == 403 and too_many.json()["type"].endswith("TooManyResults")


def test_post_query(city: Api) -> None:
    body = {"type": "Query", "entities": [{"type": "AirQualityObserved"}], "q": "pm10>140", "attrs": ["pm10"]}
    response = city.post("/entityOperations/query", body, params={"count": "true"})
    assert ids(response) == ["029", "030"]
    assert response.headers["NGSILD-Results-Count"] == "2"
    assert set(response.json()[0]) == {"id", "type", "pm10"}
    several = {"type": "Query", "entities": [{"type": "Camera"}, {"id": "urn:ngsi-ld:AirQualityObserved:007", "type": "AirQualityObserved"}]}
    assert sorted(ids(city.post("/entityOperations/query", several))) == ["001", "002", "007"]
    assert city.post("/entityOperations/query", {"entities": []}).status_code == 400


def test_key_values_query_and_ld_json(city: Api) -> None:
    response = city.get(
        "/entities", params={"type": "Camera", "options": "keyValues"}, headers={"Accept": "application/ld+json"}
    )
    assert response.headers["content-type"] == "application/ld+json"
    assert all(e["@context"].endswith("core-context-v1.8.jsonld") for e in response.json())
    assert response.json()[0]["status"] == "on"


def test_scope_query(api: Api) -> None:
    api.create({**camera(1), "scope": "/Anyang/Manan"})
    api.create({**camera(2), "scope": ["/Anyang/Dongan", "/Gwacheon"]})
    api.create(camera(3))
    assert query(api, type="Camera", scopeQ="/Anyang/#") == ["001", "002"]
    assert query(api, type="Camera", scopeQ="/Gwacheon") == ["002"]
    assert query(api, type="Camera", scopeQ="/Anyang/+") == ["001", "002"]
