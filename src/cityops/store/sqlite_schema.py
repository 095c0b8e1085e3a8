"""The SQLite schema of one tenant database, and the connection both the reader and the writer use.

Entities are kept whole (one JSON document a row) next to index tables the queries use:
- ``entity_types``: which types each entity has;
- ``attr_values``: the scalar values of attributes (numbers, strings, booleans), one B-tree keyed
  (attribute, kind, value, entity); an attribute with no scalar value has a PRESENT row, so every
  attribute of every entity is findable by its attribute number alone;
- ``geo_points``: point GeoProperties keyed by a Z-order code (``sqlite_geo``);
- ``geo_shapes`` and ``geo_rtree``: other GeoProperties with their bounding boxes in an R*Tree;
- ``iris``: every IRI (type, attribute) once, referred to by number;
- ``attr_kinds``: every (attribute, kind) ever stored, so a query knows which attributes hold
  kinds the value index does not cover;
- ``temporal_entities`` and ``history``: every attribute instance ever written, append-only, placed
  in time by its observedAt (its modification time when it has none), with its value as a number
  when it is one, for aggregations in SQL (the index holds it, so aggregating reads only the
  index). History outlives the entity;
- ``subscriptions`` (payload, @context, delivery status; a deleted one keeps a row without payload
  so every process learns of the deletion), numbered by a version every change of one raises, with
  the resolved term maps they use in ``term_maps``; ``outbox``: notifications owed, written in the
  same transaction as the change that caused them, removed once delivered;
- ``records``: small JSON documents by (kind, key), written by units of work, each put or deletion
  numbered by the tenant's record version (its last value in ``meta``, key ``record_version``); a
  deleted record keeps a row without its document, so every process learns of the deletion.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ..hub.entity import Instance
from .sqlite_geo import cell_of
from .value_index import KIND_CODE, add_instance_values

SCHEMA_VERSION = 6
# Files of these versions differ from the current schema only by tables the schema script creates
# when they are missing: opening one brings it up to date.
UPGRADED_IN_PLACE = {"5"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iris (id INTEGER PRIMARY KEY, iri TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS entities (rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entity_types (
    type_id INTEGER NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (type_id, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_rid ON entity_types (rid);
CREATE TABLE IF NOT EXISTS attr_kinds (
    attr_id INTEGER NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY (attr_id, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attr_values (
    attr_id INTEGER NOT NULL, kind INTEGER NOT NULL, val NOT NULL, rid INTEGER NOT NULL, akind INTEGER NOT NULL,
    PRIMARY KEY (attr_id, kind, val, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS geo_points (
    attr_id INTEGER NOT NULL, cell INTEGER NOT NULL, rid INTEGER NOT NULL, seq INTEGER NOT NULL,
    lon REAL NOT NULL, lat REAL NOT NULL, PRIMARY KEY (attr_id, cell, rid, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS geo_shapes (
    gid INTEGER PRIMARY KEY, rid INTEGER NOT NULL, attr_id INTEGER NOT NULL, geojson BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS geo_shapes_rid ON geo_shapes (rid, attr_id);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree (gid, min_lon, max_lon, min_lat, max_lat);
CREATE TABLE IF NOT EXISTS temporal_entities (
    tid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, types BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    iid INTEGER PRIMARY KEY, tid INTEGER NOT NULL, attr_id INTEGER NOT NULL,
    observed REAL NOT NULL, created REAL NOT NULL, modified REAL NOT NULL, deleted REAL, dataset TEXT, num REAL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS history_entity ON history (tid, attr_id, observed, num);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, version INTEGER NOT NULL, payload BLOB, context BLOB, terms TEXT, notify_terms TEXT, created REAL NOT NULL,
    modified REAL NOT NULL, status BLOB NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS subscriptions_version ON subscriptions (version);
CREATE TABLE IF NOT EXISTS term_maps (key TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, subscription TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_subscription ON outbox (subscription, seq);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT, version INTEGER NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_version ON records (kind, version);
INSERT OR IGNORE INTO meta (key, value) VALUES ('record_version', 0);
"""

_pattern_cache: dict[str, re.Pattern[str]] = {}


def _regexp(pattern: str, text: str | None) -> bool:
    if text is None:
        return False
    compiled = _pattern_cache.get(pattern)
    if compiled is None:
        if len(_pattern_cache) > 1000:
            _pattern_cache.clear()
        compiled = _pattern_cache[pattern] = re.compile(pattern)
    return compiled.search(text) is not None


def connect(path: str, *, synchronous: str, cache_mb: int, create: bool) -> sqlite3.Connection:
    """A connection with the store's settings; ``create`` also lays out the schema."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    connection.execute("PRAGMA temp_store=MEMORY")
    connection.execute("PRAGMA busy_timeout=10000")
    connection.create_function("regexp", 2, _regexp, deterministic=True)
    if create:
        connection.executescript(SCHEMA)
        connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        (version,) = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version in UPGRADED_IN_PLACE:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            version = str(SCHEMA_VERSION)
        if version != str(SCHEMA_VERSION):
            connection.close()
            raise SchemaMismatch(
                f"{path} holds CityOps store schema {version}; this version reads schema {SCHEMA_VERSION}. "
                "Use the CityOps version that wrote it, or export and re-import the data."
            )
    return connection


class SchemaMismatch(RuntimeError):
    """A database file was written by a CityOps version with another store layout."""


def attribute_rows(
    attr_id: int, rid: int, instances: list[Instance]
) -> tuple[dict[tuple[int, int, Any, int], int], list[tuple[Any, ...]], list[Instance], set[int]]:
    """The index rows of one attribute of one entity, computed the same way to add and to remove them.

    Returns the value rows (primary key -> attribute kind; an instance without scalar values
    leaves a PRESENT row so the attribute's existence is still indexed), the point rows, the
    non-point GeoProperty instances, and the attribute kinds present. What the value index holds
    per kind must agree with ``query_language.values_at``: Property values, Relationship objects,
    ListProperty items, every text of a LanguageProperty, ListRelationship objects.
    """
    values: dict[tuple[int, int, Any, int], int] = {}
    points: list[tuple[Any, ...]] = []
    shapes: list[Instance] = []
    kinds: set[int] = set()
    for seq, instance in enumerate(instances):
        kind_name = instance.get("type", "Property")
        akind = KIND_CODE.get(kind_name, 0)
        kinds.add(akind)
        if kind_name == "GeoProperty":
            value = instance.get("value") or {}
            if value.get("type") == "Point":
                lon, lat = value["coordinates"][0], value["coordinates"][1]
                points.append((attr_id, cell_of(lon, lat), rid, seq, lon, lat))
            else:
                shapes.append(instance)
        add_instance_values(values, attr_id, rid, instance, akind)
    return values, points, shapes, kinds


class IriCache:
    """IRIs <-> numbers for one connection. ``create`` only on the writer's connection."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection
        self.ids: dict[str, int] = {}
        self.iris: dict[int, str] = {}

    def clear(self) -> None:
        self.ids.clear()
        self.iris.clear()

    def id(self, iri: str, *, create: bool) -> int | None:
        found = self.ids.get(iri)
        if found is not None:
            return found
        row = self.connection.execute("SELECT id FROM iris WHERE iri = ?", (iri,)).fetchone()
        if row is None:
            if not create:
                return None
            # another server process may have added it since our last look: ignore, then read
            self.connection.execute("INSERT OR IGNORE INTO iris (iri) VALUES (?)", (iri,))
            row = self.connection.execute("SELECT id FROM iris WHERE iri = ?", (iri,)).fetchone()
        self.ids[iri] = row[0]
        self.iris[row[0]] = iri
        return row[0]

    def iri(self, iri_id: int) -> str:
        found = self.iris.get(iri_id)
        if found is None:
            found = self.connection.execute("SELECT iri FROM iris WHERE id = ?", (iri_id,)).fetchone()[0]
            self.iris[iri_id] = found
            self.ids[found] = iri_id
        return found


def load_kinds(connection: sqlite3.Connection) -> dict[int, set[int]]:
    kinds: dict[int, set[int]] = {}
    for attr_id, kind in connection.execute("SELECT attr_id, kind FROM attr_kinds"):
        kinds.setdefault(attr_id, set()).add(kind)
    return kinds
