"""The temporal API: every change lands in history; retrieval, queries, representations, aggregation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from cityops.api.app import create_app
from cityops.settings import Settings
from conftest import Api

SENSOR = "urn:ngsi-ld:Sensor:1"
READINGS = [12, 18, 30, 25, 41, 39, 55, 60]  # one an hour from midnight


@pytest.fixture
def history(api: Api) -> Api:
    api.create({"id": SENSOR, "type": "Sensor", "pm10": {"type": "Property", "value": READINGS[0], "observedAt": "2026-11-01T00:00:00Z"}})
    for hour, value in enumerate(READINGS[1:], start=1):
        response = api.patch(f"/entities/{SENSOR}/attrs/pm10", {"value": value, "observedAt": f"2026-11-01T{hour:02d}:00:00Z"})
        assert response.status_code == 204
    api.post(f"/entities/{SENSOR}/attrs", {"status": {"type": "Property", "value": "ok", "observedAt": "2026-11-01T03:30:00Z"}})
    return api


def temporal(api: Api, entity_id: str = SENSOR, **params: str) -> dict:
    response = api.get(f"/temporal/entities/{entity_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_change_is_kept_as_an_instance(history: Api) -> None:
    body = temporal(history)
    assert [i["value"] for i in body["pm10"]] == READINGS
    assert [i["observedAt"] for i in body["pm10"]][:2] == ["2026-11-01T00:00:00Z", "2026-11-01T01:00:00Z"]
    assert all(i["instanceId"].startswith("urn:ngsi-ld:attribute:instance:") for i in body["pm10"])
    assert len({i["instanceId"] for i in body["pm10"]}) == len(READINGS)
    assert [i["value"] for i in body["status"]] == ["ok"]


def test_timerel_and_last_n(history: Api) -> None:
    between = temporal(history, timerel="between", timeAt="2026-11-01T02:00:00Z", endTimeAt="2026-11-01T05:00:00Z", attrs="pm10")
    assert [i["value"] for i in between["pm10"]] == READINGS[2:5]
    before = temporal(history, timerel="before", timeAt="2026-11-01T02:00:00Z", attrs="pm10")
    assert [i["value"] for i in before["pm10"]] == READINGS[:2]
    after = temporal(history, timerel="after", timeAt="2026-11-01T05:00:00Z", attrs="pm10")
    assert [i["value"] for i in after["pm10"]] == READINGS[5:]  # after includes timeAt; before and between's end do not
    last = temporal(history, lastN="3", attrs="pm10")
    assert [i["value"] for i in last["pm10"]] == READINGS[-3:]


def test_temporal_values_representation(history: Api) -> None:
    body = temporal(history, options="temporalValues", attrs="pm10", lastN="2")
    assert body["pm10"] == {"type": "Property", "values": [[55, "2026-11-01T06:00:00Z"], [60, "2026-11-01T07:00:00Z"]]}


def test_aggregated_values_match_a_plain_computation(history: Api) -> None:
    body = temporal(
        history,
        options="aggregatedValues",
        aggrMethods="totalCount,distinctCount,sum,avg,min,max,stddev,sumsq",
        aggrPeriodDuration="PT4H",
        timerel="between",
        timeAt="2026-11-01T00:00:00Z",
        endTimeAt="2026-11-01T08:00:00Z",
        attrs="pm10",
    )["pm10"]
    for index, window in enumerate((READINGS[:4], READINGS[4:])):
        start = f"2026-11-01T{index * 4:02d}:00:00Z"
        assert body["totalCount"][index] == [len(window), start, f"2026-11-01T{index * 4 + 4:02d}:00:00Z"]
        assert body["distinctCount"][index][0] == len(set(window))
        assert body["sum"][index][0] == sum(window)
        assert body["avg"][index][0] == pytest.approx(statistics.fmean(window))
        assert body["min"][index][0] == min(window) and body["max"][index][0] == max(window)
        assert body["sumsq"][index][0] == sum(v * v for v in window)
        assert body["stddev"][index][0] == pytest.approx(statistics.pstdev(window))
    whole = temporal(history, options="aggregatedValues", aggrMethods="avg", aggrPeriodDuration="PT0S", attrs="pm10")["pm10"]
    assert len(whole["avg"]) == 1 and math.isclose(whole["avg"][0][0], statistics.fmean(READINGS))


def test_aggregation_buckets_start_at_the_earliest_instance_of_any_attribute(history: Api) -> None:
    body = temporal(history, options="aggregatedValues", aggrMethods="totalCount,max", aggrPeriodDuration="PT2H")
    assert [count for count, *_ in body["pm10"]["totalCount"]] == [2, 2, 2, 2]
    assert body["status"]["totalCount"] == [[1, "2026-11-01T02:00:00Z", "2026-11-01T04:00:00Z"]]
    assert body["status"]["max"] == [[None, "2026-11-01T02:00:00Z", "2026-11-01T04:00:00Z"]]  # no number to compare
    by_modification = temporal(
        history, options="aggregatedValues", aggrMethods="totalCount", aggrPeriodDuration="PT1H", timeproperty="modifiedAt", attrs="pm10"
    )
    assert sum(count for count, *_ in by_modification["pm10"]["totalCount"]) == len(READINGS)


def test_history_outlives_the_entity_and_records_its_deletion(history: Api) -> None:
    assert history.delete(f"/entities/{SENSOR}").status_code == 204
    instances = temporal(history, attrs="pm10")["pm10"]
    assert [i["value"] for i in instances] == [*READINGS, "urn:ngsi-ld:null"]
    assert "deletedAt" in instances[-1] and "deletedAt" not in instances[0]
    deleted = temporal(history, timeproperty="deletedAt")
    assert [(name, [i["value"] for i in deleted[name]]) for name in ("pm10", "status")] == [
        ("pm10", ["urn:ngsi-ld:null"]),
        ("status", ["urn:ngsi-ld:null"]),
    ]


def test_deleting_an_attribute_is_recorded_in_history(history: Api) -> None:
    assert history.delete(f"/entities/{SENSOR}/attrs/status").status_code == 204
    deleted = temporal(history, timeproperty="deletedAt", options="temporalValues")
    assert set(deleted) == {"id", "type", "status"}
    assert deleted["status"]["values"][0][0] == "urn:ngsi-ld:null"


def test_temporal_query_by_type(history: Api) -> None:
    history.create({"id": "urn:ngsi-ld:Sensor:2", "type": "Sensor", "pm10": {"type": "Property", "value": 7, "observedAt": "2026-11-01T02:30:00Z"}})
    history.create({"id": "urn:ngsi-ld:Camera:1", "type": "Camera", "status": "on"})
    response = history.get(
        "/temporal/entities",
        params={"type": "Sensor", "timerel": "after", "timeAt": "2026-11-01T02:00:00Z", "attrs": "pm10", "options": "temporalValues", "count": "true"},
    )
    assert response.status_code == 200 and response.headers["NGSILD-Results-Count"] == "2"
    values = {e["id"]: [v for v, _ in e["pm10"]["values"]] for e in response.json()}
    assert values == {SENSOR: READINGS[2:], "urn:ngsi-ld:Sensor:2": [7]}  # after is inclusive
    posted = history.post(
        "/temporal/entityOperations/query",
        {"type": "Query", "entities": [{"type": "Sensor"}], "attrs": ["pm10"], "temporalQ": {"timerel": "before", "timeAt": "2026-11-01T01:30:00Z"}},
    )
    assert posted.status_code == 200
    # Sensor:2 has no instance in that window, so a temporal query does not return it
    assert {e["id"]: len(e.get("pm10", [])) for e in posted.json()} == {SENSOR: 2}


def test_batch_upserts_are_historised(api: Api) -> None:
    batch = [{"id": f"urn:ngsi-ld:Meter:{i}", "type": "Meter", "reading": {"type": "Property", "value": i}} for i in range(50)]
    assert api.post("/entityOperations/upsert", batch).status_code == 201
    batch = [{"id": f"urn:ngsi-ld:Meter:{i}", "type": "Meter", "reading": {"type": "Property", "value": i + 100}} for i in range(50)]
    assert api.post("/entityOperations/upsert", batch).status_code == 204
    body = temporal(api, "urn:ngsi-ld:Meter:7")
    assert [i["value"] for i in body["reading"]] == [7, 107]


@pytest.mark.parametrize(
    "params",
    [
        {"timerel": "during", "timeAt": "2026-11-01T00:00:00Z"},
        {"timerel": "before"},
        {"timerel": "between", "timeAt": "2026-11-01T00:00:00Z"},
        {"timerel": "after", "timeAt": "yesterday"},
        {"lastN": "0"},
        {"options": "aggregatedValues"},
        {"options": "aggregatedValues", "aggrMethods": "median"},
        {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"},
        {"timeproperty": "seenAt"},
    ],
)
def test_bad_temporal_parameters_are_400(history: Api, params: dict) -> None:
    assert history.get(f"/temporal/entities/{SENSOR}", params=params).status_code == 400


def test_unknown_history_is_404(api: Api) -> None:
    assert api.get("/temporal/entities/urn:ngsi-ld:Sensor:none").status_code == 404


@pytest.fixture
def paged(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(replace(settings, temporal_instance_limit=5)), raise_server_exceptions=False) as client:
        api = Api(client)
        minutes = {"speed": range(0, 8), "load": range(3, 6)}  # speed has more instances than the limit
        for name, span in minutes.items():
            for minute in span:
                api.post("/temporal/entities", {"id": SENSOR, "type": "Sensor", name: [{"value": minute, "observedAt": f"2026-11-01T00:{minute:02d}:00Z"}]})
        yield api


def test_more_instances_than_the_limit_are_paginated_by_time(paged: Api) -> None:
    forward = paged.get(f"/temporal/entities/{SENSOR}")
    assert forward.status_code == 206
    assert forward.headers["Content-Range"] == "date-time 2026-11-01T00:00:00Z-2026-11-01T00:04:00Z/*"
    assert [i["value"] for i in forward.json()["speed"]] == [0, 1, 2, 3, 4]
    assert [i["value"] for i in forward.json()["load"]] == [3, 4]  # cut to the same range
    backward = paged.get(f"/temporal/entities/{SENSOR}", params={"lastN": "7"})
    assert backward.status_code == 206
    assert backward.headers["Content-Range"] == "date-time 2026-11-01T00:07:00Z-2026-11-01T00:03:00Z/7"
    assert [i["value"] for i in backward.json()["speed"]] == [3, 4, 5, 6, 7]
    within = paged.get(f"/temporal/entities/{SENSOR}", params={"lastN": "3"})
    assert within.status_code == 200 and "Content-Range" not in within.headers


def test_pick_omit_and_dataset_filters(history: Api) -> None:
    history.patch(f"/entities/{SENSOR}/attrs", {"pm10": {"value": 99, "datasetId": "urn:ngsi-ld:Dataset:lab", "observedAt": "2026-11-01T09:00:00Z"}})
    assert set(temporal(history, pick="pm10")) == {"pm10"}
    assert set(temporal(history, omit="pm10,type")) == {"id", "status"}
    assert history.get(f"/temporal/entities/{SENSOR}", params={"pick": "nothing"}).status_code == 404
    assert history.get(f"/temporal/entities/{SENSOR}", params={"pick": "pm10", "attrs": "pm10"}).status_code == 400
    lab = temporal(history, datasetId="urn:ngsi-ld:Dataset:lab", options="temporalValues")
    assert lab["pm10"] == {"type": "Property", "datasetId": "urn:ngsi-ld:Dataset:lab", "values": [[99, "2026-11-01T09:00:00Z"]]}
    both = temporal(history, attrs="pm10", options="temporalValues")["pm10"]
    assert [d.get("datasetId") for d in both] == [None, "urn:ngsi-ld:Dataset:lab"]  # one object per dataset


def test_temporal_query_filters_and_orders_by_current_state(history: Api) -> None:
    history.create({"id": "urn:ngsi-ld:Sensor:0", "type": "Sensor", "pm10": {"value": 5, "observedAt": "2026-11-01T00:30:00Z"}})
    params = {"type": "Sensor", "timerel": "after", "timeAt": "2026-11-01T00:00:00Z"}
    ordered = history.get("/temporal/entities", params={**params, "orderBy": "pm10"}).json()
    assert [e["id"] for e in ordered] == ["urn:ngsi-ld:Sensor:0", SENSOR]
    ordered = history.get("/temporal/entities", params={**params, "orderBy": "pm10;desc"}).json()
    assert [e["id"] for e in ordered] == [SENSOR, "urn:ngsi-ld:Sensor:0"]
    matching = history.get("/temporal/entities", params={**params, "q": "pm10>50"}).json()
    assert [e["id"] for e in matching] == [SENSOR]
    assert history.get("/temporal/entities", params={"id": SENSOR, "timerel": "after", "timeAt": "2026-11-01T00:00:00Z"}).status_code == 400


def test_scope_changes_are_kept_in_history(api: Api) -> None:
    api.create({"id": SENSOR, "type": "Sensor", "scope": "/Anyang/Manan", "pm10": {"type": "Property", "value": 1}})
    assert api.delete(f"/entities/{SENSOR}/attrs/scope").status_code == 204
    body = temporal(api)
    assert [i["value"] for i in body["scope"]] == [["/Anyang/Manan"], []]
    assert "deletedAt" in body["scope"][1]
