"""The store contract, run against every backend: what a store keeps and how it answers queries.

The property test checks that a store's index-driven answer equals the plain decision
``EntityQuery.matches`` over all entities, for random entities and random ``q`` expressions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityops.hub.context import ContextResolver
from cityops.hub.entity import parse_entity
from cityops.hub.errors import NonexistentTenant
from cityops.hub.geo import GeoQuery, geometry_of
from cityops.hub.query import EntityQuery, Selector, parse_type_selection
from cityops.hub.query_language import parse_q
from cityops.store.postgres import PostgresStore
from cityops.store.sqlite import SQLiteStore
from conftest import postgres_database

TERMS = ContextResolver().core
NOW = "2026-11-23T00:00:00.000Z"




def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A function opening a store on this test's database (the same data each time it is called)."""
    if backend == "sqlite":
        yield lambda: SQLiteStore(str(tmp_path / "store.db"))
        return
    with postgres_database() as url:
        yield lambda: PostgresStore(url)


def entity(number: int, **attrs: Any) -> dict:
    body = {"id": f"urn:ngsi-ld:Thing:{number}", "type": attrs.pop("type", "Thing"), **attrs}
    return parse_entity(body, TERMS, now=NOW)


async def opened(make_store) -> Any:
    store = make_store()
    await store.open()
    return store


async def insert(store: Any, *entities: dict, tenant: str = "") -> None:
    def work(current, writes) -> None:
        for item in entities:
            writes.insert(item)

    await store.write(tenant, [e["id"] for e in entities], work)


async def delete(store: Any, *ids: str) -> None:
    def work(current, writes) -> None:
        for entity_id in ids:
            if current[entity_id] is not None:
                writes.delete(current[entity_id], NOW)

    await store.write("", list(ids), work)


def test_insert_get_replace_delete(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        first = entity(1, temperature=20)
        await insert(store, first)
        assert await store.get("", "urn:ngsi-ld:Thing:1") == first
        second = dict(first, attrs={**first["attrs"], TERMS.expand("temperature"): [{"type": "Property", "value": 25}]})
        _, changes = await store.write("", [first["id"]], lambda current, writes: writes.replace(second, current[first["id"]]))
        assert [c.kind for c in changes] == ["updated"] and changes[0].before == first
        found = await store.query("", EntityQuery(q=parse_q("temperature==25", TERMS)))
        assert [e["id"] for e in found.entities] == ["urn:ngsi-ld:Thing:1"]
        assert (await store.query("", EntityQuery(q=parse_q("temperature==20", TERMS)))).entities == []
        await delete(store, second["id"])
        assert await store.get("", "urn:ngsi-ld:Thing:1") is None
        assert (await store.query("", EntityQuery(q=parse_q("temperature==25", TERMS)))).entities == []
        await store.close()

    run(scenario())


def test_a_unit_of_work_that_raises_leaves_nothing(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)

        def failing(current, writes) -> None:
            writes.insert(entity(1, temperature=1))
            raise RuntimeError("crash in the middle")

        with pytest.raises(RuntimeError):
            await store.write("", ["urn:ngsi-ld:Thing:1"], failing)
        assert await store.get("", "urn:ngsi-ld:Thing:1") is None
        assert (await store.query("", EntityQuery(q=parse_q("temperature==1", TERMS)))).entities == []
        await insert(store, entity(2, temperature=1))
        assert [e["id"] for e in (await store.query("", EntityQuery(q=parse_q("temperature==1", TERMS)))).entities] == [
            "urn:ngsi-ld:Thing:2"
        ]
        await store.close()

    run(scenario())


def test_concurrent_units_see_each_others_writes_in_order(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await insert(store, entity(1, counter=0))
        counter = TERMS.expand("counter")

        def increment(current, writes) -> int:
            previous = current["urn:ngsi-ld:Thing:1"]
            value = previous["attrs"][counter][0]["value"] + 1
            writes.replace(dict(previous, attrs={counter: [{"type": "Property", "value": value}]}), previous)
            return value

        results = await asyncio.gather(*(store.write("", ["urn:ngsi-ld:Thing:1"], increment) for _ in range(200)))
        assert sorted(r[0] for r in results) == list(range(1, 201))
        assert (await store.get("", "urn:ngsi-ld:Thing:1"))["attrs"][counter][0]["value"] == 200
        found = await store.query("", EntityQuery(q=parse_q("counter==200", TERMS), count=True))
        assert found.count == 1
        await store.close()

    run(scenario())


def test_data_survives_reopening(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await insert(store, entity(1, temperature=3))
        await insert(store, entity(2, temperature=4), tenant="tenant-b")
        await store.close()
        again = await opened(make_store)
        assert (await again.get("", "urn:ngsi-ld:Thing:1"))["attrs"]
        assert await again.tenant_exists("tenant-b")
        assert (await again.get("tenant-b", "urn:ngsi-ld:Thing:2")) is not None
        with pytest.raises(NonexistentTenant):
            await again.get("tenant-c", "urn:ngsi-ld:Thing:2")
        await again.close()

    run(scenario())


def test_geo_query_uses_exact_geometry(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        points = [(126.9568, 37.3943), (126.9600, 37.3943), (126.9568, 37.4100)]
        await insert(store, *(entity(i, location={"type": "Point", "coordinates": [lon, lat]}) for i, (lon, lat) in enumerate(points)))
        near = GeoQuery("near;maxDistance==400", {"type": "Point", "coordinates": [126.9568, 37.3943]}, TERMS.expand("location"))
        result = await store.query("", EntityQuery(geo=near, count=True))
        assert [e["id"] for e in result.entities] == ["urn:ngsi-ld:Thing:0", "urn:ngsi-ld:Thing:1"]
        assert result.count == 2
        await store.close()

    run(scenario())


# -- property: index answers == plain decision --------------------------------------------------

scalars = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False).map(lambda f: round(f, 1)),
    st.sampled_from(["a", "b", "c", "ab", ""]),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.just([]),
    st.fixed_dictionaries({"k": scalars}),
    st.one_of(scalars, st.lists(scalars, max_size=2)).map(lambda v: {"@type": "DateTime", "@value": v}),
)
attribute = st.one_of(
    values.map(lambda v: {"type": "Property", "value": v}),
    st.sampled_from(["urn:x:1", "urn:x:2"]).map(lambda o: {"type": "Relationship", "object": o}),
    st.sampled_from(["a", "b"]).map(lambda t: {"type": "LanguageProperty", "languageMap": {"en": t, "ko": t + "c"}}),
    st.lists(scalars, max_size=3).map(lambda v: {"type": "ListProperty", "valueList": v}),
    st.sampled_from(["a", "b"]).map(lambda t: {"type": "VocabProperty", "vocab": t}),
    scalars.map(lambda v: {"type": "Property", "value": 1, "sub": {"type": "Property", "value": v}}),
    st.lists(st.sampled_from(["urn:x:1", "urn:x:2"]), max_size=2).map(
        lambda objects: {"type": "ListRelationship", "objectList": [{"object": o} for o in objects]}
    ),
    st.one_of(st.lists(scalars, min_size=1, max_size=2), st.fixed_dictionaries({"k": scalars})).map(
        lambda v: {"type": "JsonProperty", "json": v}
    ),
    st.tuples(values, values).map(
        lambda pair: [{"type": "Property", "value": pair[0]}, {"type": "Property", "value": pair[1], "datasetId": "urn:x:d"}]
    ),
)
entities = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["A", "B", ["A", "B"]])},
        optional={"p": attribute, "q": attribute, "r": attribute},
    ),
    min_size=1,
    max_size=12,
)


def literal_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


terms_text = st.one_of(
    st.tuples(st.sampled_from(["p", "q", "r", "p[k]", "p.sub", "!p", "!q"]), st.just(""), st.just("")).map(lambda t: t[0]),
    st.tuples(
        st.sampled_from(["p", "q", "r", "p[k]", "p.sub"]),
        st.sampled_from(["==", "!=", ">", ">=", "<", "<="]),
        scalars,
    ).map(lambda t: f"{t[0]}{t[1]}{literal_text(t[2])}"),
    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["==", "!="]), st.integers(-3, 0), st.integers(0, 3)).map(
        lambda t: f"{t[0]}{t[1]}{t[2]}..{t[3]}"
    ),
    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["==", "!="]), scalars, scalars).map(
        lambda t: f"{t[0]}{t[1]}{literal_text(t[2])}..{literal_text(t[3])}"
    ),
    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["==", "!="]), st.lists(scalars.filter(lambda s: s != ""), min_size=2, max_size=3)).map(
        lambda t: f"{t[0]}{t[1]}{','.join(literal_text(v) for v in t[2])}"
    ),
    st.sampled_from(['p~="^a"', 'q!~="b"', "p==urn:x:1", "q!=urn:x:2"]),
)
q_texts = st.recursive(
    terms_text,
    lambda inner: st.tuples(inner, st.sampled_from([";", "|"]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bodies=entities,
    q_text=st.one_of(st.none(), q_texts),
    types=st.sampled_from([None, "A", "B", "A;B", "A,B"]),
    ids=st.one_of(st.none(), st.lists(st.integers(0, 14), min_size=1, max_size=4)),
    attrs=st.one_of(st.none(), st.lists(st.sampled_from(["p", "q", "r", "nothing"]), min_size=1, max_size=2)),
    offset=st.integers(0, 3),
    count=st.booleans(),
)
def test_store_answers_equal_the_plain_decision(make_store, bodies, q_text, types, ids, attrs, offset, count) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.open()
        try:
            await delete(store, *(f"urn:ngsi-ld:Thing:{i}" for i in range(20)))
            stored = [entity(number, **body) for number, body in enumerate(bodies)]
            await insert(store, *stored)
            selector = Selector(
                types=parse_type_selection(types, TERMS) if types else None,
                ids=tuple(f"urn:ngsi-ld:Thing:{i}" for i in ids) if ids is not None else None,
            )
            query = EntityQuery(
                selectors=(selector,) if types or ids is not None else None,
                q=parse_q(q_text, TERMS) if q_text else None,
                attrs=tuple(TERMS.expand(a) for a in attrs) if attrs else None,
                limit=5,
                offset=offset,
                count=count,
            )
            expected = [e["id"] for e in stored if query.matches(e)]
            result = await store.query("", query)
            assert result.count == (len(expected) if count else None), q_text
            assert [e["id"] for e in result.entities] == expected[offset : offset + 5], q_text
        finally:
            await store.close()

    run(scenario())


def test_regular_expression_filters_use_python_semantics(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await insert(store, *(entity(number) for number in range(12)))
        query = EntityQuery(selectors=(Selector(id_pattern=re.compile(r"Thing:1\d$")),))
        assert [e["id"] for e in (await store.query("", query)).entities] == ["urn:ngsi-ld:Thing:10", "urn:ngsi-ld:Thing:11"]
        await store.close()

    run(scenario())



points = st.tuples(st.floats(126.90, 127.00), st.floats(37.35, 37.45)).map(lambda p: [round(p[0], 6), round(p[1], 6)])
boxes = st.tuples(points, st.floats(0.001, 0.05), st.floats(0.001, 0.05)).map(
    lambda b: [[b[0], [b[0][0] + b[1], b[0][1]], [b[0][0] + b[1], b[0][1] + b[2]], [b[0][0], b[0][1] + b[2]], b[0]]]
)
geometries = st.one_of(
    points.map(lambda p: {"type": "Point", "coordinates": p}),
    boxes.map(lambda ring: {"type": "Polygon", "coordinates": ring}),
    st.tuples(points, points).filter(lambda t: t[0] != t[1]).map(lambda t: {"type": "LineString", "coordinates": list(t)}),
)
geo_queries = st.one_of(
    st.tuples(st.sampled_from(["near;maxDistance==", "near;minDistance=="]), st.integers(10, 8000), points).map(
        lambda t: (f"{t[0]}{t[1]}", {"type": "Point", "coordinates": t[2]})
    ),
    st.tuples(st.sampled_from(["near;maxDistance==", "near;minDistance=="]), st.integers(8000, 120_000), points).map(
        lambda t: (f"{t[0]}{t[1]}", {"type": "Point", "coordinates": t[2]})
    ),
    st.tuples(st.sampled_from(["near;maxDistance==", "near;minDistance=="]), st.integers(10, 5000), geometries).map(
        lambda t: (f"{t[0]}{t[1]}", t[2])
    ),
    st.tuples(st.sampled_from(["within", "intersects", "disjoint"]), boxes).map(lambda t: (t[0], {"type": "Polygon", "coordinates": t[1]})),
    st.tuples(st.sampled_from(["contains", "intersects", "equals"]), points).map(lambda t: (t[0], {"type": "Point", "coordinates": t[1]})),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(located=st.lists(geometries, min_size=1, max_size=25), geo_query=geo_queries, offset=st.integers(0, 2), count=st.booleans())
def test_geo_answers_equal_the_plain_decision(make_store, located, geo_query, offset, count) -> None:
    georel, geometry = geo_query

    async def scenario() -> None:
        store = make_store()
        await store.open()
        try:
            await delete(store, *(f"urn:ngsi-ld:Thing:{i}" for i in range(30)))
            stored = [entity(number, location={"type": "GeoProperty", "value": g}) for number, g in enumerate(located)]
            await insert(store, *stored)
            query = EntityQuery(geo=GeoQuery(georel, geometry, TERMS.expand("location")), limit=10, offset=offset, count=count)
            expected = {e["id"] for e in stored if query.matches(e)}
            result = await store.query("", query)
            assert result.count == (len(expected) if count else None), georel
            returned = [e["id"] for e in result.entities]
            assert set(returned) <= expected and len(returned) == min(10, max(0, len(expected) - offset))
            if georel.startswith("near"):
                distance = {e["id"]: query.geo.distance_m(geometry_of(e["attrs"][TERMS.expand("location")][0]["value"]), None) for e in result.entities}
                ordered = [distance[i] for i in returned]
                slack = 0.001 * max(ordered, default=0) + 0.01  # points are ordered by a planar distance
                assert all(a <= b + slack for a, b in zip(ordered, ordered[1:])), "near results must come nearest first"
            else:
                in_order = [e["id"] for e in stored if e["id"] in expected]
                assert returned == in_order[offset : offset + 10], "other relations keep creation order"
        finally:
            await store.close()

    run(scenario())


def test_near_results_come_nearest_first(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        distances = [900, 100, 500, 300, 700]
        await insert(store, *(entity(i, location={"type": "Point", "coordinates": [126.95 + d / 88_000, 37.39]}) for i, d in enumerate(distances)))
        near = GeoQuery("near;maxDistance==1000", {"type": "Point", "coordinates": [126.95, 37.39]}, TERMS.expand("location"))
        result = await store.query("", EntityQuery(geo=near))
        assert [e["id"] for e in result.entities] == [f"urn:ngsi-ld:Thing:{i}" for i in (1, 3, 2, 4, 0)]
        await store.close()

    run(scenario())


def test_geometries_keep_every_digit_of_their_coordinates(make_store) -> None:
    """A polygon is within itself: a store that rounded its coordinates (PostGIS's GeoJSON output
    keeps 9 decimals unless told otherwise) would say it is not."""
    polygon = {"type": "Polygon", "coordinates": [[[127.0, 37.398438], [127.03125, 37.398438], [127.03125, 37.448437999999996], [127.0, 37.448437999999996], [127.0, 37.398438]]]}

    async def scenario() -> None:
        store = await opened(make_store)
        try:
            await insert(store, entity(0, location={"type": "GeoProperty", "value": polygon}))
            query = EntityQuery(geo=GeoQuery("within", polygon, TERMS.expand("location")), count=True)
            assert (await store.query("", query)).count == 1
        finally:
            await store.close()

    run(scenario())
