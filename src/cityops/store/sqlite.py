"""The embedded store: stdlib sqlite3 in WAL mode, one database file per tenant.

Entities are kept whole (one JSON document a row) next to index tables the queries use:
entity types, attribute presence (with the attribute's kind), scalar attribute values (numbers,
strings and booleans in partial indexes), and GeoProperty bounding boxes in an R*Tree. A query is
compiled to SQL over those indexes where the index answers exactly; what it cannot answer exactly
(sub-attribute paths, regular expressions, DateTime comparisons, the exact geometry test) runs
as ``EntityQuery.matches`` over the candidates SQL returned, which are then always a superset.

SQLite calls are short and run on the event loop's thread, serialised per tenant by an
``asyncio.Lock`` that is held across a whole transaction, so a reader never sees a half-written
change. WAL with synchronous=NORMAL keeps every committed transaction across a process crash.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import orjson

from ..hub.entity import ATTRIBUTE_TYPES, Entity, Instance, data_of
from ..hub.errors import BadRequestData, NonexistentTenant
from ..hub.geo import StoredGeometry
from ..hub.query import EntityQuery, Selector
from ..hub.query_language import And, DateTimeLiteral, Node, Or, Term
from .contract import DEFAULT_TENANT, AttributeSummary, QueryResult, TypeSummary

log = logging.getLogger("cityops.store")

SCHEMA_VERSION = 1
KIND_CODE = {kind: index for index, kind in enumerate(ATTRIBUTE_TYPES)}
KIND_NAME = dict(enumerate(ATTRIBUTE_TYPES))
# Attribute kinds whose values the value index holds exactly as the query language compares them.
INDEXED_KINDS = frozenset(KIND_CODE[k] for k in ("Property", "Relationship", "LanguageProperty", "ListProperty", "ListRelationship"))
NUMBER, STRING, BOOLEAN = 0, 1, 2
TENANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iris (id INTEGER PRIMARY KEY, iri TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS entities (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entity_types (
    type_id INTEGER NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (type_id, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_rid ON entity_types (rid);
CREATE TABLE IF NOT EXISTS entity_attrs (
    attr_id INTEGER NOT NULL, rid INTEGER NOT NULL, kind INTEGER NOT NULL,
    PRIMARY KEY (attr_id, rid, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attr_kinds (attr_id INTEGER NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY (attr_id, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attr_values (
    attr_id INTEGER NOT NULL, rid INTEGER NOT NULL, kind INTEGER NOT NULL, num REAL, txt TEXT);
CREATE INDEX IF NOT EXISTS attr_values_num ON attr_values (attr_id, num, rid) WHERE kind = 0;
CREATE INDEX IF NOT EXISTS attr_values_txt ON attr_values (attr_id, txt, rid) WHERE kind = 1;
CREATE INDEX IF NOT EXISTS attr_values_bool ON attr_values (attr_id, num, rid) WHERE kind = 2;
CREATE INDEX IF NOT EXISTS attr_values_rid ON attr_values (rid, attr_id);
CREATE TABLE IF NOT EXISTS geo (
    gid INTEGER PRIMARY KEY, rid INTEGER NOT NULL, attr_id INTEGER NOT NULL, lon REAL, lat REAL, geojson BLOB);
CREATE INDEX IF NOT EXISTS geo_rid ON geo (rid, attr_id);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree (gid, min_lon, max_lon, min_lat, max_lat);
"""


def _regexp(pattern: str, text: str | None) -> bool:
    if text is None:
        return False
    return _compiled(pattern).search(text) is not None


_pattern_cache: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _pattern_cache.get(pattern)
    if compiled is None:
        if len(_pattern_cache) > 1000:
            _pattern_cache.clear()
        compiled = _pattern_cache[pattern] = re.compile(pattern)
    return compiled


def _scalar_rows(value: Any) -> Iterable[tuple[int, float | None, str | None]]:
    """(kind, num, txt) rows for the value index; arrays index their scalar elements."""
    items = value if isinstance(value, list) else (value,)
    for item in items:
        if isinstance(item, dict) and "@value" in item:
            item = item["@value"]
        if isinstance(item, bool):
            yield BOOLEAN, float(item), None
        elif isinstance(item, (int, float)):
            yield NUMBER, float(item), None
        elif isinstance(item, str):
            yield STRING, None, item


def _instance_scalars(instance: Instance) -> Iterable[tuple[int, float | None, str | None]]:
    kind = instance.get("type")
    data = data_of(instance)
    if kind == "LanguageProperty" and isinstance(data, dict):
        for text in data.values():
            yield from _scalar_rows(text)
    elif kind == "ListRelationship" and isinstance(data, list):
        for item in data:
            yield from _scalar_rows(item.get("object") if isinstance(item, dict) else item)
    elif kind in ("Property", "Relationship", "ListProperty"):
        yield from _scalar_rows(data)


class _SqlCondition:
    """A WHERE fragment with its parameters; ``exact`` is False when it only narrows candidates."""

    __slots__ = ("sql", "params", "exact")

    def __init__(self, sql: str, params: list[Any] | None = None, exact: bool = True):
        self.sql, self.params, self.exact = sql, params or [], exact


TRUE_INEXACT = _SqlCondition("1", exact=False)
FALSE = _SqlCondition("0")
TRUE = _SqlCondition("1")


class TenantDatabase:
    """One tenant's SQLite database and its caches."""

    def __init__(self, path: str, *, synchronous: str, cache_mb: int):
        self.path = path
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.lock = asyncio.Lock()
        self._iri_ids: dict[str, int] = {}
        self._iris: dict[int, str] = {}
        self._kinds: dict[int, set[int]] = {}
        c = self.connection
        if path != ":memory:":
            c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={synchronous}")
        c.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA busy_timeout=10000")
        c.create_function("regexp", 2, _regexp, deterministic=True)
        c.executescript(SCHEMA)
        c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        for attr_id, kind in c.execute("SELECT attr_id, kind FROM attr_kinds"):
            self._kinds.setdefault(attr_id, set()).add(kind)

    def close(self) -> None:
        try:
            self.connection.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.connection.close()

    def forget_caches(self) -> None:
        """After a rollback, ids handed out inside it may not exist: drop what could be stale."""
        self._iri_ids.clear()
        self._iris.clear()
        self._kinds = {}
        for attr_id, kind in self.connection.execute("SELECT attr_id, kind FROM attr_kinds"):
            self._kinds.setdefault(attr_id, set()).add(kind)

    # -- IRIs --------------------------------------------------------------------------------
    def iri_id(self, iri: str) -> int:
        found = self._iri_ids.get(iri)
        if found is not None:
            return found
        row = self.connection.execute("SELECT id FROM iris WHERE iri = ?", (iri,)).fetchone()
        if row is None:
            row = (self.connection.execute("INSERT INTO iris (iri) VALUES (?)", (iri,)).lastrowid,)
        self._iri_ids[iri] = row[0]
        self._iris[row[0]] = iri
        return row[0]

    def known_iri_id(self, iri: str) -> int | None:
        found = self._iri_ids.get(iri)
        if found is not None:
            return found
        row = self.connection.execute("SELECT id FROM iris WHERE iri = ?", (iri,)).fetchone()
        if row is not None:
            self._iri_ids[iri] = row[0]
            self._iris[row[0]] = iri
            return row[0]
        return None

    def iri(self, iri_id: int) -> str:
        found = self._iris.get(iri_id)
        if found is None:
            found = self.connection.execute("SELECT iri FROM iris WHERE id = ?", (iri_id,)).fetchone()[0]
            self._iris[iri_id] = found
            self._iri_ids[found] = iri_id
        return found

    # -- writes ------------------------------------------------------------------------------
    def rid_of(self, entity_id: str) -> int | None:
        row = self.connection.execute("SELECT rid FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return row[0] if row else None

    def insert(self, entity: Entity) -> None:
        rid = self.connection.execute(
            "INSERT INTO entities (id, doc) VALUES (?, ?)", (entity["id"], orjson.dumps(entity))
        ).lastrowid
        assert rid is not None
        self._index_types(rid, entity["type"])
        self._index_attrs(rid, entity["attrs"], entity["attrs"].keys())

    def replace(self, entity: Entity, previous: Entity) -> None:
        rid = self.rid_of(previous["id"])
        if rid is None:
            raise KeyError(previous["id"])
        self.connection.execute("UPDATE entities SET doc = ? WHERE rid = ?", (orjson.dumps(entity), rid))
        if entity["type"] != previous["type"]:
            self._unindex_types(rid, previous["type"])
            self._index_types(rid, entity["type"])
        old, new = previous["attrs"], entity["attrs"]
        changed = [name for name in old.keys() | new.keys() if old.get(name) != new.get(name)]
        if changed:
            self._unindex_attrs(rid, [name for name in changed if name in old])
            self._index_attrs(rid, new, [name for name in changed if name in new])

    def delete(self, entity: Entity) -> None:
        rid = self.rid_of(entity["id"])
        if rid is None:
            return
        self._unindex_types(rid, entity["type"])
        self._unindex_attrs(rid, list(entity["attrs"].keys()))
        self.connection.execute("DELETE FROM entities WHERE rid = ?", (rid,))

    def _index_types(self, rid: int, types: list[str]) -> None:
        self.connection.executemany(
            "INSERT OR IGNORE INTO entity_types (type_id, rid) VALUES (?, ?)", [(self.iri_id(t), rid) for t in types]
        )

    def _unindex_types(self, rid: int, types: list[str]) -> None:
        self.connection.executemany(
            "DELETE FROM entity_types WHERE type_id = ? AND rid = ?", [(self.iri_id(t), rid) for t in types]
        )

    def _index_attrs(self, rid: int, attrs: dict[str, list[Instance]], names: Iterable[str]) -> None:
        presence, values, geometries = [], [], []
        for name in names:
            attr_id = self.iri_id(name)
            kinds = set()
            for instance in attrs[name]:
                kind = KIND_CODE.get(instance.get("type", "Property"), 0)
                kinds.add(kind)
                for value_kind, num, txt in _instance_scalars(instance):
                    values.append((attr_id, rid, value_kind, num, txt))
                if kind == KIND_CODE["GeoProperty"]:
                    geometries.append((attr_id, StoredGeometry.from_value(instance["value"])))
            for kind in kinds:
                presence.append((attr_id, rid, kind))
                known = self._kinds.setdefault(attr_id, set())
                if kind not in known:
                    self.connection.execute("INSERT OR IGNORE INTO attr_kinds (attr_id, kind) VALUES (?, ?)", (attr_id, kind))
                    known.add(kind)
        c = self.connection
        c.executemany("INSERT OR IGNORE INTO entity_attrs (attr_id, rid, kind) VALUES (?, ?, ?)", presence)
        if values:
            c.executemany("INSERT INTO attr_values (attr_id, rid, kind, num, txt) VALUES (?, ?, ?, ?, ?)", values)
        for attr_id, geometry in geometries:
            point = geometry.point
            gid = c.execute(
                "INSERT INTO geo (rid, attr_id, lon, lat, geojson) VALUES (?, ?, ?, ?, ?)",
                (rid, attr_id, point[0] if point else None, point[1] if point else None, None if point else geometry.geojson),
            ).lastrowid
            c.execute(
                "INSERT INTO geo_rtree (gid, min_lon, max_lon, min_lat, max_lat) VALUES (?, ?, ?, ?, ?)",
                (gid, geometry.min_lon, geometry.max_lon, geometry.min_lat, geometry.max_lat),
            )

    def _unindex_attrs(self, rid: int, names: list[str]) -> None:
        if not names:
            return
        c = self.connection
        ids = [(self.iri_id(name),) for name in names]
        c.executemany(f"DELETE FROM entity_attrs WHERE attr_id = ? AND rid = {rid}", ids)
        c.executemany(f"DELETE FROM attr_values WHERE rid = {rid} AND attr_id = ?", ids)
        for (attr_id,) in ids:
            gids = [row[0] for row in c.execute("SELECT gid FROM geo WHERE rid = ? AND attr_id = ?", (rid, attr_id))]
            if gids:
                c.executemany("DELETE FROM geo_rtree WHERE gid = ?", [(g,) for g in gids])
                c.executemany("DELETE FROM geo WHERE gid = ?", [(g,) for g in gids])

    # -- reads -------------------------------------------------------------------------------
    def get(self, entity_id: str) -> Entity | None:
        row = self.connection.execute("SELECT doc FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def get_many(self, entity_ids: list[str]) -> dict[str, Entity]:
        found: dict[str, Entity] = {}
        for start in range(0, len(entity_ids), 500):
            chunk = entity_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for (doc,) in self.connection.execute(f"SELECT doc FROM entities WHERE id IN ({marks})", chunk):
                entity = orjson.loads(doc)
                found[entity["id"]] = entity
        return found

    def query(self, query: EntityQuery) -> QueryResult:
        conditions = self._conditions(query)
        if any(condition is FALSE for condition in conditions):
            return QueryResult([], 0 if query.count else None)
        where = " AND ".join(f"({c.sql})" for c in conditions) or "1"
        params = [p for c in conditions for p in c.params]
        sql_exact = all(c.exact for c in conditions) and query.scope is None
        c = self.connection
        if sql_exact and query.geo is None:
            total = None
            if query.count:
                total = c.execute(f"SELECT count(*) FROM entities e WHERE {where}", params).fetchone()[0]
            if query.limit == 0:
                return QueryResult([], total)
            rows = c.execute(
                f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.rid LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            )
            return QueryResult([orjson.loads(doc) for (doc,) in rows], total)
        return self._query_with_filter(query, where, params, sql_exact)

    def _query_with_filter(self, query: EntityQuery, where: str, params: list[Any], sql_exact: bool) -> QueryResult:
        """Walk candidates in order, decide each exactly, and keep the page (and the count)."""
        c = self.connection
        wanted_end = query.offset + query.limit
        page: list[Entity] = []
        matched = 0
        candidates: Iterable[tuple[Any, ...]]
        geo = query.geo
        plain_geo = sql_exact
        if geo is not None:
            attr_id = self.known_iri_id(geo.geoproperty)
            if attr_id is None:
                return QueryResult([], 0 if query.count else None)
            box = geo.bbox()
            if box is not None:
                min_lon, min_lat, max_lon, max_lat = box
                candidates = c.execute(
                    "SELECT g.rid, g.lon, g.lat, g.geojson FROM geo_rtree r JOIN geo g ON g.gid = r.gid "
                    f"JOIN entities e ON e.rid = g.rid WHERE r.min_lon <= ? AND r.max_lon >= ? AND r.min_lat <= ? "
                    f"AND r.max_lat >= ? AND g.attr_id = ? AND ({where}) ORDER BY g.rid",
                    [max_lon, min_lon, max_lat, min_lat, attr_id, *params],
                )
            else:
                candidates = c.execute(
                    "SELECT g.rid, g.lon, g.lat, g.geojson FROM geo g JOIN entities e ON e.rid = g.rid "
                    f"WHERE g.attr_id = ? AND ({where}) ORDER BY g.rid",
                    [attr_id, *params],
                )
            from shapely.geometry import shape  # local: only geo queries need it

            last_rid = None
            for rid, lon, lat, geojson in candidates:
                if rid == last_rid:
                    continue
                if lon is not None:
                    hit = geo.matches_point(lon, lat)
                else:
                    hit = geo.matches_geometry(shape(orjson.loads(geojson)))
                if not hit:
                    continue
                entity = None
                if not plain_geo:
                    entity = self._doc(rid)
                    if not query.matches(entity):
                        continue
                last_rid = rid
                matched += 1
                if query.offset < matched <= wanted_end:
                    page.append(entity if entity is not None else self._doc(rid))
                elif matched > wanted_end and not query.count:
                    break
        else:
            for rid, doc in c.execute(f"SELECT e.rid, e.doc FROM entities e WHERE {where} ORDER BY e.rid", params):
                entity = orjson.loads(doc)
                if not query.matches(entity):
                    continue
                matched += 1
                if query.offset < matched <= wanted_end:
                    page.append(entity)
                elif matched > wanted_end and not query.count:
                    break
        return QueryResult(page, matched if query.count else None)

    def _doc(self, rid: int) -> Entity:
        return orjson.loads(self.connection.execute("SELECT doc FROM entities WHERE rid = ?", (rid,)).fetchone()[0])

    # -- query compilation -------------------------------------------------------------------
    def _conditions(self, query: EntityQuery) -> list[_SqlCondition]:
        conditions: list[_SqlCondition] = []
        if query.selectors is not None:
            alternatives = [self._selector_condition(s) for s in query.selectors]
            alternatives = [a for a in alternatives if a is not FALSE]
            if not alternatives:
                return [FALSE]
            if len(alternatives) == 1:
                conditions.append(alternatives[0])
            else:
                conditions.append(
                    _SqlCondition(" OR ".join(f"({a.sql})" for a in alternatives), [p for a in alternatives for p in a.params])
                )
        if query.attrs is not None:
            ids = [i for i in (self.known_iri_id(a) for a in query.attrs) if i is not None]
            if not ids:
                return [FALSE]
            conditions.append(
                _SqlCondition(f"e.rid IN (SELECT rid FROM entity_attrs WHERE attr_id IN ({','.join('?' * len(ids))}))", ids)
            )
        if query.q is not None:
            conditions.append(self._q_condition(query.q))
        return conditions

    def _selector_condition(self, selector: Selector) -> _SqlCondition:
        parts: list[_SqlCondition] = []
        if selector.ids is not None:
            if not selector.ids:
                return FALSE
            parts.append(_SqlCondition(f"e.id IN ({','.join('?' * len(selector.ids))})", list(selector.ids)))
        if selector.id_pattern is not None:
            parts.append(_SqlCondition("e.id REGEXP ?", [selector.id_pattern.pattern]))
        if selector.types is not None:
            types = self._types_condition(selector.types)
            if types is FALSE:
                return FALSE
            parts.append(types)
        if not parts:
            return TRUE
        return _SqlCondition(" AND ".join(f"({p.sql})" for p in parts), [x for p in parts for x in p.params])

    def _types_condition(self, types: tuple[frozenset[str], ...]) -> _SqlCondition:
        alternatives = []
        for wanted in types:
            ids = [self.known_iri_id(t) for t in wanted]
            if any(i is None for i in ids):
                continue
            parts = [f"e.rid IN (SELECT rid FROM entity_types WHERE type_id = {i})" for i in ids]
            alternatives.append(" AND ".join(parts))
        if not alternatives:
            return FALSE
        return _SqlCondition(" OR ".join(f"({a})" for a in alternatives))

    def _q_condition(self, node: Node) -> _SqlCondition:
        if isinstance(node, Term):
            return self._term_condition(node)
        parts = [self._q_condition(child) for child in node.children]
        exact = all(p.exact for p in parts)
        if isinstance(node, And):
            if any(p is FALSE for p in parts):
                return FALSE
            parts = [p for p in parts if p.sql != "1"] or [TRUE]
            joiner = " AND "
        else:
            assert isinstance(node, Or)
            if any(p.sql == "1" for p in parts):
                return _SqlCondition("1", exact=exact)
            parts = [p for p in parts if p is not FALSE] or [FALSE]
            joiner = " OR "
        if len(parts) == 1:
            return _SqlCondition(parts[0].sql, parts[0].params, exact)
        return _SqlCondition(joiner.join(f"({p.sql})" for p in parts), [x for p in parts for x in p.params], exact)

    def _term_condition(self, term: Term) -> _SqlCondition:
        attr_id = self.known_iri_id(term.path.attr)
        if attr_id is None:
            return TRUE if term.op == "!exists" else FALSE
        kinds = self._kinds.get(attr_id, set())
        if not term.path.is_plain:
            return TRUE_INEXACT
        present = f"e.rid IN (SELECT rid FROM entity_attrs WHERE attr_id = {attr_id})"
        if term.op == "exists":
            return _SqlCondition(present)
        if term.op == "!exists":
            return _SqlCondition(f"NOT ({present})")
        if term.op in ("~=", "!~=") or not kinds <= INDEXED_KINDS:
            return TRUE_INEXACT
        literals = [term.low, term.high] if term.low is not None else list(term.values)
        if any(isinstance(literal, DateTimeLiteral) for literal in literals):
            return TRUE_INEXACT
        if term.op in ("==", "!="):
            equal = self._equal_condition(attr_id, term)
            if term.op == "==":
                return equal
            if equal is FALSE:
                return _SqlCondition(present)
            return _SqlCondition(f"{present} AND NOT ({equal.sql})", equal.params)
        literal = term.values[0]
        if isinstance(literal, bool):
            return FALSE
        column, kind = ("num", NUMBER) if isinstance(literal, (int, float)) else ("txt", STRING)
        return _SqlCondition(
            f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} AND {column} {term.op} ?)",
            [literal],
        )

    def _equal_condition(self, attr_id: int, term: Term) -> _SqlCondition:
        if term.low is not None:
            low, high = term.low, term.high
            if isinstance(low, bool) or isinstance(high, bool):
                return FALSE
            if isinstance(low, (int, float)) and isinstance(high, (int, float)):
                column, kind = "num", NUMBER
            elif isinstance(low, str) and isinstance(high, str):
                column, kind = "txt", STRING
            else:
                return FALSE
            return _SqlCondition(
                f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} "
                f"AND {column} BETWEEN ? AND ?)",
                [low, high],
            )
        parts, params = [], []
        numbers = [v for v in term.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        strings = [v for v in term.values if isinstance(v, str)]
        booleans = [v for v in term.values if isinstance(v, bool)]
        for kind, column, literals in ((NUMBER, "num", numbers), (STRING, "txt", strings), (BOOLEAN, "num", booleans)):
            if literals:
                marks = ",".join("?" * len(literals))
                parts.append(
                    f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} AND {column} IN ({marks}))"
                )
                params.extend(float(v) if kind == BOOLEAN else v for v in literals)
        if not parts:
            return FALSE
        return _SqlCondition(" OR ".join(parts), params)

    # -- discovery ---------------------------------------------------------------------------
    def types(self, with_attributes: bool) -> list[TypeSummary]:
        c = self.connection
        summaries = {
            type_id: TypeSummary(self.iri(type_id), count)
            for type_id, count in c.execute("SELECT type_id, count(*) FROM entity_types GROUP BY type_id")
        }
        if with_attributes and summaries:
            for type_id, attr_id, kind in c.execute(
                "SELECT DISTINCT t.type_id, a.attr_id, a.kind FROM entity_attrs a JOIN entity_types t ON t.rid = a.rid"
            ):
                summaries[type_id].attributes.setdefault(self.iri(attr_id), set()).add(KIND_NAME[kind])
        return sorted(summaries.values(), key=lambda s: s.type)

    def attributes(self) -> list[AttributeSummary]:
        c = self.connection
        summaries: dict[int, AttributeSummary] = {}
        for attr_id, count in c.execute("SELECT attr_id, count(DISTINCT rid) FROM entity_attrs GROUP BY attr_id"):
            summaries[attr_id] = AttributeSummary(self.iri(attr_id), count)
        for attr_id, kind in c.execute("SELECT DISTINCT attr_id, kind FROM entity_attrs"):
            summaries[attr_id].kinds.add(KIND_NAME[kind])
        for attr_id, type_id in c.execute(
            "SELECT DISTINCT a.attr_id, t.type_id FROM entity_attrs a JOIN entity_types t ON t.rid = a.rid"
        ):
            summaries[attr_id].types.add(self.iri(type_id))
        return sorted(summaries.values(), key=lambda s: s.attribute)

    def count(self) -> int:
        return self.connection.execute("SELECT count(*) FROM entities").fetchone()[0]


class SQLiteTransaction:
    def __init__(self, db: TenantDatabase):
        self.db = db
        self._savepoints = 0

    async def get(self, entity_id: str) -> Entity | None:
        return self.db.get(entity_id)

    async def get_many(self, entity_ids: list[str]) -> dict[str, Entity]:
        return self.db.get_many(entity_ids)

    async def insert(self, entity: Entity) -> None:
        self.db.insert(entity)

    async def replace(self, entity: Entity, previous: Entity) -> None:
        self.db.replace(entity, previous)

    async def delete(self, entity: Entity) -> None:
        self.db.delete(entity)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.db.connection.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.db.connection.execute(f"ROLLBACK TO {name}")
            self.db.connection.execute(f"RELEASE {name}")
            self.db.forget_caches()
            raise
        else:
            self.db.connection.execute(f"RELEASE {name}")


class SQLiteStore:
    """The embedded default store. ``path`` is a file, or ':memory:' for a throw-away hub."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", cache_mb: int = 64):
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.cache_mb = cache_mb
        self._tenants: dict[str, TenantDatabase] = {}

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    def _tenant_path(self, tenant: str) -> str:
        if self.in_memory:
            return ":memory:"
        if tenant == DEFAULT_TENANT:
            return self.path
        return str(Path(self.path + ".tenants") / f"{tenant}.db")

    @staticmethod
    def check_tenant_name(tenant: str) -> None:
        if tenant != DEFAULT_TENANT and not TENANT_NAME.match(tenant):
            raise BadRequestData(
                f"tenant {tenant!r} is not a valid tenant name (letters, digits, '_', '-', '.', up to 64 characters)"
            )

    async def open(self) -> None:
        if not self.in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._database(DEFAULT_TENANT, create=True)
        log.info("store: SQLite at %s (synchronous=%s)", self.path, self.synchronous)

    async def close(self) -> None:
        for db in self._tenants.values():
            db.close()
        self._tenants.clear()

    def _database(self, tenant: str, *, create: bool) -> TenantDatabase:
        db = self._tenants.get(tenant)
        if db is not None:
            return db
        self.check_tenant_name(tenant)
        path = self._tenant_path(tenant)
        if not create and (self.in_memory or not Path(path).exists()):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")
        if not self.in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = TenantDatabase(path, synchronous=self.synchronous, cache_mb=self.cache_mb)
        self._tenants[tenant] = db
        if tenant:
            log.info("store: opened tenant %s (%s)", tenant, path)
        return db

    async def tenant_exists(self, tenant: str) -> bool:
        try:
            self._database(tenant, create=False)
        except NonexistentTenant:
            return False
        return True

    @asynccontextmanager
    async def transaction(self, tenant: str) -> AsyncIterator[SQLiteTransaction]:
        db = self._database(tenant, create=True)
        async with db.lock:
            db.connection.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTransaction(db)
            except BaseException:
                db.connection.execute("ROLLBACK")
                db.forget_caches()
                raise
            else:
                db.connection.execute("COMMIT")

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        db = self._database(tenant, create=False)
        async with db.lock:
            return db.get(entity_id)

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        db = self._database(tenant, create=False)
        async with db.lock:
            return db.query(query)

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]:
        db = self._database(tenant, create=False)
        async with db.lock:
            return db.types(with_attributes)

    async def attributes(self, tenant: str) -> list[AttributeSummary]:
        db = self._database(tenant, create=False)
        async with db.lock:
            return db.attributes()

    async def count_entities(self, tenant: str) -> int:
        db = self._database(tenant, create=False)
        async with db.lock:
            return db.count()
