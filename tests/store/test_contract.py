"""The store contract, run against every backend: what a store keeps and how it answers queries.

The property test checks that a store's index-driven answer equals the plain decision
``EntityQuery.matches`` over all entities, for random entities and random ``q`` expressions.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityops.hub.context import ContextResolver
from cityops.hub.entity import parse_entity
from cityops.hub.errors import NonexistentTenant
from cityops.hub.geo import GeoQuery
from cityops.hub.query import EntityQuery, Selector, parse_type_selection
from cityops.hub.query_language import parse_q
from cityops.store.sqlite import SQLiteStore

TERMS = ContextResolver().core
NOW = "2026-11-23T00:00:00.000Z"


def sqlite_store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(str(tmp_path / "store.db"))


BACKENDS: dict[str, Callable[[Path], Any]] = {"sqlite": sqlite_store}


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request, tmp_path: Path):
    return lambda: BACKENDS[request.param](tmp_path)


def entity(number: int, **attrs: Any) -> dict:
    body = {"id": f"urn:ngsi-ld:Thing:{number}", "type": attrs.pop("type", "Thing"), **attrs}
    return parse_entity(body, TERMS, now=NOW)


async def opened(make_store) -> Any:
    store = make_store()
    await store.open()
    return store


def test_insert_get_replace_delete(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        first = entity(1, temperature=20)
        async with store.transaction("") as tx:
            await tx.insert(first)
        assert await store.get("", "urn:ngsi-ld:Thing:1") == first
        second = dict(first, attrs={**first["attrs"], TERMS.expand("temperature"): [{"type": "Property", "value": 25}]})
        async with store.transaction("") as tx:
            await tx.replace(second, first)
        found = await store.query("", EntityQuery(q=parse_q("temperature==25", TERMS)))
        assert [e["id"] for e in found.entities] == ["urn:ngsi-ld:Thing:1"]
        assert (await store.query("", EntityQuery(q=parse_q("temperature==20", TERMS)))).entities == []
        async with store.transaction("") as tx:
            await tx.delete(second)
        assert await store.get("", "urn:ngsi-ld:Thing:1") is None
        await store.close()

    run(scenario())


def test_a_failed_transaction_leaves_nothing(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        with pytest.raises(RuntimeError):
            async with store.transaction("") as tx:
                await tx.insert(entity(1, temperature=1))
                raise RuntimeError("crash in the middle")
        assert await store.get("", "urn:ngsi-ld:Thing:1") is None
        assert (await store.query("", EntityQuery(q=parse_q("temperature==1", TERMS)))).entities == []
        async with store.transaction("") as tx:
            await tx.insert(entity(2, temperature=1))
        assert [e["id"] for e in (await store.query("", EntityQuery(q=parse_q("temperature==1", TERMS)))).entities] == [
            "urn:ngsi-ld:Thing:2"
        ]
        await store.close()

    run(scenario())


def test_savepoint_undoes_only_its_block(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        async with store.transaction("") as tx:
            await tx.insert(entity(1))
            with pytest.raises(ValueError):
                async with tx.savepoint():
                    await tx.insert(entity(2))
                    raise ValueError("this one fails")
        assert await store.get("", "urn:ngsi-ld:Thing:1") is not None
        assert await store.get("", "urn:ngsi-ld:Thing:2") is None
        await store.close()

    run(scenario())


def test_data_survives_reopening(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        async with store.transaction("") as tx:
            await tx.insert(entity(1, temperature=3))
        async with store.transaction("tenant-b") as tx:
            await tx.insert(entity(2, temperature=4))
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
        async with store.transaction("") as tx:
            for i, (lon, lat) in enumerate([(126.9568, 37.3943), (126.9600, 37.3943), (126.9568, 37.4100)]):
                await tx.insert(entity(i, location={"type": "Point", "coordinates": [lon, lat]}))
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
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.just([]), st.fixed_dictionaries({"k": scalars}))
attribute = st.one_of(
    values.map(lambda v: {"type": "Property", "value": v}),
    st.sampled_from(["urn:x:1", "urn:x:2"]).map(lambda o: {"type": "Relationship", "object": o}),
    st.sampled_from(["a", "b"]).map(lambda t: {"type": "LanguageProperty", "languageMap": {"en": t, "ko": t + "c"}}),
    st.lists(scalars, max_size=3).map(lambda v: {"type": "ListProperty", "valueList": v}),
    st.sampled_from(["a", "b"]).map(lambda t: {"type": "VocabProperty", "vocab": t}),
    scalars.map(lambda v: {"type": "Property", "value": 1, "sub": {"type": "Property", "value": v}}),
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
@given(bodies=entities, q_text=q_texts, types=st.sampled_from([None, "A", "B", "A;B", "A,B"]), offset=st.integers(0, 3))
def test_store_answers_equal_the_plain_decision(make_store, bodies, q_text, types, offset) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.open()
        try:
            async with store.transaction("") as tx:
                for existing in await tx.get_many([f"urn:ngsi-ld:Thing:{i}" for i in range(20)]):
                    await tx.delete((await tx.get(existing)))
                stored = []
                for number, body in enumerate(bodies):
                    item = entity(number, **body)
                    await tx.insert(item)
                    stored.append(item)
            selectors = (Selector(types=parse_type_selection(types, TERMS)),) if types else None
            query = EntityQuery(selectors=selectors, q=parse_q(q_text, TERMS), limit=5, offset=offset, count=True)
            expected = [e["id"] for e in stored if query.matches(e)]
            result = await store.query("", query)
            assert result.count == len(expected), q_text
            assert [e["id"] for e in result.entities] == expected[offset : offset + 5], q_text
        finally:
            await store.close()

    run(scenario())


def test_regular_expression_filters_use_python_semantics(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        async with store.transaction("") as tx:
            for number in range(12):
                await tx.insert(entity(number))
        query = EntityQuery(selectors=(Selector(id_pattern=re.compile(r"Thing:1\d$")),))
        assert [e["id"] for e in (await store.query("", query)).entities] == ["urn:ngsi-ld:Thing:10", "urn:ngsi-ld:Thing:11"]
        await store.close()

    run(scenario())


async def _unused() -> AsyncIterator[None]:  # pragma: no cover - keeps typing quiet for async generators
    yield None
