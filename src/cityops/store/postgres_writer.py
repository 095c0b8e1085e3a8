"""Writing to PostgreSQL: each unit of work is one transaction on a pooled connection.

The named entities are read with ``FOR UPDATE`` (in id order, so two writers never wait on each
other in a circle), the unit decides, the write hooks compute the notifications owed, and the
rows go out in a few statements: entities and their index rows with ``unnest`` arrays, history
with COPY, records (``postgres_records``), the outbox last. Several processes may write at once:
two units creating the same entity (or record) collide on the primary key, and the loser runs
again (it then sees the entity).

A history instance needs its month's partition. Partitions are made ahead of time; when a write
brings an instance for a month that has none (old data, say), the transaction is abandoned, the
partition is created in a transaction of its own, and the unit runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from ..hub.changes import Change, RecordKey, UnitOfWork, WriteSet
from ..hub.entity import Entity, Instance
from ..hub.errors import ServiceUnavailable
from . import postgres_records as record_sql
from . import postgres_subscriptions as subscription_sql
from .contract import SubscriptionRecord, WriteHook
from .history import history_row, recorded_instances
from .postgres_connection import insert_rows
from .postgres_schema import Iris, Partitions, month_of
from .value_index import STRING, ValueRows, as_float, value_rows

log = logging.getLogger("cityops.store")

ATTEMPTS = 8
ANALYZE_FIRST, ANALYZE_MOST = 500, 50_000  # rows created in this process between refreshes of the tables' statistics
_RETRIED = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
HISTORY_COLUMNS = {
    "tid": "bigint", "attr_id": "int", "observed": "float8", "created": "float8", "modified": "float8", "deleted": "float8",
    "dataset": "text", "num": "float8", "doc": "json",
}  # fmt: skip
VALUE_COLUMNS = {"t": "int", "rid": "bigint", "attr_id": "int", "kind": "smallint", "num": "float8", "txt": "text"}


class _NeedPartitions(Exception):
    def __init__(self, months: set[tuple[int, int]]):
        super().__init__(f"history partitions missing for {sorted(months)}")
        self.months = months


class _HookReads:
    """``contract.HookReads`` for hooks running in a worker thread: each read runs on the event loop,
    on the unit's connection, inside its transaction (the loop is free: it awaits the hook)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connection: asyncpg.Connection, t: int):
        self.loop = loop
        self.connection = connection
        self.t = t

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def subscription_changes(self, since: int) -> tuple[int, list[SubscriptionRecord]]:
        return self._run(subscription_sql.changes_since(self.connection, self.t, since))

    def entities(self, entity_ids: list[str]) -> dict[str, Entity]:
        async def read() -> dict[str, Entity]:
            rows = await self.connection.fetch(
                "SELECT id, doc FROM entities WHERE t = $1 AND id = ANY($2::text[])", self.t, entity_ids
            )
            return dict(rows)

        return self._run(read())


class Writer:
    def __init__(self, pool: asyncpg.Pool, side_pool: asyncpg.Pool, iris: Iris, partitions: Partitions):
        self.pool = pool
        self.side_pool = side_pool  # short transactions of their own: new IRIs, new partitions
        self.iris = iris
        self.partitions = partitions
        self.hooks: list[WriteHook] = []
        self._created_since_analyze = 0
        self._created = 0
        self._analyze_after = ANALYZE_FIRST
        self._records_inserted = 0
        self._records_analyzed = False
        self._analyzing: asyncio.Task[None] | None = None

    async def write(
        self, t: int, tenant: str, entity_ids: list[str], work: UnitOfWork[Any], records: Sequence[RecordKey] = ()
    ) -> tuple[Any, list[Change]]:
        for attempt in range(ATTEMPTS):
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    outcome = await self._unit(connection, t, tenant, sorted(set(entity_ids)), work, sorted(set(records)))
                self._maybe_analyze()  # after the commit: statistics taken before it would see none of the rows
                return outcome
            except _NeedPartitions as need:
                await self.partitions.ensure(self.side_pool, need.months)
            except _RETRIED as error:
                if attempt == ATTEMPTS - 1:
                    raise ServiceUnavailable(f"the write collided with others {ATTEMPTS} times; try again ({error})") from error
                log.debug("store: write collided with another (%s); running it again", error)
                await asyncio.sleep(0.005 * (attempt + 1))
        raise ServiceUnavailable("history partitions could not be created; see the log")

    async def _unit(
        self,
        connection: asyncpg.Connection,
        t: int,
        tenant: str,
        entity_ids: list[str],
        work: UnitOfWork[Any],
        record_keys: list[RecordKey],
    ) -> tuple[Any, list[Change]]:
        rows: list[asyncpg.Record] = []
        if entity_ids:
            rows = await connection.fetch(
                "SELECT id, rid, doc FROM entities WHERE t = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE", t, entity_ids
            )
        current: dict[str, Entity | None] = dict.fromkeys(entity_ids)
        rids: dict[str, int] = {}
        for entity_id, rid, doc in rows:
            current[entity_id] = doc
            rids[entity_id] = rid
        initial = {entity_id: doc for entity_id, doc in current.items() if doc is not None}
        named, present = await record_sql.lock(connection, t, record_keys) if record_keys else ({}, set())
        writes = WriteSet(tenant, records=named)
        result = work(current, writes)
        changes, docs = writes.changes, writes.final_records()
        owed = await self._owed(connection, t, tenant, changes) if changes else []
        if changes:
            await self._apply(connection, t, changes, initial, rids)
        if docs:  # after the entities: the tenant's record versions stay locked from here to commit
            self._records_inserted += await record_sql.write(connection, t, docs, named, present)
        if owed:
            await subscription_sql.insert_outbox(connection, t, owed)
        return result, changes

    async def close(self) -> None:
        if self._analyzing is not None and not self._analyzing.done():
            self._analyzing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._analyzing

    def _note_created(self, count: int) -> None:
        self._created_since_analyze += count
        self._created += count

    def _maybe_analyze(self) -> None:
        """After a bulk load, refresh the planner's statistics and the visibility map at once (in
        the background) instead of waiting for autovacuum: queries right after a load need them."""
        if self._analyzing is not None and not self._analyzing.done():
            return
        tables = []
        if self._created_since_analyze >= self._analyze_after:
            self._created_since_analyze = 0
            # like autovacuum's rule (a share of the table), from a small start: plans made without
            # statistics are ten times slower on the first thousand entities already
            self._analyze_after = min(ANALYZE_MOST, max(ANALYZE_FIRST, self._created // 4))
            tables += ["entities", "entity_types", "attr_values", "geo"]
        if self._records_inserted >= ANALYZE_FIRST and not self._records_analyzed:
            # once: without statistics the planner finds both indexes of records equally good for
            # reading records by key, and one of them reads every record of the kind; with any
            # (autovacuum keeps them from then on) it tells them apart
            self._records_analyzed = True
            tables.append("records")
        if tables:
            self._analyzing = asyncio.create_task(self._analyze(tables), name="postgres-analyze")

    async def _analyze(self, tables: list[str]) -> None:
        try:
            async with self.side_pool.acquire() as connection:
                await connection.execute(f"VACUUM (ANALYZE) {', '.join(tables)}", timeout=600)
        except Exception as error:  # statistics only help; autovacuum will do it later
            log.warning("store: refreshing table statistics after a bulk load failed (%s)", error)

    async def _owed(self, connection: asyncpg.Connection, t: int, tenant: str, changes: list[Change]) -> list[tuple[str, bytes]]:
        if not self.hooks:
            return []
        reads = _HookReads(asyncio.get_running_loop(), connection, t)
        return await asyncio.to_thread(lambda: [row for hook in self.hooks for row in hook(tenant, changes, reads)])

    # -- rows ----------------------------------------------------------------------------------------
    async def _apply(
        self, connection: asyncpg.Connection, t: int, changes: list[Change], initial: Mapping[str, Entity], rids: dict[str, int]
    ) -> None:
        final: dict[str, Entity | None] = {}
        for change in changes:
            final[change.entity_id] = change.after
        instances = [(change, recorded_instances(change)) for change in changes]
        names = {name for _, found in instances for name, _, _ in found}
        for entity in final.values():
            if entity is not None:
                names.update(entity["type"])
                names.update(entity["attrs"])
        for entity in initial.values():
            names.update(entity["type"])
        numbers = await self.iris.ids_of(self.side_pool, names)

        history = []
        uncovered: set[float] = set()
        replaced: list[tuple[int, int, float, str | None]] = []
        tids = await self._tids(connection, t, changes, numbers, instances)
        for change, found in instances:
            tid = tids.get(change.entity_id)
            if tid is None:
                continue  # an entity without attributes deleted before it had any history: nothing to record
            for name, instance, replaces in found:
                row = history_row(tid, numbers[name], instance, change.at)
                if not self.partitions.covers(row[2]):
                    uncovered.add(row[2])
                if replaces:
                    replaced.append((tid, row[1], row[2], row[6]))
                history.append(row)
        if uncovered:
            raise _NeedPartitions({month_of(seconds) for seconds in uncovered})

        await self._entities(connection, t, final, initial, rids, numbers)
        if replaced:
            await connection.executemany(
                "DELETE FROM history WHERE tid = $1 AND attr_id = $2 AND observed = $3 AND dataset IS NOT DISTINCT FROM $4",
                replaced,
            )
        if history:
            await insert_rows(connection, "history", HISTORY_COLUMNS, history)

    async def _tids(
        self,
        connection: asyncpg.Connection,
        t: int,
        changes: list[Change],
        numbers: dict[str, int],
        instances: list[tuple[Change, list[tuple[str, Instance, bool]]]],
    ) -> dict[str, int]:
        """The temporal ids of the entities that get history, creating them (or updating their types)."""
        latest: dict[str, list[int]] = {}
        known_only: set[str] = set()  # deleted entities without attributes: history only if they have some already
        for change, _ in instances:
            entity = change.after if change.after is not None else change.before
            assert entity is not None
            if change.after is None and not entity["attrs"]:
                known_only.add(change.entity_id)
                continue
            latest[change.entity_id] = [numbers[name] for name in entity["type"]]
        if not latest and not known_only:
            return {}
        tids: dict[str, int] = {}
        stale: dict[str, list[int]] = {}
        for entity_id, tid, types in await connection.fetch(
            "SELECT id, tid, types FROM temporal_entities WHERE t = $1 AND id = ANY($2::text[])", t, [*latest, *known_only]
        ):
            tids[entity_id] = tid
            if entity_id in latest and list(types) != latest[entity_id]:
                stale[entity_id] = latest[entity_id]
        for entity_id, types in latest.items():
            if entity_id not in tids:
                stale[entity_id] = types
        if stale:
            for entity_id, tid in await connection.fetch(
                "INSERT INTO temporal_entities (t, id, types) SELECT $1, u.id, u.types::int[] FROM unnest($2::text[], $3::text[]) u(id, types) "
                "ON CONFLICT (t, id) DO UPDATE SET types = excluded.types RETURNING id, tid",
                t,
                list(stale),
                ["{" + ",".join(map(str, types)) + "}" for types in stale.values()],
            ):
                tids[entity_id] = tid
        return tids

    async def _entities(
        self,
        connection: asyncpg.Connection,
        t: int,
        final: dict[str, Entity | None],
        initial: Mapping[str, Entity],
        rids: dict[str, int],
        numbers: dict[str, int],
    ) -> None:
        created = {entity_id: entity for entity_id, entity in final.items() if entity is not None and entity_id not in rids}
        deleted = [rids[entity_id] for entity_id, entity in final.items() if entity is None and entity_id in rids]
        updated = {
            entity_id: entity
            for entity_id, entity in final.items()
            if entity is not None and entity_id in rids and entity != initial[entity_id]
        }
        if deleted:
            for table in ("entities", "entity_types", "geo", "attr_values"):
                await connection.execute(f"DELETE FROM {table} WHERE t = $1 AND rid = ANY($2::bigint[])", t, deleted)
        if updated:
            await connection.execute(
                "UPDATE entities e SET doc = u.doc FROM unnest($2::text[], $3::json[]) u(id, doc) WHERE e.t = $1 AND e.id = u.id",
                t,
                list(updated),
                [orjson.dumps(entity) for entity in updated.values()],
            )
        new_rids: dict[str, int] = {}
        if created:
            self._note_created(len(created))
            for entity_id, rid in await connection.fetch(
                "INSERT INTO entities (t, id, doc) SELECT $1, u.id, u.doc FROM unnest($2::text[], $3::json[]) u(id, doc) RETURNING id, rid",
                t,
                list(created),
                [orjson.dumps(entity) for entity in created.values()],
            ):
                new_rids[entity_id] = rid

        type_rows: list[tuple[int, int]] = []
        retyped: list[int] = []
        geo_rows: list[tuple[int, int, int, str]] = []
        regeo: list[tuple[int, int]] = []
        values: ValueRows = {}
        revalued: list[tuple[int, int]] = []
        for entity_id, entity in created.items():
            rid = new_rids[entity_id]
            type_rows += [(rid, numbers[name]) for name in entity["type"]]
            geo_rows += _geo_rows(rid, entity["attrs"], entity["attrs"].keys(), numbers)
            for name, instances in entity["attrs"].items():
                values.update(value_rows(numbers[name], rid, instances))
        for entity_id, entity in updated.items():
            rid, before = rids[entity_id], initial[entity_id]
            if entity["type"] != before["type"]:
                retyped.append(rid)
                type_rows += [(rid, numbers[name]) for name in entity["type"]]
            old, new = before["attrs"], entity["attrs"]
            changed = [n for n in old.keys() | new.keys() if old.get(n) != new.get(n)]
            for name in changed:
                if name in old:
                    revalued.append((rid, numbers[name]))
                if name in new:
                    values.update(value_rows(numbers[name], rid, new[name]))
            located = [n for n in changed if _has_geo(old.get(n)) or _has_geo(new.get(n))]
            regeo += [(rid, numbers[name]) for name in located if _has_geo(old.get(name))]
            geo_rows += _geo_rows(rid, new, [n for n in located if n in new], numbers)
        if retyped:
            await connection.execute("DELETE FROM entity_types WHERE t = $1 AND rid = ANY($2::bigint[])", t, retyped)
        for table, pairs in (("geo", regeo), ("attr_values", revalued)):
            if pairs:
                await connection.execute(
                    f"DELETE FROM {table} g USING unnest($2::bigint[], $3::int[]) u(rid, attr_id) "
                    "WHERE g.t = $1 AND g.rid = u.rid AND g.attr_id = u.attr_id",
                    t,
                    [rid for rid, _ in pairs],
                    [attr_id for _, attr_id in pairs],
                )
        if values:
            await insert_rows(connection, "attr_values", VALUE_COLUMNS, [(t, *_value_row(key)) for key in values])
        if type_rows:
            await connection.execute(
                "INSERT INTO entity_types (t, rid, type_id) SELECT $1, * FROM unnest($2::bigint[], $3::int[]) ON CONFLICT DO NOTHING",
                t,
                [rid for rid, _ in type_rows],
                [type_id for _, type_id in type_rows],
            )
        if geo_rows:
            await connection.execute(
                "INSERT INTO geo (t, rid, attr_id, seq, geom, geog) SELECT $1, u.rid, u.attr_id, u.seq, x.g, "
                "CASE WHEN GeometryType(x.g) = 'POINT' THEN x.g::geography END "
                "FROM unnest($2::bigint[], $3::int[], $4::int[], $5::text[]) u(rid, attr_id, seq, g), "
                "LATERAL (SELECT ST_SetSRID(ST_GeomFromGeoJSON(u.g), 4326) AS g) x",
                t,
                [row[0] for row in geo_rows],
                [row[1] for row in geo_rows],
                [row[2] for row in geo_rows],
                [row[3] for row in geo_rows],
            )


def _value_row(key: tuple[int, int, Any, int]) -> tuple[int, int, int, float | None, str | None]:
    """(rid, attr_id, kind, num, txt) of a value-index key; a PRESENT row keeps its attribute kind in num."""
    attr_id, kind, value, rid = key
    if kind == STRING:
        return rid, attr_id, kind, None, value
    return rid, attr_id, kind, as_float(value), None


def _has_geo(instances: list[Instance] | None) -> bool:
    return bool(instances) and any(i.get("type") == "GeoProperty" for i in instances)  # type: ignore[union-attr]


def _geo_rows(rid: int, attrs: dict[str, list[Instance]], names: Any, numbers: dict[str, int]) -> list[tuple[int, int, int, str]]:
    rows = []
    for name in names:
        for seq, instance in enumerate(attrs[name]):
            if instance.get("type") == "GeoProperty" and isinstance(instance.get("value"), dict):
                rows.append((rid, numbers[name], seq, orjson.dumps(instance["value"]).decode()))
    return rows
