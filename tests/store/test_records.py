"""Records, run against every backend: small JSON documents a unit of work reads and writes beside
the entities, in its transaction, versioned so that other processes can follow them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cityops.hub.context import ContextResolver
from cityops.hub.entity import parse_entity
from cityops.hub.errors import AlreadyExists
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


async def opened(make_store) -> Any:
    store = make_store()
    await store.open()
    return store


async def put(store: Any, kind: str, docs: dict[str, dict], tenant: str = "") -> None:
    def work(current, writes) -> None:
        for key, doc in docs.items():
            writes.put_record(kind, key, doc)

    await store.write(tenant, [], work)


async def delete(store: Any, kind: str, *keys: str) -> None:
    def work(current, writes) -> None:
        for key in keys:
            writes.delete_record(kind, key)

    await store.write("", [], work)


def create_once(kind: str, key: str, doc: dict) -> Callable[..., None]:
    """A unit creating a record that must not exist yet."""

    def work(current, writes) -> None:
        if writes.record(kind, key) is not None:
            raise AlreadyExists(f"{kind} {key} exists")
        writes.put_record(kind, key, doc)

    return work


def test_put_get_delete(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        doc = {"apikey": "k1", "nested": {"list": [1, 2.5, None, True]}, "text": "서울\u0000end"}
        await put(store, "device", {"d1": doc})
        assert await store.record("", "device", "d1") == doc
        assert await store.record("", "device", "d2") is None
        assert await store.record("", "group", "d1") is None
        await delete(store, "device", "d1")
        assert await store.record("", "device", "d1") is None
        assert await store.records("", "device") == []
        await put(store, "device", {"d1": {"again": 1}})
        assert await store.record("", "device", "d1") == {"again": 1}
        await store.close()

    run(scenario())


def test_named_records_are_loaded_into_the_unit(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await put(store, "device", {"d1": {"n": 1}, "d2": {"n": 2}})
        await delete(store, "device", "d2")
        seen: dict[str, Any] = {}

        def work(current, writes) -> None:
            seen["records"] = dict(writes.records)
            seen["d1"] = writes.record("device", "d1")
            with pytest.raises(KeyError):
                writes.record("device", "unnamed")
            writes.put_record("device", "unnamed", {"n": 3})
            seen["own write"] = writes.record("device", "unnamed")
            writes.delete_record("device", "d1")
            seen["own deletion"] = writes.record("device", "d1")

        await store.write("", [], work, [("device", "d1"), ("device", "d2"), ("device", "d3")])
        assert seen["records"] == {("device", "d1"): {"n": 1}, ("device", "d2"): None, ("device", "d3"): None}
        assert seen["d1"] == {"n": 1} and seen["own write"] == {"n": 3} and seen["own deletion"] is None
        assert await store.records("", "device") == [("unnamed", {"n": 3})]
        await store.close()

    run(scenario())


def test_records_are_written_with_the_entities_or_not_at_all(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        thing = parse_entity({"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "n": 1}, TERMS, now=NOW)

        def failing(current, writes) -> None:
            writes.insert(thing)
            writes.put_record("device", "d1", {"entity": thing["id"]})
            raise RuntimeError("crash after deciding")

        with pytest.raises(RuntimeError):
            await store.write("", [thing["id"]], failing, [("device", "d1")])
        assert await store.get("", thing["id"]) is None
        assert await store.record("", "device", "d1") is None
        assert await store.records_changed("", "device", 0) == (0, [])

        def both(current, writes) -> None:
            writes.insert(thing)
            writes.put_record("device", "d1", {"entity": thing["id"]})

        _, changes = await store.write("", [thing["id"]], both, [("device", "d1")])
        assert [c.kind for c in changes] == ["created"]
        assert await store.get("", thing["id"]) == thing
        assert await store.record("", "device", "d1") == {"entity": thing["id"]}
        await store.close()

    run(scenario())


def test_listing_by_key_with_limit_offset_and_prefix(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        keys = ["a", "a%", "a_b", "ab", "abc", "aé", "a\U0010ffff", "a\U0010ffffz", "b", "B", "Z"]
        await put(store, "item", {key: {"key": key} for key in keys})
        await put(store, "other", {"a1": {}})
        await delete(store, "item", "b")
        live = sorted(key for key in keys if key != "b")
        assert [key for key, _ in await store.records("", "item")] == live
        assert await store.record_count("", "item") == len(live)
        assert [key for key, _ in await store.records("", "item", limit=3, offset=2)] == live[2:5]
        assert [key for key, _ in await store.records("", "item", offset=8)] == live[8:]
        for prefix in ["a", "ab", "a%", "a_", "a\U0010ffff", "b", "", "zz"]:
            expected = [key for key in live if key.startswith(prefix)]
            found = await store.records("", "item", prefix=prefix)
            assert [key for key, _ in found] == expected, prefix
            assert all(doc == {"key": key} for key, doc in found)
            assert await store.record_count("", "item", prefix) == len(expected), prefix
        assert [key for key, _ in await store.records("", "item", prefix="a", limit=2, offset=1)] == ["a%", "a_b"]
        await store.close()

    run(scenario())


def test_records_changed_follows_puts_and_deletions(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        assert await store.records_changed("", "device", 0) == (0, [])
        await put(store, "device", {"d1": {"n": 1}, "d2": {"n": 2}})
        await put(store, "group", {"g1": {}})
        version, changed = await store.records_changed("", "device", 0)
        assert version == 3 and sorted(changed) == [("d1", {"n": 1}), ("d2", {"n": 2})]

        await put(store, "device", {"d1": {"n": 10}})
        await delete(store, "device", "d2")
        later, changed = await store.records_changed("", "device", version)
        assert later == version + 2 and changed == [("d1", {"n": 10}), ("d2", None)]
        assert await store.records_changed("", "device", later) == (later, [])
        # the tombstone is only for followers
        assert await store.record("", "device", "d2") is None
        assert await store.records("", "device") == [("d1", {"n": 10})]
        assert await store.record_count("", "device") == 1

        def no_op_deletion(current, writes) -> None:
            writes.delete_record("device", "d2")  # named and absent: nothing to delete, no new version

        await store.write("", [], no_op_deletion, [("device", "d2")])
        assert await store.records_changed("", "device", later) == (later, [])
        await store.close()

    run(scenario())


def test_trim_keeps_the_most_recently_written(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        for n in range(10):
            await put(store, "deadletter", {f"m{9 - n}": {"n": n}})  # keys in the opposite order of writing
        await put(store, "other", {"x": {}})
        await delete(store, "deadletter", "m0")
        assert await store.trim_records("", "deadletter", 3) == 6
        assert await store.records("", "deadletter") == [("m1", {"n": 8}), ("m2", {"n": 7}), ("m3", {"n": 6})]
        assert await store.trim_records("", "deadletter", 3) == 0
        assert await store.record_count("", "other") == 1
        assert await store.trim_records("", "deadletter", 0) == 3
        assert await store.record_count("", "deadletter") == 0
        assert await store.trim_records("nobody", "deadletter", 0) == 0
        await store.close()

    run(scenario())


def test_tenants_keep_their_own_records(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await put(store, "device", {"d1": {"of": "a"}}, tenant="city_a")
        assert await store.record("city_a", "device", "d1") == {"of": "a"}
        assert await store.record("", "device", "d1") is None
        assert await store.records("city_b", "device") == []
        assert await store.record_count("city_b", "device") == 0
        assert await store.record("city_b", "device", "d1") is None
        assert await store.records_changed("city_b", "device", 0) == (0, [])
        assert "city_a" in await store.tenants() and "city_b" not in await store.tenants()
        await put(store, "device", {"d1": {"of": "b"}}, tenant="city_b")
        assert await store.record("city_a", "device", "d1") == {"of": "a"}
        assert (await store.records_changed("city_b", "device", 0))[1] == [("d1", {"of": "b"})]
        await store.close()

    run(scenario())


def test_many_records_in_one_unit(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)
        await put(store, "receipt", {f"p{n:04d}": {"n": n} for n in range(0, 1200, 2)})
        keys = [("receipt", f"p{n:04d}") for n in range(1200)]

        def receive(current, writes) -> int:
            fresh = [key for kind, key in keys if writes.record(kind, key) is None]
            for key in fresh:
                writes.put_record("receipt", key, {"fresh": True})
            return len(fresh)

        fresh, _ = await store.write("", [], receive, keys)
        assert fresh == 600
        assert await store.record_count("", "receipt") == 1200
        assert await store.record("", "receipt", "p0001") == {"fresh": True}
        assert await store.record("", "receipt", "p0002") == {"n": 2}
        reopened = await opened(make_store)
        assert (await reopened.records_changed("", "receipt", 600))[0] == 1200
        await reopened.close()
        await store.close()

    run(scenario())


def test_concurrent_units_on_one_record_are_serialized(make_store) -> None:
    async def scenario() -> None:
        store = await opened(make_store)

        def increment(current, writes) -> int:
            counted = (writes.record("counter", "c") or {"n": 0})["n"] + 1
            writes.put_record("counter", "c", {"n": counted})
            return counted

        results = await asyncio.gather(*(store.write("", [], increment, [("counter", "c")]) for _ in range(50)))
        assert sorted(result for result, _ in results) == list(range(1, 51))
        assert await store.record("", "counter", "c") == {"n": 50}
        await store.close()

    run(scenario())


def test_two_stores_creating_one_record_leave_exactly_one(make_store) -> None:
    """Two processes (here two stores, each with its own connections) racing to create records."""

    async def scenario() -> None:
        first, second = await opened(make_store), await opened(make_store)
        await put(first, "receipt", {"p5": {"old": True}})
        await delete(first, "receipt", "p5")  # a tombstone: the row exists, the record does not
        units = [
            store.write("", [], create_once("receipt", f"p{n}", {"by": name}), [("receipt", f"p{n}")])
            for n in range(20)
            for name, store in (("first", first), ("second", second), ("first", first), ("second", second))
        ]
        outcomes = await asyncio.gather(*units, return_exceptions=True)
        for n in range(20):
            mine = outcomes[n * 4 : n * 4 + 4]
            assert sum(not isinstance(o, BaseException) for o in mine) == 1, mine
            assert all(isinstance(o, AlreadyExists) for o in mine if isinstance(o, BaseException)), mine
            assert (await first.record("", "receipt", f"p{n}"))["by"] in ("first", "second")
        await first.close()
        await second.close()

    run(scenario())


def test_postgres_creators_that_both_found_a_record_absent_do_not_both_create_it() -> None:
    """Both units read the record as absent before either commits (the tenant's record versions are
    held by a third connection meanwhile): the one that commits second collides and runs again."""

    async def scenario(url: str) -> None:
        first, second = PostgresStore(url), PostgresStore(url)
        await first.open()
        await second.open()
        await put(first, "other", {"x": {}})  # the tenant's version row exists from now on
        holder = await asyncpg.connect(url)
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT version FROM record_versions FOR UPDATE")
        racing = [
            asyncio.create_task(store.write("", [], create_once("device", "d1", {"by": name}), [("device", "d1")]))
            for name, store in (("first", first), ("second", second))
        ]
        await asyncio.sleep(0.5)  # both have read the record as absent and wait for the versions
        assert not any(task.done() for task in racing)
        await hold.rollback()
        outcomes = await asyncio.gather(*racing, return_exceptions=True)
        assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyExists", "tuple"], outcomes
        assert (await first.record("", "device", "d1"))["by"] in ("first", "second")
        await holder.close()
        await first.close()
        await second.close()

    with postgres_database() as url:
        run(scenario(url))


def test_sqlite_files_of_the_previous_schema_gain_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"

    async def write_and_read() -> None:
        store = SQLiteStore(str(path))
        await store.open()
        await put(store, "device", {"d1": {"n": 1}})
        assert await store.record("", "device", "d1") == {"n": 1}
        await store.close()

    run(write_and_read())
    with sqlite3.connect(path) as connection:  # as schema 5 left it
        connection.execute("DROP TABLE records")
        connection.execute("DELETE FROM meta WHERE key = 'record_version'")
        connection.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    connection.close()
    run(write_and_read())
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("6",)
    connection.close()
