"""The embedded store: stdlib sqlite3 in WAL mode, one database file per tenant.

Each tenant database has a reader (``sqlite_query.Reader``, used on the event loop's thread) and a
writer (``sqlite_writer.Writer``, its own thread, group commit). WAL lets reads go on while the
writer writes; synchronous=NORMAL keeps every committed transaction across a process crash
(FULL also across power loss).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..hub.changes import Change, RecordKey, UnitOfWork
from ..hub.entity import Entity, Instance
from ..hub.errors import NonexistentTenant, ServiceUnavailable
from ..hub.query import EntityQuery, Selector
from ..hub.temporal import TemporalEntity, TemporalQuery
from ..leader import FileLeader, Leader
from . import sqlite_history_edit as history_edit
from . import sqlite_records as record_sql
from . import sqlite_subscriptions as subscription_sql
from .contract import DEFAULT_TENANT, AttributeSummary, QueryResult, SubscriptionRecord, TypeSummary, WriteHook, check_tenant_name
from .sqlite_query import Reader
from .sqlite_schema import connect
from .sqlite_writer import Writer

log = logging.getLogger("cityops.store")

class TenantDatabase:
    """One tenant's database file with its writer, a reader for quick lookups on the event loop's
    thread, and a small pool of readers in threads for queries: SQLite releases the GIL while it
    works, so queries use the second core and do not stall the event loop."""

    def __init__(self, path: str, name: str, *, synchronous: str, cache_mb: int, query_threads: int = 2):
        self.path = path
        self.writer = Writer(
            connect(path, synchronous=synchronous, cache_mb=cache_mb, create=True),
            connect(path, synchronous=synchronous, cache_mb=1, create=False),
            name or "default",
            path,
        )
        # Each connection has a private page cache: the writer gets the configured size, readers a quarter.
        reader_cache = max(4, cache_mb // 4)
        self.reader = Reader(connect(path, synchronous=synchronous, cache_mb=reader_cache, create=False), path)
        self._pool_readers: queue.SimpleQueue[Reader] = queue.SimpleQueue()
        self._pool_size = query_threads
        for _ in range(query_threads):
            self._pool_readers.put(Reader(connect(path, synchronous=synchronous, cache_mb=reader_cache, create=False), path))
        self._pool = ThreadPoolExecutor(max_workers=query_threads, thread_name_prefix=f"cityops-query-{name or 'default'}")

    async def in_pool(self, method: str, *args: Any) -> Any:
        """Run ``Reader.<method>(*args)`` on a pooled reader in a query thread."""

        def run() -> Any:
            reader = self._pool_readers.get()
            try:
                return getattr(reader, method)(*args)
            finally:
                self._pool_readers.put(reader)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self.writer.close()
        self._pool.shutdown(wait=True)
        self.reader.close()
        for _ in range(self._pool_size):
            self._pool_readers.get().close()


class SQLiteStore:
    """The embedded default store. ``path`` is a file, or ':memory:' for a throw-away hub
    (kept in a temporary directory that is removed on close)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", cache_mb: int = 64, max_tenants: int = 100):
        self.path = str(path)
        self.max_tenants = max_tenants
        self.synchronous = synchronous.upper()
        self.cache_mb = cache_mb
        self._tenants: dict[str, TenantDatabase] = {}
        self._scratch: str | None = None
        self._hooks: list[WriteHook] = []

    def _base(self) -> str:
        if self.path != ":memory:":
            return self.path
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="cityops-")
        return str(Path(self._scratch) / "hub.db")

    def _tenant_path(self, tenant: str) -> Path:
        base = self._base()
        return Path(base) if tenant == DEFAULT_TENANT else Path(base + ".tenants") / f"{tenant}.db"

    def leader(self) -> Leader:
        return FileLeader(self.path)

    async def open(self) -> None:
        self._database(DEFAULT_TENANT, create=True)
        log.info("store: SQLite at %s (synchronous=%s)", self._base(), self.synchronous)

    async def close(self) -> None:
        for db in self._tenants.values():
            db.close()
        self._tenants.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _database(self, tenant: str, *, create: bool) -> TenantDatabase:
        db = self._tenants.get(tenant)
        if db is not None:
            return db
        check_tenant_name(tenant)
        path = self._tenant_path(tenant)
        if not path.exists():
            if not create:
                raise NonexistentTenant(f"tenant {tenant!r} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
        if len(self._tenants) >= self.max_tenants:
            raise ServiceUnavailable(
                f"this hub serves at most {self.max_tenants} tenants at once (CITYOPS_MAX_TENANTS); tenant {tenant!r} is refused"
            )
        db = TenantDatabase(str(path), tenant, synchronous=self.synchronous, cache_mb=self.cache_mb)
        db.writer.hooks.extend(self._hooks)
        self._tenants[tenant] = db
        if tenant:
            log.info("store: opened tenant %s (%s)", tenant, path)
        return db

    def add_write_hook(self, hook: WriteHook) -> None:
        self._hooks.append(hook)
        for db in self._tenants.values():
            db.writer.hooks.append(hook)

    async def tenants(self) -> list[str]:
        """Every tenant with a database (opened or on disk)."""
        found = set(self._tenants)
        folder = Path(self._base() + ".tenants")
        if folder.is_dir():
            found |= {p.stem for p in folder.glob("*.db")}
        return sorted(found)

    # -- editing history ----------------------------------------------------------------------------
    async def modify_instance(self, tenant: str, entity_id: str, attr: str, iid: int, instance: Instance, at: str) -> None:
        db = self._database(tenant, create=False)
        await db.writer.call(tenant, lambda c: history_edit.modify_instance(c, entity_id, attr, iid, instance, at))

    async def delete_instances(
        self, tenant: str, entity_id: str, attr: str, *, iid: int | None = None, dataset: str | None = None, every: bool = False
    ) -> None:
        db = self._database(tenant, create=False)
        await db.writer.call(tenant, lambda c: history_edit.delete_instances(c, entity_id, attr, iid=iid, dataset=dataset, every=every))

    async def delete_history(self, tenant: str, entity_id: str) -> None:
        db = self._database(tenant, create=False)

        def delete(connection: sqlite3.Connection) -> None:
            history_edit.delete_history(connection, entity_id)
            db.writer.tids.pop(entity_id, None)

        await db.writer.call(tenant, delete)

    async def prune_history(self, tenant: str, type_iri: str | None, before: float, keep_types: list[str]) -> int:
        db = self._database(tenant, create=False)
        return await db.writer.call(tenant, lambda c: history_edit.prune(c, type_iri, before, keep_types))

    # -- subscriptions and the notification outbox ----------------------------------------------
    async def save_subscription(self, tenant: str, record: SubscriptionRecord, *, new: bool) -> None:
        await self._database(tenant, create=True).writer.call(tenant, lambda c: subscription_sql.save(c, record, new=new))

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        await self._database(tenant, create=True).writer.call(tenant, lambda c: subscription_sql.delete(c, subscription_id))

    def _reader_of(self, tenant: str) -> sqlite3.Connection | None:
        try:
            return self._database(tenant, create=False).reader.connection
        except NonexistentTenant:
            return None

    async def subscription(self, tenant: str, subscription_id: str) -> SubscriptionRecord | None:
        connection = self._reader_of(tenant)
        return subscription_sql.get(connection, subscription_id) if connection else None

    async def list_subscriptions(self, tenant: str, limit: int, offset: int) -> tuple[list[SubscriptionRecord], int]:
        connection = self._reader_of(tenant)
        return subscription_sql.page(connection, limit, offset) if connection else ([], 0)

    async def subscription_changes(self, tenant: str, since: int) -> tuple[int, list[SubscriptionRecord]]:
        connection = self._reader_of(tenant)
        return subscription_sql.changes_since(connection, since) if connection else (since, [])

    async def pending_notifications(self, tenant: str, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        connection = self._reader_of(tenant)
        return subscription_sql.pending(connection, after, limit) if connection else []

    async def notifications(self, tenant: str, subscription_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        connection = self._reader_of(tenant)
        return subscription_sql.notifications(connection, subscription_id, after, limit) if connection else []

    async def notifications_done(self, tenant: str, seqs: list[int], statuses: dict[str, dict[str, Any]]) -> None:
        await self._database(tenant, create=True).writer.call(tenant, lambda c: subscription_sql.done(c, seqs, statuses))

    # -- records ------------------------------------------------------------------------------------
    async def record(self, tenant: str, kind: str, key: str) -> dict[str, Any] | None:
        connection = self._reader_of(tenant)
        return record_sql.get(connection, kind, key) if connection else None

    async def records(
        self, tenant: str, kind: str, *, limit: int | None = None, offset: int = 0, prefix: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        connection = self._reader_of(tenant)
        return record_sql.page(connection, kind, limit, offset, prefix) if connection else []

    async def record_count(self, tenant: str, kind: str, prefix: str | None = None) -> int:
        connection = self._reader_of(tenant)
        return record_sql.count(connection, kind, prefix) if connection else 0

    async def records_changed(self, tenant: str, kind: str, since: int) -> tuple[int, list[tuple[str, dict[str, Any] | None]]]:
        connection = self._reader_of(tenant)
        return record_sql.changes_since(connection, kind, since) if connection else (since, [])

    async def trim_records(self, tenant: str, kind: str, keep: int) -> int:
        if not await self.tenant_exists(tenant):
            return 0
        return await self._database(tenant, create=False).writer.call(tenant, lambda c: record_sql.trim(c, kind, keep))

    async def tenant_exists(self, tenant: str) -> bool:
        try:
            self._database(tenant, create=False)
        except NonexistentTenant:
            return False
        return True

    async def write(
        self, tenant: str, entity_ids: list[str], work: UnitOfWork[Any], records: Sequence[RecordKey] = ()
    ) -> tuple[Any, list[Change]]:
        return await self._database(tenant, create=True).writer.submit(tenant, entity_ids, work, records)

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        return self._database(tenant, create=False).reader.get(entity_id)

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self._database(tenant, create=False).in_pool("query", query)

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]:
        return await self._database(tenant, create=False).in_pool("types", with_attributes)

    async def attributes(self, tenant: str) -> list[AttributeSummary]:
        return await self._database(tenant, create=False).in_pool("attributes")

    async def temporal_entity(self, tenant: str, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        return await self._database(tenant, create=False).in_pool("temporal_entity", entity_id, query)

    async def temporal_query(
        self, tenant: str, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        return await self._database(tenant, create=False).in_pool("temporal_query", selectors, query, limit, offset, count)
