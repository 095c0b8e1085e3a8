"""Writing a tenant's SQLite database: one thread, one connection, group commit.

Units of work queue up for the writer thread. It takes whatever is waiting (up to a limit), runs
each unit inside one transaction (load the named entities, let the unit decide, buffer its
writes) and commits once for the group; then it tells each caller its outcome. A unit that
refuses (raises while deciding) leaves no trace and does not affect the others in its group. A
failure while writing (a full disk, say) rolls the whole group back and every caller in it is
told (503); payloads are validated before they reach the writer, so that is never bad input.

Writes are buffered in ``PendingWrites`` and reach SQLite as a few ``executemany`` calls before the
next read in the transaction or at commit, so a batch of a thousand entities costs a handful of
statements. SQLite releases the GIL while it works, so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from ..hub.changes import Change, RecordKey, UnitOfWork, WriteSet
from ..hub.entity import Entity, Instance
from ..hub.errors import ServiceUnavailable
from ..hub.geo import bounds_of
from . import sqlite_records as record_sql
from . import sqlite_subscriptions as subscription_sql
from .contract import SubscriptionRecord, WriteHook
from .history import history_row, recorded_instances
from .sqlite_schema import IriCache, attribute_rows, load_kinds

T = TypeVar("T")
log = logging.getLogger("cityops.store")

MAX_GROUP = 256  # units of work committed together at most
CHECKPOINT_EVERY_CHANGES = 500  # copy the WAL back after this many changed entities (a short WAL keeps lookups fast)...
CHECKPOINT_EVERY_SECONDS = 1.0  # ...or this often, whichever comes first
WAL_RESET_BYTES = 64 * 1024 * 1024  # past this the writer finishes a checkpoint itself, so the WAL can restart


class PendingWrites:
    """Writes of the running transaction not yet sent to SQLite, keyed so that later writes win."""

    def __init__(self, next_rid: int, next_gid: int, next_tid: int, record_version: int):
        self.next_rid = next_rid
        self.next_gid = next_gid
        self.next_tid = next_tid
        self.record_version = record_version  # the last one taken
        self.records: dict[RecordKey, tuple[str, str, str | None, int]] = {}  # (kind, key, doc, version)
        self.history: list[tuple[Any, ...]] = []
        self.history_replaced: list[tuple[int, int, float, str | None]] = []  # (tid, attr_id, observed, dataset)
        self.outbox: list[tuple[str, bytes]] = []
        self.temporal_entities: dict[int, tuple[int, str, bytes]] = {}
        self.new_ids: dict[str, int] = {}
        self.deleted_ids: set[str] = set()
        self.entity_rows: dict[int, tuple[int, str, bytes]] = {}
        self.doc_updates: dict[int, bytes] = {}
        self.entity_deletes: list[tuple[int]] = []
        self.type_rows: dict[int, list[int]] = {}
        self.type_deletes: list[tuple[int, int]] = []
        # rows added, per (rid, attr_id) so a later change in the same transaction replaces them
        self.attr_rows: dict[tuple[int, int], tuple[dict[tuple[int, int, Any, int], int], list[Any], list[Any]]] = {}
        self.value_deletes: list[tuple[int, int, Any, int]] = []
        self.point_deletes: list[tuple[int, int, int, int]] = []
        self.shape_deletes: list[tuple[int, int]] = []
        self.new_kinds: list[tuple[int, int]] = []

    @property
    def empty(self) -> bool:
        return not (
            self.entity_rows or self.doc_updates or self.entity_deletes or self.type_rows or self.type_deletes
            or self.attr_rows or self.value_deletes or self.point_deletes or self.shape_deletes or self.new_kinds
            or self.history or self.history_replaced or self.temporal_entities or self.outbox or self.records
        )


@dataclass
class _Job:
    entity_ids: list[str]
    work: UnitOfWork[Any] | None  # None: a plain call (subscriptions, outbox bookkeeping)
    tenant: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    call: Callable[[sqlite3.Connection], Any] | None = None
    records: Sequence[RecordKey] = ()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle_on_loop() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(settle_on_loop)
        except RuntimeError:  # the caller's event loop has closed: nobody is waiting any more
            pass


class Writer:
    """The writer of one tenant database. ``checkpoint_connection`` is a second connection a
    background thread uses to copy the WAL back into the database file, so that work stays off
    the writer's path (the writer's own automatic checkpoints are off)."""

    def __init__(self, connection: sqlite3.Connection, checkpoint_connection: sqlite3.Connection, name: str, path: str):
        self.connection = connection
        self._wal_path = path + "-wal"
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("PRAGMA journal_size_limit=67108864")  # a reset WAL shrinks back to 64 MiB
        self.iris = IriCache(connection)
        self.kinds = load_kinds(connection)
        self.tids: dict[str, int] = {}  # entity id -> temporal id, for entities known to have history
        self.hooks: list[WriteHook] = []
        self.pending: PendingWrites | None = None
        self.rids: dict[str, int] = {}  # entity id -> rid of the entities read in the current transaction
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"cityops-writer-{name}", daemon=True)
        self._checkpoints = checkpoint_connection
        self._checkpoint_due = threading.Event()
        self._changes_written = 0  # only the writer thread changes it; the checkpointer only reads it
        self._closing = False
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name=f"cityops-checkpoint-{name}", daemon=True)
        self._thread.start()
        self._checkpointer.start()

    async def submit(
        self, tenant: str, entity_ids: list[str], work: UnitOfWork[Any], records: Sequence[RecordKey] = ()
    ) -> tuple[Any, list[Change]]:
        return await self._submit(_Job(entity_ids, work, tenant, *self._loop_future(), records=records))

    async def call(self, tenant: str, call: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``call`` with the writer's connection inside a write transaction; if it raises, none of
        its statements are kept and the exception propagates."""
        result, _ = await self._submit(_Job([], None, tenant, *self._loop_future(), call=call))
        return result

    # -- what write hooks read (contract.HookReads) ---------------------------------------------
    def subscription_changes(self, since: int) -> tuple[int, list[SubscriptionRecord]]:
        return subscription_sql.changes_since(self.connection, since)

    def entities(self, entity_ids: list[str]) -> dict[str, Entity]:
        return {k: v for k, v in self.get_many(entity_ids).items() if v is not None}

    @staticmethod
    def _loop_future() -> tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        return loop, loop.create_future()

    async def _submit(self, job: _Job) -> Any:
        if not self._thread.is_alive():
            raise ServiceUnavailable("the store's writer has stopped; see the log")
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._closing = True
        self._checkpoint_due.set()
        self._checkpointer.join()
        try:
            self.connection.execute("PRAGMA optimize")
            self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.connection.close()
        self._checkpoints.close()

    def _limit_wal(self) -> None:
        """Under sustained writes a background checkpoint never catches up with the end of the WAL,
        so the WAL (and every page lookup through its index) would grow without bound. When it is
        large the writer completes a checkpoint itself; its next transaction then restarts the WAL,
        which journal_size_limit truncates."""
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size > WAL_RESET_BYTES:
            try:
                self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as error:
                log.warning("store: WAL checkpoint failed (%s); will retry", error)

    def _checkpoint_loop(self) -> None:
        """Copy committed pages from the WAL into the database file now and then, off the writer's path."""
        checkpointed = 0
        while not self._closing:
            self._checkpoint_due.wait(timeout=CHECKPOINT_EVERY_SECONDS)
            self._checkpoint_due.clear()
            written = self._changes_written
            if written == checkpointed:
                continue
            checkpointed = written
            try:
                self._checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as error:  # the next round retries; the WAL keeps every change meanwhile
                log.warning("store: WAL checkpoint failed (%s); will retry", error)

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            group = [job]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    stop = True
                    break
                group.append(extra)
            try:
                self._run_group(group)
            except BaseException:  # the thread must outlive any failure: its callers are told and it goes on
                log.exception("store: the writer failed on a group of %d write(s)", len(group))
                for failed in group:
                    failed.settle(error=ServiceUnavailable("the database could not save the change; see the log"))
            if stop:
                return

    def _run_group(self, group: list[_Job]) -> None:
        done: list[tuple[_Job, Any, list[Change]]] = []
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            self.pending = None
            self.rids = {}
            for job in group:
                if job.call is not None:
                    self.flush()
                    self.connection.execute("SAVEPOINT call")
                    try:
                        result = job.call(self.connection)
                    except BaseException as error:
                        self.connection.execute("ROLLBACK TO call")
                        self.connection.execute("RELEASE call")
                        job.settle(error=error)
                        continue
                    self.connection.execute("RELEASE call")
                    done.append((job, result, []))
                    continue
                assert job.work is not None
                try:
                    current = self.get_many(job.entity_ids)
                    writes = WriteSet(job.tenant, records=self.get_records(job.records))
                    result = job.work(current, writes)
                    owed = [row for hook in self.hooks for row in hook(job.tenant, writes.changes, self)]
                    # serialized here, so that a document JSON cannot hold fails its unit only
                    records = {k: orjson.dumps(doc).decode() if doc is not None else None for k, doc in writes.final_records().items()}
                except BaseException as error:  # the unit refused (NgsiError) or failed: nothing of it was applied
                    job.settle(error=error)
                    continue
                self.apply(writes.changes)
                self._put_records(records)
                self._writes().outbox.extend(owed)
                done.append((job, result, writes.changes))
            self.flush()
            self.connection.execute("COMMIT")
            before = self._changes_written
            self._changes_written += sum(len(changes) for _, _, changes in done) or 1
            if self._changes_written // CHECKPOINT_EVERY_CHANGES != before // CHECKPOINT_EVERY_CHANGES:
                self._checkpoint_due.set()
            self._limit_wal()
        except BaseException as error:
            log.exception("store: a write transaction failed and was rolled back")
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.iris.clear()
            self.tids.clear()
            try:
                self.kinds = load_kinds(self.connection)
            except sqlite3.Error:
                self.kinds = {}
            failure = ServiceUnavailable(f"the database could not save the change: {error}")
            for job, _, _ in done:
                job.settle(error=failure)
            for job in group:
                if not any(job is d[0] for d in done):
                    job.settle(error=failure)
            return
        finally:
            self.pending = None
        for job, result, changes in done:
            job.settle((result, changes))

    # -- reads inside the transaction ------------------------------------------------------------
    def get_many(self, entity_ids: list[str]) -> dict[str, Entity | None]:
        self.flush()
        found: dict[str, Entity | None] = dict.fromkeys(entity_ids)
        for start in range(0, len(entity_ids), 500):
            chunk = entity_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, entity_id, doc in self.connection.execute(f"SELECT rid, id, doc FROM entities WHERE id IN ({marks})", chunk):
                found[entity_id] = orjson.loads(doc)
                self.rids[entity_id] = rid
        return found

    def get_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, dict[str, Any] | None]:
        self.flush()
        return record_sql.load(self.connection, keys)

    def _rid_of(self, entity_id: str) -> int | None:
        writes = self._writes()
        if entity_id in writes.new_ids:
            return writes.new_ids[entity_id]
        if entity_id in writes.deleted_ids:
            return None
        if entity_id in self.rids:  # read with the entity in this transaction
            return self.rids[entity_id]
        row = self.connection.execute("SELECT rid FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return row[0] if row else None

    # -- buffering writes -------------------------------------------------------------------------
    def _writes(self) -> PendingWrites:
        if self.pending is None:
            c = self.connection
            next_rid = c.execute("SELECT coalesce(max(rid), 0) + 1 FROM entities").fetchone()[0]
            next_gid = c.execute("SELECT coalesce(max(gid), 0) + 1 FROM geo_shapes").fetchone()[0]
            next_tid = c.execute("SELECT coalesce(max(tid), 0) + 1 FROM temporal_entities").fetchone()[0]
            self.pending = PendingWrites(next_rid, next_gid, next_tid, record_sql.current_version(c))
        return self.pending

    def apply(self, changes: list[Change]) -> None:
        self._resolve_tids([c.entity_id for c in changes if c.entity_id not in self.tids])
        for change in changes:
            if change.before is None:
                assert change.after is not None
                self._insert(change.after)
            elif change.after is None:
                self._delete(change.before)
            else:
                self._replace(change.after, change.before)
            self._record_history(change)

    def _put_records(self, docs: dict[RecordKey, str | None]) -> None:
        """Buffer records' new documents (JSON; None: deleted), each with the next record version."""
        if not docs:
            return
        writes = self._writes()
        for (kind, key), doc in docs.items():
            writes.record_version += 1
            writes.records[(kind, key)] = (kind, key, doc, writes.record_version)

    # -- history -----------------------------------------------------------------------------------
    def _resolve_tids(self, entity_ids: list[str]) -> None:
        """Learn the temporal ids of entities that already have history (in bulk: batches are large)."""
        for start in range(0, len(entity_ids), 500):
            chunk = entity_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for tid, entity_id in self.connection.execute(f"SELECT tid, id FROM temporal_entities WHERE id IN ({marks})", chunk):
                self.tids[entity_id] = tid

    def _record_history(self, change: Change) -> None:
        latest = change.after if change.after is not None else change.before
        assert latest is not None
        writes = self._writes()
        tid = self.tids.get(change.entity_id)
        if tid is None:
            if change.after is None and not change.before["attrs"]:  # type: ignore[index]
                return  # deleting an entity that never had an attribute leaves nothing to record
            tid = writes.next_tid
            writes.next_tid += 1
            self.tids[change.entity_id] = tid
        if change.before is None or change.before["type"] != latest["type"] or tid in writes.temporal_entities:
            writes.temporal_entities[tid] = (tid, change.entity_id, orjson.dumps(latest["type"]))
        for name, instance, replaces in recorded_instances(change):
            row = history_row(tid, self._iri(name), instance, change.at)
            if replaces:
                writes.history_replaced.append((tid, row[1], row[2], row[6]))
            writes.history.append(row)

    def _iri(self, iri: str) -> int:
        found = self.iris.id(iri, create=True)
        assert found is not None
        return found

    def _insert(self, entity: Entity) -> None:
        writes = self._writes()
        rid = writes.next_rid
        writes.next_rid += 1
        writes.new_ids[entity["id"]] = rid
        writes.deleted_ids.discard(entity["id"])
        writes.entity_rows[rid] = (rid, entity["id"], orjson.dumps(entity))
        writes.type_rows[rid] = [self._iri(t) for t in entity["type"]]
        self._index_attrs(writes, rid, entity["attrs"], entity["attrs"].keys())

    def _replace(self, entity: Entity, previous: Entity) -> None:
        rid = self._rid_of(previous["id"])
        if rid is None:
            raise KeyError(f"entity {previous['id']} vanished inside its own transaction")
        writes = self._writes()
        doc = orjson.dumps(entity)
        if rid in writes.entity_rows:
            writes.entity_rows[rid] = (rid, entity["id"], doc)
        else:
            writes.doc_updates[rid] = doc
        if entity["type"] != previous["type"]:
            self._unindex_types(writes, rid, previous["type"])
            writes.type_rows[rid] = [self._iri(t) for t in entity["type"]]
        old, new = previous["attrs"], entity["attrs"]
        changed = [name for name in old.keys() | new.keys() if old.get(name) != new.get(name)]
        if changed:
            self._unindex_attrs(writes, rid, old, [name for name in changed if name in old])
            self._index_attrs(writes, rid, new, [name for name in changed if name in new])

    def _delete(self, entity: Entity) -> None:
        rid = self._rid_of(entity["id"])
        if rid is None:
            return
        writes = self._writes()
        self._unindex_types(writes, rid, entity["type"])
        self._unindex_attrs(writes, rid, entity["attrs"], list(entity["attrs"].keys()))
        writes.entity_rows.pop(rid, None)
        writes.doc_updates.pop(rid, None)
        writes.new_ids.pop(entity["id"], None)
        writes.deleted_ids.add(entity["id"])
        writes.entity_deletes.append((rid,))

    def _unindex_types(self, writes: PendingWrites, rid: int, types: list[str]) -> None:
        writes.type_rows.pop(rid, None)
        writes.type_deletes.extend((self._iri(t), rid) for t in types)

    def _index_attrs(self, writes: PendingWrites, rid: int, attrs: dict[str, list[Instance]], names: Iterable[str]) -> None:
        for name in names:
            attr_id = self._iri(name)
            values, points, shapes, kinds = attribute_rows(attr_id, rid, attrs[name])
            shape_rows = []
            for instance in shapes:
                min_lon, min_lat, max_lon, max_lat = bounds_of(instance["value"])
                gid = writes.next_gid
                writes.next_gid += 1
                shape_rows.append(((gid, rid, attr_id, orjson.dumps(instance["value"])), (gid, min_lon, max_lon, min_lat, max_lat)))
            known = self.kinds.setdefault(attr_id, set())
            for kind in kinds - known:
                writes.new_kinds.append((attr_id, kind))
                known.add(kind)
            writes.attr_rows[(rid, attr_id)] = (values, points, shape_rows)

    def _unindex_attrs(self, writes: PendingWrites, rid: int, attrs: dict[str, list[Instance]], names: list[str]) -> None:
        """Remove the index rows ``attrs`` (the entity as it was) gave these attributes, by their exact keys."""
        for name in names:
            attr_id = self._iri(name)
            writes.attr_rows.pop((rid, attr_id), None)
            values, points, shapes, _ = attribute_rows(attr_id, rid, attrs[name])
            writes.value_deletes.extend(values)
            writes.point_deletes.extend(row[:4] for row in points)
            if shapes:
                writes.shape_deletes.append((rid, attr_id))

    def flush(self) -> None:
        """Send the buffered writes to SQLite: deletions first, then insertions."""
        writes = self.pending
        if writes is None or writes.empty:
            return
        c = self.connection
        if writes.entity_deletes:
            c.executemany("DELETE FROM entities WHERE rid = ?", writes.entity_deletes)
        if writes.type_deletes:
            c.executemany("DELETE FROM entity_types WHERE type_id = ? AND rid = ?", writes.type_deletes)
        if writes.value_deletes:
            c.executemany("DELETE FROM attr_values WHERE attr_id = ? AND kind = ? AND val = ? AND rid = ?", writes.value_deletes)
        if writes.point_deletes:
            c.executemany("DELETE FROM geo_points WHERE attr_id = ? AND cell = ? AND rid = ? AND seq = ?", writes.point_deletes)
        if writes.shape_deletes:
            c.executemany(
                "DELETE FROM geo_rtree WHERE gid IN (SELECT gid FROM geo_shapes WHERE rid = ? AND attr_id = ?)", writes.shape_deletes
            )
            c.executemany("DELETE FROM geo_shapes WHERE rid = ? AND attr_id = ?", writes.shape_deletes)
        if writes.entity_rows:
            c.executemany("INSERT INTO entities (rid, id, doc) VALUES (?, ?, ?)", writes.entity_rows.values())
        if writes.temporal_entities:
            c.executemany(
                "INSERT INTO temporal_entities (tid, id, types) VALUES (?, ?, ?) ON CONFLICT (tid) DO UPDATE SET types = excluded.types",
                writes.temporal_entities.values(),
            )
        if writes.outbox:
            c.executemany("INSERT INTO outbox (subscription, body) VALUES (?, ?)", writes.outbox)
        if writes.records:
            record_sql.write(c, writes.records.values(), writes.record_version)
        if writes.history_replaced:
            c.executemany("DELETE FROM history WHERE tid = ? AND attr_id = ? AND observed = ? AND dataset IS ?", writes.history_replaced)
        if writes.history:
            c.executemany(
                "INSERT INTO history (tid, attr_id, observed, created, modified, deleted, dataset, num, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                writes.history,
            )
        if writes.doc_updates:
            c.executemany("UPDATE entities SET doc = ?2 WHERE rid = ?1", writes.doc_updates.items())
        if writes.type_rows:
            c.executemany(
                "INSERT OR IGNORE INTO entity_types (type_id, rid) VALUES (?, ?)",
                [(type_id, rid) for rid, type_ids in writes.type_rows.items() for type_id in type_ids],
            )
        if writes.new_kinds:
            c.executemany("INSERT OR IGNORE INTO attr_kinds (attr_id, kind) VALUES (?, ?)", writes.new_kinds)
        if writes.attr_rows:
            rows = writes.attr_rows.values()
            c.executemany(
                "INSERT OR IGNORE INTO attr_values (attr_id, kind, val, rid, akind) VALUES (?, ?, ?, ?, ?)",
                [(*key, akind) for r in rows for key, akind in r[0].items()],
            )
            points = [p for r in rows for p in r[1]]
            if points:
                c.executemany("INSERT OR IGNORE INTO geo_points (attr_id, cell, rid, seq, lon, lat) VALUES (?, ?, ?, ?, ?, ?)", points)
            shapes = [g for r in rows for g in r[2]]
            if shapes:
                c.executemany("INSERT INTO geo_shapes (gid, rid, attr_id, geojson) VALUES (?, ?, ?, ?)", [g[0] for g in shapes])
                c.executemany(
                    "INSERT INTO geo_rtree (gid, min_lon, max_lon, min_lat, max_lat) VALUES (?, ?, ?, ?, ?)", [g[1] for g in shapes]
                )
        self.pending = PendingWrites(writes.next_rid, writes.next_gid, writes.next_tid, writes.record_version)
