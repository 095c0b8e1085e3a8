"""The PostgreSQL store (with PostGIS): the same contract as the SQLite store, for a city whose data
outgrows one file and for several server processes sharing one database.

One asyncpg pool a process serves requests; a second, small one runs the short transactions that
must not wait behind a request's (new IRIs, new history partitions). Every database failure
reaches the caller as 503 ServiceUnavailable with the reason, never as a hang: connecting and
every statement have a time limit (``CITYOPS_DB_TIMEOUT``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import asyncpg

from ..hub.changes import Change, RecordKey, UnitOfWork
from ..hub.entity import Entity, Instance
from ..hub.errors import NgsiError, NonexistentTenant, ServiceUnavailable
from ..hub.query import EntityQuery, Selector
from ..hub.temporal import TemporalEntity, TemporalQuery
from ..leader import Leader, PostgresLeader
from . import postgres_history_edit as history_edit
from . import postgres_records as record_sql
from . import postgres_subscriptions as subscription_sql
from .contract import DEFAULT_TENANT, AttributeSummary, QueryResult, SubscriptionRecord, TypeSummary, WriteHook, check_tenant_name
from .history import select_by_current_state
from .postgres_connection import connect, create_pool, redacted
from .postgres_history import HistoryReader
from .postgres_query import EntityReader, entities_by_id
from .postgres_schema import LEADER_LOCK, Iris, Partitions, migrate, month_of
from .postgres_writer import Writer

log = logging.getLogger("cityops.store")
T = TypeVar("T")

MONTHS_AHEAD = 2  # history partitions made ahead of time, besides the current month's
# a broken connection shows as any of these, depending on where asyncpg was when it broke
_UNREACHABLE = (
    OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError, TimeoutError,
)  # fmt: skip


@contextmanager
def _as_unavailable(failed: str) -> Iterator[None]:
    """Database failures as 503 ServiceUnavailable with the reason; NGSI-LD errors pass through."""
    try:
        yield
    except NgsiError:
        raise
    except _UNREACHABLE as error:
        raise ServiceUnavailable(f"the database cannot be reached: {error or type(error).__name__}") from error
    except asyncpg.PostgresError as error:
        log.error("store: %s (rolled back): %s", failed, error)
        raise ServiceUnavailable(f"{failed}: {error}") from error


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0):
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self.iris = Iris()
        self.partitions = Partitions()
        self.entities = EntityReader(self.iris)
        self.history = HistoryReader(self.iris)
        self._tenants: dict[str, int] = {}
        self._hooks: list[WriteHook] = []
        self._pool: asyncpg.Pool | None = None
        self._side_pool: asyncpg.Pool | None = None
        self._writer: Writer | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def open(self) -> None:
        connection = await connect(self.url, timeout=self.timeout)
        try:
            await migrate(connection)
            await self.partitions.load(connection)
        finally:
            await connection.close()
        self._pool = await create_pool(self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout)
        self._side_pool = await create_pool(self.url, min_size=1, max_size=2, timeout=self.timeout)
        self._writer = Writer(self._pool, self._side_pool, self.iris, self.partitions)
        self._writer.hooks.extend(self._hooks)
        await self.make_partitions_ahead()
        await self._tenant(DEFAULT_TENANT, create=True)
        log.info("store: PostgreSQL at %s", redacted(self.url))

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        for pool in (self._pool, self._side_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._side_pool = None

    def leader(self) -> Leader:
        return PostgresLeader(self.url, LEADER_LOCK)

    async def make_partitions_ahead(self, now: float | None = None) -> None:
        """This month's history partition and the next ones, so writes rarely wait for one."""
        now = time.time() if now is None else now
        year, month = month_of(now)
        months = set()
        for step in range(MONTHS_AHEAD + 1):
            months.add((year + (month - 1 + step) // 12, (month - 1 + step) % 12 + 1))
        assert self._side_pool is not None
        await self.partitions.ensure(self._side_pool, months)

    # -- connections and errors ---------------------------------------------------------------------
    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise ServiceUnavailable("the store is not open")
        with _as_unavailable("the database could not do it"):
            async with self._pool.acquire() as connection:
                yield connection

    async def _run(self, tenant: str, function: Callable[[asyncpg.Connection, int], Awaitable[T]], *, create: bool = False) -> T:
        t = await self._tenant(tenant, create=create)
        async with self._connection() as connection:
            return await function(connection, t)

    async def _in_transaction(self, tenant: str, function: Callable[[asyncpg.Connection, int], Awaitable[T]]) -> T:
        t = await self._tenant(tenant, create=True)
        async with self._connection() as connection, connection.transaction():
            return await function(connection, t)

    # -- tenants ------------------------------------------------------------------------------------
    async def _tenant(self, tenant: str, *, create: bool) -> int:
        found = self._tenants.get(tenant)
        if found is not None:
            return found
        check_tenant_name(tenant)
        async with self._connection() as connection:
            number = await connection.fetchval("SELECT t FROM tenants WHERE name = $1", tenant)
            if number is None:
                if not create:
                    raise NonexistentTenant(f"tenant {tenant!r} does not exist")
                await connection.execute("INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", tenant)
                number = await connection.fetchval("SELECT t FROM tenants WHERE name = $1", tenant)
                if tenant:
                    log.info("store: created tenant %s", tenant)
        self._tenants[tenant] = number
        return number

    async def tenant_exists(self, tenant: str) -> bool:
        try:
            await self._tenant(tenant, create=False)
        except NonexistentTenant:
            return False
        return True

    async def tenants(self) -> list[str]:
        async with self._connection() as connection:
            return sorted(row[0] for row in await connection.fetch("SELECT name FROM tenants"))

    # -- entities ----------------------------------------------------------------------------------
    def add_write_hook(self, hook: WriteHook) -> None:
        self._hooks.append(hook)
        if self._writer is not None:
            self._writer.hooks.append(hook)

    async def write(
        self, tenant: str, entity_ids: list[str], work: UnitOfWork[Any], records: Sequence[RecordKey] = ()
    ) -> tuple[Any, list[Change]]:
        t = await self._tenant(tenant, create=True)
        assert self._writer is not None
        with _as_unavailable("the database could not save the change"):
            outcome = await self._writer.write(t, tenant, entity_ids, work, records)
        return outcome

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        return await self._run(tenant, lambda c, t: self.entities.get(c, t, entity_id))

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self._run(tenant, lambda c, t: self.entities.query(c, t, query))

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]:
        return await self._run(tenant, lambda c, t: self.entities.types(c, t, with_attributes))

    async def attributes(self, tenant: str) -> list[AttributeSummary]:
        return await self._run(tenant, lambda c, t: self.entities.attributes(c, t))

    # -- history ------------------------------------------------------------------------------------
    async def temporal_entity(self, tenant: str, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        async def read(connection: asyncpg.Connection, t: int) -> TemporalEntity | None:
            found = await self.history.entity(connection, t, entity_id)
            if found is None:
                return None
            return await self._history_of(connection, found[0], entity_id, found[1], query)

        return await self._run(tenant, read)

    async def _history_of(
        self, connection: asyncpg.Connection, tid: int, entity_id: str, types: list[str], query: TemporalQuery
    ) -> TemporalEntity:
        if query.aggregation is not None:
            return TemporalEntity(entity_id, types, aggregated=await self.history.aggregated(connection, tid, query))
        attrs, times = await self.history.instances(connection, tid, query)
        return TemporalEntity(entity_id, types, attrs=attrs, times=times)

    async def temporal_query(
        self, tenant: str, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        async def read(connection: asyncpg.Connection, t: int) -> tuple[list[TemporalEntity], int | None]:
            if query.order_by is None and query.entity_filter is None:
                page, total = await self.history.entities(connection, t, selectors, limit, offset, count, query)
            else:  # filtered and ordered by the entities' current state; those without one come last
                everything, _ = await self.history.entities(connection, t, selectors, 2**62, 0, False, query)
                current = await entities_by_id(connection, t, [entity_id for _, entity_id, _ in everything])
                page, total = select_by_current_state(everything, current, query, limit, offset, count)
            return [await self._history_of(connection, tid, entity_id, types, query) for tid, entity_id, types in page], total

        return await self._run(tenant, read)

    async def modify_instance(self, tenant: str, entity_id: str, attr: str, iid: int, instance: Instance, at: str) -> None:
        async def ensure_month(observed: float) -> None:
            month = month_of(observed)
            if month not in self.partitions.known:
                assert self._side_pool is not None
                await self.partitions.ensure(self._side_pool, {month})

        await self._in_transaction(
            tenant, lambda c, t: history_edit.modify_instance(c, t, self.iris, entity_id, attr, iid, instance, at, ensure_month)
        )

    async def delete_instances(
        self, tenant: str, entity_id: str, attr: str, *, iid: int | None = None, dataset: str | None = None, every: bool = False
    ) -> None:
        await self._in_transaction(
            tenant,
            lambda c, t: history_edit.delete_instances(c, t, self.iris, entity_id, attr, iid=iid, dataset=dataset, every=every),
        )

    async def delete_history(self, tenant: str, entity_id: str) -> None:
        await self._in_transaction(tenant, lambda c, t: history_edit.delete_history(c, t, entity_id))

    async def prune_history(self, tenant: str, type_iri: str | None, before: float, keep_types: list[str]) -> int:
        """Rows of the due types are deleted; when one period applies to every type (``*`` and no
        other), whole monthly partitions older than it are dropped first, which costs nothing."""
        if type_iri is None and not keep_types:
            async with self._connection() as connection:
                for name in await self.partitions.drop_before(connection, before):
                    log.info("retention: dropped history partition %s (older than the retention period)", name)
        return await self._in_transaction(tenant, lambda c, t: history_edit.prune(c, t, self.iris, type_iri, before, keep_types))

    # -- subscriptions and the outbox -------------------------------------------------------------
    async def save_subscription(self, tenant: str, record: SubscriptionRecord, *, new: bool) -> None:
        await self._in_transaction(tenant, lambda c, t: subscription_sql.save(c, t, record, new=new))

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        await self._in_transaction(tenant, lambda c, t: subscription_sql.delete(c, t, subscription_id))

    async def _read_if_tenant(self, tenant: str, function: Callable[[asyncpg.Connection, int], Awaitable[T]], empty: T) -> T:
        try:
            return await self._run(tenant, function)
        except NonexistentTenant:
            return empty

    async def subscription(self, tenant: str, subscription_id: str) -> SubscriptionRecord | None:
        return await self._read_if_tenant(tenant, lambda c, t: subscription_sql.get(c, t, subscription_id), None)

    async def list_subscriptions(self, tenant: str, limit: int, offset: int) -> tuple[list[SubscriptionRecord], int]:
        return await self._read_if_tenant(tenant, lambda c, t: subscription_sql.page(c, t, limit, offset), ([], 0))

    async def subscription_changes(self, tenant: str, since: int) -> tuple[int, list[SubscriptionRecord]]:
        return await self._read_if_tenant(tenant, lambda c, t: subscription_sql.changes_since(c, t, since), (since, []))

    async def pending_notifications(self, tenant: str, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        return await self._read_if_tenant(tenant, lambda c, t: subscription_sql.pending(c, t, after, limit), [])

    async def notifications(self, tenant: str, subscription_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        return await self._read_if_tenant(
            tenant, lambda c, t: subscription_sql.notifications(c, t, subscription_id, after, limit), []
        )

    async def notifications_done(self, tenant: str, seqs: list[int], statuses: dict[str, dict[str, Any]]) -> None:
        await self._in_transaction(tenant, lambda c, t: subscription_sql.done(c, t, seqs, statuses))

    # -- records ------------------------------------------------------------------------------------
    async def record(self, tenant: str, kind: str, key: str) -> dict[str, Any] | None:
        return await self._read_if_tenant(tenant, lambda c, t: record_sql.get(c, t, kind, key), None)

    async def records(
        self, tenant: str, kind: str, *, limit: int | None = None, offset: int = 0, prefix: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        return await self._read_if_tenant(tenant, lambda c, t: record_sql.page(c, t, kind, limit, offset, prefix), [])

    async def record_count(self, tenant: str, kind: str, prefix: str | None = None) -> int:
        return await self._read_if_tenant(tenant, lambda c, t: record_sql.count(c, t, kind, prefix), 0)

    async def records_changed(self, tenant: str, kind: str, since: int) -> tuple[int, list[tuple[str, dict[str, Any] | None]]]:
        return await self._read_if_tenant(tenant, lambda c, t: record_sql.changes_since(c, t, kind, since), (since, []))

    async def trim_records(self, tenant: str, kind: str, keep: int) -> int:
        if not await self.tenant_exists(tenant):
            return 0
        return await self._in_transaction(tenant, lambda c, t: record_sql.trim(c, t, kind, keep))
