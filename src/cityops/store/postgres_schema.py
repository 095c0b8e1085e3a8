"""The PostgreSQL store's tables, and the versioned migrations that create and change them.

All tenants share one set of tables; each row carries its tenant's number (``t``, from ``tenants``).
Names (attribute and type IRIs) are interned as numbers in ``iris``, as in the SQLite store, so
that the large indexes (history, values) stay narrow.

Documents are ``json``, not ``jsonb``: kept as written, with their members in order (a
LanguageProperty's first language, an entity's attribute order), and stored without re-parsing.

- ``entities``: the whole entity as JSON (its stored form, names expanded), keyed by
  (tenant, id), with a row number ``rid`` the index tables point at; ``entity_types``: (tenant,
  type, rid) for type selection; ``geo``: every GeoProperty instance as a PostGIS geometry (SRID
  4326) under a GiST index, points also as geography (their own index answers "nearest first"),
  shapes under an index of their own.
- ``attr_values``: every scalar an attribute holds (numbers and booleans in ``num``, texts in
  ``txt`` compared in code-point order, as Python compares them), one row a value, and a row
  marking attributes with no scalar at all; ``q`` narrows its candidates through it.
- ``temporal_entities`` and ``history``: every attribute instance ever written, append-only,
  placed in time by its observedAt as epoch seconds (its modification time when it has none),
  with its value as a number when it is one. ``history`` is partitioned by month of that time;
  partitions are created when a write first needs them and ahead of time by the leading process,
  and retention drops whole partitions once every instance in them is due.
- ``subscriptions`` (payload and @context, the resolved term maps in ``term_maps``, delivery
  status; a deleted one keeps a row without payload so every process learns of the deletion),
  numbered per tenant by a version every change raises; ``outbox``: notifications owed, written in
  the transaction of the change that owes them.
- ``records``: small JSON documents by (tenant, kind, key), written by units of work; each put or
  deletion is numbered by the tenant's record version, whose last value ``record_versions`` keeps
  (its row is locked from the number's taking to commit, so versions become visible in their
  order); a deleted record keeps a row without its document, so every process learns of the
  deletion.

Migrations run at start-up and with ``cityops db migrate``; they hold an advisory lock, so two
processes starting together apply each one once, and each is recorded in ``cityops_migrations``.
"""

from __future__ import annotations

import calendar
import datetime
import logging
from dataclasses import dataclass

import asyncpg

from .postgres_connection import connect

log = logging.getLogger("cityops.store")

# Advisory lock keys. Single-number keys ("CityOps" + n) lock the whole database; per-tenant locks
# use the two-number form (class, tenant number), whose keys never meet single-number ones.
MIGRATION_LOCK = 0x43_69_74_79_4F_70_73_01
PARTITION_LOCK = 0x43_69_74_79_4F_70_73_04
LEADER_LOCK = 0x43_69_74_79_4F_70_73_05
OUTBOX_LOCK_CLASS = 0x4F_70_73_02  # serializes a tenant's outbox inserts with their commits
SUBSCRIPTION_LOCK_CLASS = 0x4F_70_73_03  # serializes a tenant's subscription versions


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "entities, types, geometries, history (partitioned by month), subscriptions and the outbox",
        """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE tenants (t serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE iris (id serial PRIMARY KEY, iri text NOT NULL UNIQUE);
CREATE TABLE entities (
    t int NOT NULL, id text NOT NULL, rid bigint GENERATED ALWAYS AS IDENTITY, doc json NOT NULL,
    PRIMARY KEY (t, id));
CREATE UNIQUE INDEX entities_rid ON entities (t, rid);
CREATE TABLE entity_types (t int NOT NULL, type_id int NOT NULL, rid bigint NOT NULL, PRIMARY KEY (t, type_id, rid));
CREATE INDEX entity_types_rid ON entity_types (t, rid);
CREATE TABLE geo (
    t int NOT NULL, rid bigint NOT NULL, attr_id int NOT NULL, seq int NOT NULL, geom geometry(Geometry, 4326) NOT NULL);
CREATE INDEX geo_geom ON geo USING gist (geom);
CREATE INDEX geo_rid ON geo (t, rid);
CREATE TABLE temporal_entities (
    tid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t int NOT NULL, id text NOT NULL, types int[] NOT NULL, UNIQUE (t, id));
CREATE SEQUENCE history_iid_seq;
CREATE TABLE history (
    iid bigint NOT NULL DEFAULT nextval('history_iid_seq'), tid bigint NOT NULL, attr_id int NOT NULL,
    observed double precision NOT NULL, created double precision NOT NULL, modified double precision NOT NULL,
    deleted double precision, dataset text, num double precision, doc json NOT NULL
) PARTITION BY RANGE (observed);
CREATE INDEX history_entity ON history (tid, attr_id, observed) INCLUDE (num);
CREATE INDEX history_by_iid ON history (iid);
CREATE TABLE history_partitions (name text PRIMARY KEY, low double precision NOT NULL, high double precision NOT NULL);
CREATE TABLE term_maps (key text PRIMARY KEY, doc json NOT NULL);
CREATE TABLE subscriptions (
    t int NOT NULL, id text NOT NULL, version bigint NOT NULL, payload json, context json, terms text, notify_terms text,
    created double precision NOT NULL, modified double precision NOT NULL, status json NOT NULL DEFAULT '{}',
    PRIMARY KEY (t, id));
CREATE INDEX subscriptions_version ON subscriptions (t, version);
CREATE TABLE outbox (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t int NOT NULL, subscription text NOT NULL, body bytea NOT NULL);
CREATE INDEX outbox_subscription ON outbox (t, subscription, seq);
""",
    ),
)
MIGRATIONS += (
    Migration(
        2,
        "the value index: every scalar an attribute holds, so that q narrows candidates in SQL",
        """
CREATE TABLE attr_values (
    t int NOT NULL, rid bigint NOT NULL, attr_id int NOT NULL, kind smallint NOT NULL, num double precision, txt text COLLATE "C");
CREATE INDEX attr_values_num ON attr_values (t, attr_id, kind, num) INCLUDE (rid);
CREATE INDEX attr_values_txt ON attr_values (t, attr_id, kind, txt) INCLUDE (rid) WHERE txt IS NOT NULL;
CREATE INDEX attr_values_rid ON attr_values (t, rid, attr_id);
""",
    ),
)
MIGRATIONS += (
    Migration(
        3,
        "points also as geography, for nearest-first searches through the index; a separate index of non-point shapes",
        """
ALTER TABLE geo ADD COLUMN geog geography;
UPDATE geo SET geog = geom::geography WHERE GeometryType(geom) = 'POINT';
CREATE INDEX geo_points ON geo USING gist (geog) WHERE geog IS NOT NULL;
CREATE INDEX geo_shapes ON geo USING gist (geom) WHERE GeometryType(geom) <> 'POINT';
""",
    ),
)
MIGRATIONS += (
    Migration(
        4,
        "records: small JSON documents units of work keep beside the entities, versioned per tenant",
        """
CREATE TABLE records (
    t int NOT NULL, kind text NOT NULL, key text COLLATE "C" NOT NULL, doc json, version bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (t, kind, key));
CREATE INDEX records_version ON records (t, kind, version);
CREATE TABLE record_versions (t int PRIMARY KEY, version bigint NOT NULL);
""",
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


async def migrate(connection: asyncpg.Connection) -> list[int]:
    """Apply the migrations this database lacks, in order, each in its own transaction; the
    versions applied (none when it was up to date). Safe to run twice and from two processes."""
    applied: list[int] = []
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS cityops_migrations ("
            "version int PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in await connection.fetch("SELECT version FROM cityops_migrations")}
        newer = [v for v in done if v > SCHEMA_VERSION]
        if newer:
            raise SchemaTooNew(
                f"the database holds CityOps schema version {max(newer)}; this version of CityOps knows up to {SCHEMA_VERSION}. "
                "Upgrade CityOps, or point it at another database."
            )
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO cityops_migrations (version, description) VALUES ($1, $2)",
                    migration.version,
                    migration.description,
                )
            log.info("store: applied database migration %d: %s", migration.version, migration.description)
            applied.append(migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


async def migrate_database(url: str, *, timeout: float = 10.0) -> list[int]:
    """``migrate`` on a connection of its own to the database at ``url``."""
    connection = await connect(url, timeout=timeout)
    try:
        return await migrate(connection)
    finally:
        await connection.close()


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer CityOps."""


# -- history partitions ----------------------------------------------------------------------------
def month_of(seconds: float) -> tuple[int, int]:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[float, float]:
    low = calendar.timegm((year, month, 1, 0, 0, 0))
    high = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return float(low), float(high)


def partition_name(year: int, month: int) -> str:
    return f"history_{year:04d}_{month:02d}" if year >= 0 else f"history_bc{-year:04d}_{month:02d}"


class Partitions:
    """The history partitions this process knows exist; creates missing ones in their own
    transaction (a partition must exist before a row can land in it)."""

    def __init__(self) -> None:
        self.known: set[tuple[int, int]] = set()
        self._last: tuple[float, float] = (0.0, 0.0)  # the bounds of the partition last found

    def covers(self, seconds: float) -> bool:
        """Whether a partition this process knows holds instances at ``seconds`` (cheap for the
        common case of many instances in one month)."""
        low, high = self._last
        if low <= seconds < high:
            return True
        month = month_of(seconds)
        if month in self.known:
            self._last = month_bounds(*month)
            return True
        return False

    async def load(self, connection: asyncpg.Connection) -> None:
        for (low,) in await connection.fetch("SELECT low FROM history_partitions"):
            self.known.add(month_of(low))

    async def ensure(self, pool: asyncpg.Pool, months: set[tuple[int, int]]) -> None:
        missing = months - self.known
        if not missing:
            return
        async with pool.acquire() as connection:
            await self.load(connection)
            missing = months - self.known
            if not missing:
                return
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
                for year, month in sorted(missing):
                    low, high = month_bounds(year, month)
                    name = partition_name(year, month)
                    await connection.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF history FOR VALUES FROM ({low!r}) TO ({high!r})"
                    )
                    await connection.execute(
                        "INSERT INTO history_partitions (name, low, high) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                        name,
                        low,
                        high,
                    )
                    log.info("store: created history partition %s", name)
        self.known |= missing

    async def drop_before(self, connection: asyncpg.Connection, before: float) -> list[str]:
        """Drop the partitions whose every instance is older than ``before``; their names."""
        dropped = []
        for name, low in await connection.fetch("SELECT name, low FROM history_partitions WHERE high <= $1 ORDER BY low", before):
            async with connection.transaction():
                await connection.execute(f"DROP TABLE IF EXISTS {name}")
                await connection.execute("DELETE FROM history_partitions WHERE name = $1", name)
            self.known.discard(month_of(low))
            dropped.append(name)
        return dropped


class Iris:
    """IRIs <-> numbers, shared by every tenant and process; cached here once seen."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.iris: dict[int, str] = {}

    def _keep(self, iri: str, number: int) -> int:
        self.ids[iri] = number
        self.iris[number] = iri
        return number

    async def ids_of(self, pool: asyncpg.Pool, iris: set[str]) -> dict[str, int]:
        """Numbers of many IRIs at once, creating the missing ones in a transaction of their own (so
        a number this process keeps is never one a rolled-back write made up)."""
        missing = [iri for iri in iris if iri not in self.ids]
        if missing:
            async with pool.acquire() as connection:
                await connection.execute(
                    "INSERT INTO iris (iri) SELECT unnest($1::text[]) ON CONFLICT (iri) DO NOTHING", sorted(missing)
                )
                for number, iri in await connection.fetch("SELECT id, iri FROM iris WHERE iri = ANY($1::text[])", missing):
                    self._keep(iri, number)
        return {iri: self.ids[iri] for iri in iris}

    async def known(self, connection: asyncpg.Connection, iris: list[str]) -> dict[str, int]:
        """Numbers of the IRIs that have one (none is created)."""
        missing = [iri for iri in iris if iri not in self.ids]
        if missing:
            for number, iri in await connection.fetch("SELECT id, iri FROM iris WHERE iri = ANY($1::text[])", missing):
                self._keep(iri, number)
        return {iri: self.ids[iri] for iri in iris if iri in self.ids}

    async def names(self, connection: asyncpg.Connection, numbers: set[int]) -> dict[int, str]:
        missing = [n for n in numbers if n not in self.iris]
        if missing:
            for number, iri in await connection.fetch("SELECT id, iri FROM iris WHERE id = ANY($1::int[])", missing):
                self._keep(iri, number)
        return {n: self.iris[n] for n in numbers}
