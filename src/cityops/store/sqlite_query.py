"""Reading a tenant's SQLite database: entity lookups, queries and discovery.

A query is compiled to SQL over the index tables where the indexes answer exactly; what they
cannot decide exactly (sub-attribute paths, regular expressions, DateTime comparisons, the exact
geometry test) runs as ``EntityQuery.matches`` over the candidates SQL returned, which are then
always a superset of the answer.

Each reader has its own connection and is used by one thread at a time (the event loop's for quick
lookups, a query thread for queries); WAL lets it read while the writer thread writes. Each read
sees the last committed state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from ..hub.entity import Entity
from ..hub.geo import GeoQuery, geometry_of
from ..hub.query import EntityQuery, PageCollector, Selector, sort_entities
from ..hub.query_language import And, DateTimeLiteral, Node, Or, Term
from ..hub.temporal import TemporalEntity, TemporalQuery
from .contract import AttributeSummary, QueryResult, TypeSummary
from .history import select_by_current_state
from .sqlite_geo import cover
from .sqlite_history import HistoryReader
from .sqlite_plan import (
    ESTIMATE_CAP,
    Conjunct,
    equality_conjunct,
    membership_conjunct,
    negated_conjunct,
    plan_sql,
    range_conjunct,
    smallest_estimate,
    type_conjunct,
)
from .sqlite_schema import IriCache, load_kinds
from .value_index import BOOLEAN, INDEXED_KINDS, KIND_NAME, NUMBER, STRING


def _point_source(box: tuple[float, float, float, float] | None, join: str, attr_id: int) -> tuple[str, str, list[Any]]:
    """(WITH clause, FROM ... WHERE source, parameters) listing the points of one GeoProperty that
    may lie in ``box``: the Z-order key ranges covering it, or every point when there is no box."""
    if box is None:
        return "", f"geo_points g{join} WHERE g.attr_id = ?", [attr_id]
    ranges = cover(*box)
    values = ",".join("(?, ?)" for _ in ranges)
    source = f"ranges r CROSS JOIN geo_points g{join} WHERE g.attr_id = ? AND g.cell BETWEEN r.low AND r.high"
    return f"WITH ranges (low, high) AS (VALUES {values}) ", source, [x for pair in ranges for x in pair] + [attr_id]


def _range_kind(low: Any, high: Any) -> int | None:
    """The value kind a range ``low..high`` compares, or None when its ends are of different kinds."""
    if isinstance(low, bool) or isinstance(high, bool):
        return None
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return NUMBER
    if isinstance(low, str) and isinstance(high, str):
        return STRING
    return None


class _SqlCondition:
    """A WHERE fragment with its parameters; ``exact`` is False when it only narrows candidates."""

    __slots__ = ("sql", "params", "exact")

    def __init__(self, sql: str, params: list[Any] | None = None, exact: bool = True):
        self.sql, self.params, self.exact = sql, params or [], exact


TRUE_INEXACT = _SqlCondition("1", exact=False)
FALSE = _SqlCondition("0")
TRUE = _SqlCondition("1")


class Reader:
    def __init__(self, connection: sqlite3.Connection, database: str = ""):
        self.connection = connection
        self.database = database
        self.iris = IriCache(connection)
        self.history = HistoryReader(connection, self.iris)
        self._kinds: dict[int, set[int]] = load_kinds(connection)
        self._data_version = self._version()

    def _version(self) -> int:
        return self.connection.execute("PRAGMA data_version").fetchone()[0]

    def _refresh(self) -> None:
        """Another connection committed since the last read: reload what may have grown."""
        version = self._version()
        if version != self._data_version:
            self._data_version = version
            self._kinds = load_kinds(self.connection)

    # -- history -------------------------------------------------------------------------------
    def temporal_entity(self, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        return self.read(self._temporal_entity, entity_id, query)

    def _temporal_entity(self, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        found = self.history.entity(entity_id)
        if found is None:
            return None
        return self._history_of(found[0], entity_id, found[1], query)

    def _history_of(self, tid: int, entity_id: str, types: list[str], query: TemporalQuery) -> TemporalEntity:
        if query.aggregation is not None:
            return TemporalEntity(entity_id, types, aggregated=self.history.aggregated(tid, query))
        attrs, times = self.history.instances(tid, query)
        return TemporalEntity(entity_id, types, attrs=attrs, times=times)

    def temporal_query(
        self, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        return self.read(self._temporal_query, selectors, query, limit, offset, count)

    def _temporal_query(
        self, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        if query.order_by is None and query.entity_filter is None:
            page, total = self.history.entities(selectors, limit, offset, count, query)
        else:  # filtered and ordered by the entities' current state; those without one come last
            everything, _ = self.history.entities(selectors, 2**62, 0, False, query)
            current = {e["id"]: e for e in (self.get(entity_id) for _, entity_id, _ in everything) if e is not None}
            page, total = select_by_current_state(everything, current, query, limit, offset, count)
        return [self._history_of(tid, entity_id, types, query) for tid, entity_id, types in page], total

    def _known(self, iri: str) -> int | None:
        return self.iris.id(iri, create=False)

    def close(self) -> None:
        self.connection.close()

    def get(self, entity_id: str) -> Entity | None:
        row = self.connection.execute("SELECT doc FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def read(self, function: Any, *args: Any) -> Any:
        """Run several statements against one snapshot (taken before the caches are checked, so
        the attribute kinds the query is compiled with are those of the data it reads)."""
        self.connection.execute("BEGIN")
        try:
            self.connection.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
            self._refresh()
            return function(*args)
        finally:
            self.connection.execute("COMMIT")

    def query(self, query: EntityQuery) -> QueryResult:
        return self.read(self._query, query)

    def _query(self, query: EntityQuery) -> QueryResult:
        if query.order_by:
            everything = self._query(replace(query, order_by=None, limit=2**62, offset=0, count=False)).entities
            ordered = sort_entities(everything, query.order_by)
            return QueryResult(ordered[query.offset : query.offset + query.limit], len(ordered) if query.count else None)
        conditions = self._conditions(query)
        if any(condition is FALSE for condition in conditions):
            return QueryResult([], 0 if query.count else None)
        where = " AND ".join(f"({c.sql})" for c in conditions) or "1"
        params = [p for c in conditions for p in c.params]
        sql_exact = all(c.exact for c in conditions) and query.scope is None
        c = self.connection
        if sql_exact and query.geo is None:
            planned = self._planned(query)
            if planned is not None:
                return planned
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

    def _planned(self, query: EntityQuery) -> QueryResult | None:
        """The answer through the conjunction planner, when the query is one and worth it."""
        conjuncts = self._conjuncts(query)
        if conjuncts is None:
            return None
        if conjuncts == "empty":
            return QueryResult([], 0 if query.count else None)
        plan = plan_sql(conjuncts, self.connection, self.database)
        if plan is None:
            return None
        if not query.count and smallest_estimate(conjuncts) > ESTIMATE_CAP:
            return None  # large and unselective: walking entities in order and stopping at the page is cheaper
        sql, params = plan
        # One row for the whole listing: SQLite walks it in a single step, without the GIL.
        (listing,) = self.connection.execute(f"SELECT group_concat(rid) FROM ({sql})", params).fetchone()
        rids = sorted(set(map(int, listing.split(",")))) if listing else []
        page = rids[query.offset : query.offset + query.limit]
        return QueryResult(self._docs(page), len(rids) if query.count else None)

    def _conjuncts(self, query: EntityQuery) -> list[Conjunct] | str | None:
        conjuncts: list[Conjunct] = []
        if query.selectors is not None:
            if len(query.selectors) != 1:
                return None
            selector = query.selectors[0]
            if selector.id_pattern is not None:
                return None
            if selector.ids is not None:
                marks = ",".join("?" * len(selector.ids))
                conjuncts.append(membership_conjunct("entities", f"id IN ({marks})", list(selector.ids)))
            if selector.types is not None:
                if len(selector.types) != 1:
                    return None
                for type_iri in selector.types[0]:
                    type_id = self._known(type_iri)
                    if type_id is None:
                        return "empty"
                    conjuncts.append(type_conjunct(type_id))
        if query.attrs is not None:
            ids = [i for i in (self._known(a) for a in query.attrs) if i is not None]
            if not ids:
                return "empty"
            conjuncts.append(membership_conjunct("attr_values", f"attr_id IN ({','.join(map(str, ids))})", []))
        if query.q is not None:
            terms = [query.q] if isinstance(query.q, Term) else list(query.q.children) if isinstance(query.q, And) else None
            if terms is None or not all(isinstance(t, Term) for t in terms):
                return None
            for term in terms:
                found = self._term_conjuncts(term)  # type: ignore[arg-type]
                if found is None or found == "empty":
                    return found
                conjuncts.extend(found)
        return conjuncts or None

    def _term_conjuncts(self, term: Term) -> list[Conjunct] | str | None:
        condition = self._term_condition(term)
        if not condition.exact:
            return None
        attr_id = self._known(term.path.attr)
        if attr_id is None:
            return [] if term.op == "!exists" else "empty"
        if condition is FALSE:
            return "empty"
        present = f"attr_id = {attr_id}"
        if term.op == "exists":
            return [range_conjunct(present, [])]
        if term.op == "!exists":
            return [negated_conjunct(present, [])]
        if term.low is not None:
            kind = _range_kind(term.low, term.high)
            if kind is None:  # ends of different kinds: no value is inside
                return "empty" if term.op == "==" else [range_conjunct(present, [])]
            equal = f"attr_id = {attr_id} AND kind = {kind} AND val BETWEEN ? AND ?"
            params = [term.low, term.high]
            if term.op == "==":
                return [range_conjunct(equal, params)]
            return [range_conjunct(present, []), negated_conjunct(equal, params)]
        if term.op in ("==", "!="):
            kinds = {NUMBER if isinstance(v, (int, float)) and not isinstance(v, bool) else STRING if isinstance(v, str) else BOOLEAN for v in term.values}
            if len(kinds) != 1:
                return None
            kind = kinds.pop()
            values = [int(v) if kind == BOOLEAN else v for v in term.values]
            if term.op == "==":
                return [equality_conjunct(attr_id, kind, values)]
            marks = ",".join("?" * len(values))
            return [range_conjunct(present, []), negated_conjunct(f"attr_id = {attr_id} AND kind = {kind} AND val IN ({marks})", values)]
        literal = term.values[0]
        kind = NUMBER if isinstance(literal, (int, float)) else STRING
        return [range_conjunct(f"attr_id = {attr_id} AND kind = {kind} AND val {term.op} ?", [literal])]

    def _query_with_filter(self, query: EntityQuery, where: str, params: list[Any], sql_exact: bool) -> QueryResult:
        """Decide candidates exactly, in result order, and keep the page (and the count)."""
        if query.geo is not None:
            needed = None if query.count or not sql_exact else query.offset + query.limit
            ordered = [rid for _, rid in self._geo_matches(query.geo, where, params, needed)]
            if sql_exact:
                page_rids = ordered[query.offset : query.offset + query.limit]
                return QueryResult(self._docs(page_rids), len(ordered) if query.count else None)
            candidates: Iterable[tuple[int, Entity]] = ((rid, self._doc(rid)) for rid in ordered)
        else:
            candidates = (
                (rid, orjson.loads(doc))
                for rid, doc in self.connection.execute(f"SELECT e.rid, e.doc FROM entities e WHERE {where} ORDER BY e.rid", params)
            )
        collector = PageCollector(query)
        for _, entity in candidates:
            if not collector.offer(entity):
                break
        return QueryResult(collector.page, collector.count)

    def _geo_matches(self, geo: GeoQuery, where: str, params: list[Any], needed: int | None = None) -> list[tuple[float, int]]:
        """(order key, rid) of the entities whose GeoProperty satisfies ``geo`` and whose row satisfies
        ``where``, in result order: by distance for ``near``, else by creation order. With ``needed``,
        a near-query may stop after the ``needed`` nearest points."""
        attr_id = self._known(geo.geoproperty)
        if attr_id is None:
            return []
        box = geo.bbox()
        join = "" if where == "1" else " JOIN entities e ON e.rid = g.rid"
        condition = "" if where == "1" else f" AND ({where})"
        found: dict[int, float] = {}
        near_point = geo.relation == "near" and geo.point is not None

        # points, through their Z-order keys
        if near_point:
            self._near_points(geo, attr_id, box, join, condition, params, needed, found)
        else:
            head, source, source_params = _point_source(box, join, attr_id)
            rows = self.connection.execute(f"{head}SELECT g.rid, g.lon, g.lat FROM {source}{condition}", source_params + params).fetchall()
        if geo.relation == "near" and not near_point:
            for rid, lon, lat in rows:
                distance = geo.distance_m(None, (lon, lat))
                if geo.distance_ok(distance) and (rid not in found or distance < found[rid]):
                    found[rid] = distance
        elif not near_point:
            for rid in geo.matching_points(rows):
                found[rid] = float(rid)

        # other geometries, through the R*Tree
        if box is None:
            shapes = self.connection.execute(
                f"SELECT g.rid, g.geojson FROM geo_shapes g{join} WHERE g.attr_id = ?{condition}", [attr_id, *params]
            )
        else:
            min_lon, min_lat, max_lon, max_lat = box
            shapes = self.connection.execute(
                f"SELECT g.rid, g.geojson FROM geo_rtree t JOIN geo_shapes g ON g.gid = t.gid{join} WHERE t.min_lon <= ? "
                f"AND t.max_lon >= ? AND t.min_lat <= ? AND t.max_lat >= ? AND g.attr_id = ?{condition}",
                [max_lon, min_lon, max_lat, min_lat, attr_id, *params],
            )
        for rid, geojson in shapes:
            geo.order_shape(found, rid, geometry_of(orjson.loads(geojson)))
        return sorted((key, rid) for rid, key in found.items())

    def _near_points(
        self,
        geo: GeoQuery,
        attr_id: int,
        box: tuple[float, float, float, float] | None,
        join: str,
        condition: str,
        params: list[Any],
        needed: int | None,
        found: dict[int, float],
    ) -> None:
        """Points near the query point, nearest first: SQLite computes a planar distance for each
        candidate, filters and sorts by it (stopping after ``needed`` when it may); a thin band around
        the limit is then decided by the great-circle distance (``GeoQuery.near_points``)."""
        lon0, lat0 = geo.point  # type: ignore[misc]
        kx, ky = geo.metres_per_degree()
        d2 = f"((g.lon - {lon0!r}) * {kx!r}) * ((g.lon - {lon0!r}) * {kx!r}) + ((g.lat - {lat0!r}) * {ky!r}) * ((g.lat - {lat0!r}) * {ky!r})"
        limit = geo.max_distance if geo.max_distance is not None else geo.min_distance or 0.0
        margin = geo.band(limit)
        bound = f"{d2} <= {(limit + margin) ** 2!r}" if geo.max_distance is not None else f"{d2} >= {max(0.0, limit - margin) ** 2!r}"
        head, source, source_params = _point_source(box, join, attr_id)
        sql = f"{head}SELECT g.rid, g.lon, g.lat FROM {source} AND {bound}{condition} ORDER BY {d2}, g.rid"
        arguments = source_params + list(params)
        extra = 16
        rows = self.connection.execute(sql + (f" LIMIT {needed + extra}" if needed is not None else ""), arguments).fetchall()
        accepted = geo.near_points(rows)
        if needed is not None and len(rows) == needed + extra and len({rid for rid, _ in accepted}) < needed:
            accepted = geo.near_points(self.connection.execute(sql, arguments).fetchall())
        for rid, distance in accepted:
            if rid not in found or distance < found[rid]:
                found[rid] = distance

    def _docs(self, rids: list[int]) -> list[Entity]:
        if not rids:
            return []
        marks = ",".join("?" * len(rids))
        docs = dict(self.connection.execute(f"SELECT rid, doc FROM entities WHERE rid IN ({marks})", rids).fetchall())
        return [orjson.loads(docs[rid]) for rid in rids]

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
            ids = [i for i in (self._known(a) for a in query.attrs) if i is not None]
            if not ids:
                return [FALSE]
            conditions.append(
                _SqlCondition(f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id IN ({','.join('?' * len(ids))}))", ids)
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
            ids = [self._known(t) for t in wanted]
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
        attr_id = self._known(term.path.attr)
        if attr_id is None:
            return TRUE if term.op == "!exists" else FALSE
        kinds = self._kinds.get(attr_id, set())
        if not term.path.is_plain:
            return TRUE_INEXACT
        present = f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id})"
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
        kind = NUMBER if isinstance(literal, (int, float)) else STRING
        return _SqlCondition(
            f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} AND val {term.op} ?)",
            [literal],
        )

    def _equal_condition(self, attr_id: int, term: Term) -> _SqlCondition:
        if term.low is not None:
            low, high = term.low, term.high
            kind = _range_kind(low, high)
            if kind is None:
                return FALSE
            return _SqlCondition(
                f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} AND val BETWEEN ? AND ?)",
                [low, high],
            )
        parts, params = [], []
        numbers = [v for v in term.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        strings = [v for v in term.values if isinstance(v, str)]
        booleans = [v for v in term.values if isinstance(v, bool)]
        for kind, literals in ((NUMBER, numbers), (STRING, strings), (BOOLEAN, booleans)):
            if literals:
                marks = ",".join("?" * len(literals))
                parts.append(f"e.rid IN (SELECT rid FROM attr_values WHERE attr_id = {attr_id} AND kind = {kind} AND val IN ({marks}))")
                params.extend(int(v) if kind == BOOLEAN else v for v in literals)
        if not parts:
            return FALSE
        return _SqlCondition(" OR ".join(parts), params)

    # -- discovery ---------------------------------------------------------------------------
    def types(self, with_attributes: bool) -> list[TypeSummary]:
        return self.read(self._types, with_attributes)

    def _types(self, with_attributes: bool) -> list[TypeSummary]:
        c = self.connection
        summaries = {
            type_id: TypeSummary(self.iris.iri(type_id), count)
            for type_id, count in c.execute("SELECT type_id, count(*) FROM entity_types GROUP BY type_id")
        }
        if with_attributes and summaries:
            for type_id, attr_id, kind in c.execute(
                "SELECT DISTINCT t.type_id, a.attr_id, a.akind FROM attr_values a JOIN entity_types t ON t.rid = a.rid"
            ):
                summaries[type_id].attributes.setdefault(self.iris.iri(attr_id), set()).add(KIND_NAME[kind])
        return sorted(summaries.values(), key=lambda s: s.type)

    def attributes(self) -> list[AttributeSummary]:
        return self.read(self._attributes)

    def _attributes(self) -> list[AttributeSummary]:
        c = self.connection
        summaries: dict[int, AttributeSummary] = {}
        for attr_id, count in c.execute("SELECT attr_id, count(DISTINCT rid) FROM attr_values GROUP BY attr_id"):
            summaries[attr_id] = AttributeSummary(self.iris.iri(attr_id), count)
        for attr_id, kind in c.execute("SELECT DISTINCT attr_id, akind FROM attr_values"):
            summaries[attr_id].kinds.add(KIND_NAME[kind])
        for attr_id, type_id in c.execute(
            "SELECT DISTINCT a.attr_id, t.type_id FROM attr_values a JOIN entity_types t ON t.rid = a.rid"
        ):
            summaries[attr_id].types.add(self.iris.iri(type_id))
        return sorted(summaries.values(), key=lambda s: s.attribute)
