"""Geo-queries against real Anyang-si coordinates, GeoJSON output, and bad geometries."""

from __future__ import annotations

import json

import pytest

from cityops.geography.korea import city
from conftest import Api, camera

CITY_HALL = (126.9568, 37.3943)  # Anyang City Hall
BEOMGYE = (126.9730, 37.3900)  # Beomgye station, about 1.5 km east


def polygon(*corners: tuple[float, float]) -> list[list[list[float]]]:
    ring = [list(c) for c in corners]
    return [ring + [ring[0]]]


@pytest.fixture
def cameras(api: Api) -> Api:
    entities = [
        camera(1, *CITY_HALL),
        camera(2, CITY_HALL[0] + 0.003, CITY_HALL[1]),  # ~265 m east
        camera(3, *BEOMGYE),
        {
            "id": "urn:ngsi-ld:Park:1",
            "type": "Park",
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Polygon", "coordinates": polygon((126.950, 37.390), (126.960, 37.390), (126.960, 37.398), (126.950, 37.398))},
            },
        },
        {
            "id": "urn:ngsi-ld:Road:1",
            "type": "Road",
            "location": {"type": "GeoProperty", "value": {"type": "LineString", "coordinates": [[126.940, 37.394], [126.980, 37.394]]}},
        },
    ]
    assert api.post("/entityOperations/upsert", entities).status_code == 201
    return api


def geo(api: Api, georel: str, geometry: str, coordinates, **extra: str) -> list[str]:
    params = {"georel": georel, "geometry": geometry, "coordinates": json.dumps(coordinates), "limit": "100", **extra}
    response = api.get("/entities", params=params)
    assert response.status_code == 200, response.text
    return sorted(e["id"].split(":", 2)[2] for e in response.json())


def test_near_max_distance_in_metres(cameras: Api) -> None:
    assert geo(cameras, "near;maxDistance==100", "Point", list(CITY_HALL), type="Camera") == ["Camera:001"]
    assert geo(cameras, "near;maxDistance==300", "Point", list(CITY_HALL), type="Camera") == ["Camera:001", "Camera:002"]
    assert geo(cameras, "near;maxDistance==2000", "Point", list(CITY_HALL), type="Camera") == ["Camera:001", "Camera:002", "Camera:003"]


def test_near_min_distance(cameras: Api) -> None:
    assert geo(cameras, "near;minDistance==1000", "Point", list(CITY_HALL), type="Camera") == ["Camera:003"]


def test_near_to_non_point_geometries(cameras: Api) -> None:
    # the road runs east-west at latitude 37.394: 0.0003° (~33 m) north of it is near within 50 m
    assert geo(cameras, "near;maxDistance==50", "Point", [126.945, 37.3943], type="Road") == ["Road:1"]
    assert geo(cameras, "near;maxDistance==20", "Point", [126.945, 37.3943], type="Road") == []


def test_within_contains_intersects(cameras: Api) -> None:
    box = polygon((126.950, 37.390), (126.9615, 37.390), (126.9615, 37.399), (126.950, 37.399))
    assert geo(cameras, "within", "Polygon", box) == ["Camera:001", "Camera:002", "Park:1"]
    assert geo(cameras, "contains", "Point", list(CITY_HALL)) == ["Camera:001", "Park:1"]
    assert geo(cameras, "intersects", "LineString", [[126.955, 37.380], [126.955, 37.400]]) == ["Park:1", "Road:1"]


def test_disjoint_equals_overlaps(cameras: Api) -> None:
    box = polygon((126.950, 37.390), (126.9615, 37.390), (126.9615, 37.399), (126.950, 37.399))
    assert geo(cameras, "disjoint", "Polygon", box, type="Camera") == ["Camera:003"]
    assert geo(cameras, "equals", "Point", list(BEOMGYE)) == ["Camera:003"]
    shifted = polygon((126.955, 37.392), (126.965, 37.392), (126.965, 37.400), (126.955, 37.400))
    assert geo(cameras, "overlaps", "Polygon", shifted) == ["Park:1"]


def test_within_the_real_boundary_of_anyang(cameras: Api) -> None:
    anyang = city("Anyang").geojson()
    cameras.create(camera(9, 126.99, 37.43))  # in Gwacheon, just outside Anyang
    assert "Camera:009" not in geo(cameras, "within", anyang["type"], anyang["coordinates"], type="Camera")
    assert "Camera:001" in geo(cameras, "within", anyang["type"], anyang["coordinates"], type="Camera")


def test_geo_query_combines_with_q_and_count(cameras: Api) -> None:
    cameras.patch("/entities/urn:ngsi-ld:Camera:002/attrs/status", {"value": "off"})
    params = {
        "type": "Camera",
        "q": 'status=="on"',
        "georel": "near;maxDistance==2000",
        "geometry": "Point",
        "coordinates": json.dumps(list(CITY_HALL)),
        "count": "true",
    }
    response = cameras.get("/entities", params=params)
    assert response.headers["NGSILD-Results-Count"] == "2"


def test_geojson_representation(cameras: Api) -> None:
    response = cameras.get("/entities", params={"type": "Camera", "options": "keyValues"}, headers={"Accept": "application/geo+json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    body = response.json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) == 3
    feature = body["features"][0]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Point"
    assert feature["properties"]["status"] == "on"
    single = cameras.get("/entities/urn:ngsi-ld:Camera:001", headers={"Accept": "application/geo+json"}).json()
    assert single["id"] == "urn:ngsi-ld:Camera:001" and single["geometry"]["coordinates"] == list(CITY_HALL)


@pytest.mark.parametrize(
    "value, words",
    [
        ({"type": "Point", "coordinates": [200, 37]}, "longitude"),
        ({"type": "Point", "coordinates": [126, 95]}, "latitude"),
        ({"type": "Point", "coordinates": ["126", 37]}, "finite numbers"),
        ({"type": "Polygon", "coordinates": [[[126.9, 37.3], [127.0, 37.3], [127.0, 37.4]]]}, "at least four"),
        ({"type": "Polygon", "coordinates": [[[126.9, 37.3], [127.0, 37.3], [127.0, 37.4], [126.95, 37.45]]]}, "end where it starts"),
        ({"type": "Circle", "coordinates": [126, 37]}, "geometry type"),
        ({"type": "LineString", "coordinates": [[126, 37]]}, "two positions"),
    ],
)
def test_bad_geometry_is_a_clear_400(api: Api, value: dict, words: str) -> None:
    entity = {"id": "urn:ngsi-ld:Thing:geo", "type": "Thing", "location": {"type": "GeoProperty", "value": value}}
    response = api.post("/entities", entity)
    assert response.status_code == 400
    assert words.lower() in response.json()["detail"].lower()


@pytest.mark.parametrize(
    "params",
    [
        {"georel": "near", "geometry": "Point", "coordinates": "[126.9,37.3]"},
        {"georel": "near;maxDistance==-5", "geometry": "Point", "coordinates": "[126.9,37.3]"},
        {"georel": "around", "geometry": "Point", "coordinates": "[126.9,37.3]"},
        {"georel": "within", "geometry": "Point"},
        {"georel": "within", "geometry": "Polygon", "coordinates": "not json"},
        {"georel": "within", "geometry": "Polygon", "coordinates": "[1,2]"},
    ],
)
def test_bad_geo_query_is_400(api: Api, params: dict) -> None:
    response = api.get("/entities", params={"type": "Camera", **params})
    assert response.status_code == 400, response.text
