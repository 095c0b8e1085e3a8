"""Reading entities from PostgreSQL: lookups, queries and discovery.

SQL selects candidates by what the tables decide exactly (ids, types, the GiST index of
geometries for a geo-query's box); ``EntityQuery.matches`` then makes the full decision over
them (``q``, id patterns, scopes, the exact geometry test), in creation order, so the answer and
its paging are the same as the SQLite store's. Candidates are read through a cursor in chunks,
so a query that stops at its page does not read every candidate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import orjson

from ..hub.entity import Entity
from ..hub.geo import GeoQuery, geometry_of, haversine_m
from ..hub.query import EntityQuery, PageCollector, Selector, sort_entities
from ..hub.query_language import And, DateTimeLiteral, Term
from .contract import AttributeSummary, QueryResult, TypeSummary
from .postgres_connection import Params
from .postgres_schema import Iris
from .value_index import BOOLEAN, NUMBER, PRESENT, STRING, as_float

CHUNK = 500  # candidate documents read at a time
SELECTIVE_CAP = 5000  # a q term with more index rows than this is decided on the candidates, not joined
_POINT = "GeometryType(g.geom) = 'POINT'"


async def entities_by_id(connection: asyncpg.Connection, t: int, entity_ids: list[str]) -> dict[str, Entity]:
    """The named entities that exist."""
    rows = await connection.fetch("SELECT id, doc FROM entities WHERE t = $1 AND id = ANY($2::text[])", t, entity_ids)
    return dict(rows)


class _Sql:
    """A WHERE clause being built with numbered parameters ($1 is always the tenant)."""

    def __init__(self, t: int):
        self.params = Params([t])
        self.parts: list[str] = []
        self.param = self.params.add

    def copy(self) -> _Sql:
        other = _Sql(self.params[0])
        other.params.extend(self.params[1:])
        other.parts = list(self.parts)
        return other

    @property
    def where(self) -> str:
        return " AND ".join(["e.t = $1", *self.parts])


class EntityReader:
    def __init__(self, iris: Iris):
        self.iris = iris

    async def get(self, connection: asyncpg.Connection, t: int, entity_id: str) -> Entity | None:
        return await connection.fetchval("SELECT doc FROM entities WHERE t = $1 AND id = $2", t, entity_id)

    # -- queries ---------------------------------------------------------------------------------
    async def query(self, connection: asyncpg.Connection, t: int, query: EntityQuery) -> QueryResult:
        if query.order_by:
            everything = (
                await self.query(connection, t, replace(query, order_by=None, limit=2**62, offset=0, count=False))
            ).entities
            ordered = sort_entities(everything, query.order_by)
            return QueryResult(ordered[query.offset : query.offset + query.limit], len(ordered) if query.count else None)
        sql = _Sql(t)
        if not await self._select(connection, sql, query):
            return QueryResult([], 0 if query.count else None)
        if query.geo is not None:
            return await self._geo_query(connection, sql, query)
        rids = [
            rid
            for (rid,) in await connection.fetch(f"SELECT e.rid FROM entities e WHERE {sql.where} ORDER BY e.rid", *sql.params)
        ]
        return await self._page(connection, t, query, rids)

    async def _page(self, connection: asyncpg.Connection, t: int, query: EntityQuery, rids: list[int]) -> QueryResult:
        """Decide the candidates ``rids`` in this order, reading their documents a chunk at a time,
        until the page is full (and, with a count, to the end)."""
        collector = PageCollector(query)
        chunk = max(CHUNK, query.offset + query.limit) if not query.count else CHUNK
        for start in range(0, len(rids), chunk):
            part = rids[start : start + chunk]
            docs = await self._docs(connection, t, part)
            for rid in part:
                if rid in docs and not collector.offer(docs[rid]):
                    return QueryResult(collector.page, collector.count)
        return QueryResult(collector.page, collector.count)

    async def _select(self, connection: asyncpg.Connection, sql: _Sql, query: EntityQuery) -> bool:
        """Add what SQL decides exactly (ids, types, attributes present); False: nothing can match."""
        if query.selectors is not None:
            alternatives = [a for a in [await self._selector(connection, sql, s) for s in query.selectors] if a != "FALSE"]
            if not alternatives:
                return False
            if "TRUE" not in alternatives:
                sql.parts.append("(" + " OR ".join(f"({a})" for a in alternatives) + ")")
        if query.attrs is not None:
            known = await self.iris.known(connection, list(query.attrs))
            if not known:
                return False
            sql.parts.append(
                f"e.rid IN (SELECT rid FROM attr_values WHERE t = $1 AND attr_id = ANY({sql.param(list(known.values()))}::int[]))"
            )
        if query.q is not None:
            terms = [query.q] if isinstance(query.q, Term) else list(query.q.children) if isinstance(query.q, And) else []
            for term in await self._selective(connection, sql.params[0], [t for t in terms if isinstance(t, Term)]):
                narrowing = await self._narrowing(connection, sql, term)
                if narrowing == "FALSE":
                    return False
                if narrowing is not None:
                    sql.parts.append(f"e.rid IN ({narrowing})")
        return True

    async def _selective(self, connection: asyncpg.Connection, t: int, terms: list[Term]) -> list[Term]:
        """The terms worth narrowing by: each term's index rows are counted up to a cap; terms
        that reach it (a value most entities have, say) would cost more to join than to decide on
        the candidates the others leave. With none below the cap, the first term that narrows."""
        if len(terms) <= 1:
            return terms
        chosen: list[Term] = []
        fallback: list[Term] = []
        for term in terms:
            probe = _Sql(t)
            narrowing = await self._narrowing(connection, probe, term)
            if narrowing is None:
                continue
            if narrowing == "FALSE":
                return [term]
            found = await connection.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM ({narrowing}) AS u LIMIT {SELECTIVE_CAP}) AS s", *probe.params
            )
            (chosen if found < SELECTIVE_CAP else fallback).append(term)
        return chosen or fallback[:1]

    async def _narrowing(self, connection: asyncpg.Connection, sql: _Sql, term: Term) -> str | None:
        """A query of ``attr_values`` rids that holds every entity matching ``term`` (more may:
        ``matches`` decides); None when the index cannot narrow this term. Entities whose attribute holds
        no scalar (a PRESENT row) stay candidates whatever the comparison."""
        if term.op in ("!exists", "!=", "!~=", "~=") or not term.path.is_plain:
            return None
        known = await self.iris.known(connection, [term.path.attr])
        if not known:
            return "FALSE"
        attr = sql.param(known[term.path.attr])
        literals = [term.low, term.high] if term.low is not None else list(term.values)
        if term.op == "exists":
            alternatives = ["TRUE"]
        elif any(isinstance(literal, DateTimeLiteral) for literal in literals):
            return None
        elif term.low is not None:
            alternatives = _range(sql, term.low, term.high)
        elif term.op == "==":
            numbers = [as_float(v) for v in term.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            texts = [v for v in term.values if isinstance(v, str)]
            flags = [float(v) for v in term.values if isinstance(v, bool)]
            parts = [f"kind = {PRESENT}"]
            if numbers:
                parts.append(f"kind = {NUMBER} AND num = ANY({sql.param(numbers)}::float8[])")
            if texts:
                parts.append(f"kind = {STRING} AND txt = ANY({sql.param(texts)}::text[])")
            if flags:
                parts.append(f"kind = {BOOLEAN} AND num = ANY({sql.param(flags)}::float8[])")
            alternatives = parts
        else:
            literal = term.values[0]
            inclusive = term.op if term.op in ("<=", ">=") else term.op + "="  # floats may round an integer's edge
            if isinstance(literal, bool):
                alternatives = [f"kind = {PRESENT}"]
            elif isinstance(literal, (int, float)):
                alternatives = [
                    f"kind = {PRESENT}",
                    f"kind = {NUMBER} AND num {inclusive} {sql.param(as_float(literal))}::float8",
                ]
            else:
                alternatives = [f"kind = {PRESENT}", f"kind = {STRING} AND txt {inclusive} {sql.param(literal)}::text"]
        # one index range a branch (an OR inside one SELECT would read the table's rows instead)
        return " UNION ALL ".join(f"SELECT rid FROM attr_values WHERE t = $1 AND attr_id = {attr} AND {a}" for a in alternatives)

    async def _selector(self, connection: asyncpg.Connection, sql: _Sql, selector: Selector) -> str:
        parts = []
        if selector.ids is not None:
            if not selector.ids:
                return "FALSE"
            parts.append(f"e.id = ANY({sql.param(list(selector.ids))}::text[])")
        if selector.types is not None:
            alternatives = []
            for wanted in selector.types:
                known = await self.iris.known(connection, list(wanted))
                if len(known) < len(wanted):
                    continue  # a type no entity ever had
                alternatives.append(
                    " AND ".join(
                        f"e.rid IN (SELECT rid FROM entity_types WHERE t = $1 AND type_id = {n})" for n in known.values()
                    )
                )
            if not alternatives:
                return "FALSE"
            parts.append("(" + " OR ".join(f"({a})" for a in alternatives) + ")")
        return " AND ".join(parts) if parts else "TRUE"

    async def _geo_query(self, connection: asyncpg.Connection, sql: _Sql, query: EntityQuery) -> QueryResult:
        """Candidates from the GiST index (the query's box), decided exactly here, in result order:
        nearest first for ``near``, else creation order."""
        geo = query.geo
        assert geo is not None
        known = await self.iris.known(connection, [geo.geoproperty])
        if not known:
            return QueryResult([], 0 if query.count else None)
        attr_param = sql.param(known[geo.geoproperty])
        # entity conditions (ids, types, q narrowing) only when there are some
        joined = " JOIN entities e ON e.t = g.t AND e.rid = g.rid" if sql.parts else ""
        also = f" AND {sql.where}" if sql.parts else ""
        boxed = sql.copy()  # each statement gets the parameters it uses: values, not literals, so one plan serves every query
        box = geo.bbox()
        in_box = ""
        if box is not None:
            in_box = f" AND g.geom && ST_MakeEnvelope({', '.join(f'{boxed.param(float(v))}::float8' for v in box)}, 4326)"
        decided_here = query.q is None and query.scope is None and not any(s.id_pattern for s in query.selectors or ())
        if geo.relation == "near" and geo.point is not None and geo.max_distance is not None and decided_here and not query.count:
            shapes = f"FROM geo g{joined} WHERE g.t = $1 AND g.attr_id = {attr_param}{in_box} AND GeometryType(g.geom) <> 'POINT'{also}"
            points = f"FROM geo g{joined} WHERE g.t = $1 AND g.attr_id = {attr_param} AND g.geog IS NOT NULL{also}"
            found_shapes = await connection.fetch(f"SELECT g.rid, NULL, NULL, ST_AsGeoJSON(g.geom, 17) {shapes}", *boxed.params)
            found = await self._nearest(connection, geo, points, found_shapes, sql.copy(), query.offset + query.limit)
        else:
            rows = await connection.fetch(
                f"SELECT g.rid, CASE WHEN {_POINT} THEN ST_X(g.geom) END, CASE WHEN {_POINT} THEN ST_Y(g.geom) END, "
                f"CASE WHEN {_POINT} THEN NULL ELSE ST_AsGeoJSON(g.geom, 17) END "
                f"FROM geo g{joined} WHERE g.t = $1 AND g.attr_id = {attr_param}{in_box}{also}",
                *boxed.params,
            )
            found = _geo_decisions(geo, rows)
        ordered = [rid for _, rid in sorted((key, rid) for rid, key in found.items())]
        return await self._page(connection, sql.params[0], query, ordered)

    async def _nearest(
        self, connection: asyncpg.Connection, geo: GeoQuery, points: str, shapes: list[asyncpg.Record], sql: _Sql, needed: int
    ) -> dict[int, float]:
        """The ``needed`` points nearest the query point within its distance (and the shapes near
        it): the geography index hands points over nearest first and only the first few are read;
        a thin band around the limit is then decided by the great-circle distance
        (``GeoQuery.near_points``), as the SQLite store does."""
        lon0, lat0 = geo.point  # type: ignore[misc]
        limit = geo.max_distance or 0.0
        reach = limit + geo.band(limit)
        centre = f"ST_SetSRID(ST_MakePoint({sql.param(float(lon0))}::float8, {sql.param(float(lat0))}::float8), 4326)::geography"
        extra = 16
        nearest = f"SELECT g.rid, ST_X(g.geom), ST_Y(g.geom), NULL {points} ORDER BY g.geog <-> {centre}"
        rows = await connection.fetch(f"{nearest} LIMIT {needed + extra}", *sql.params)
        found = _geo_decisions(geo, [*rows, *shapes])
        if len(rows) == needed + extra and len(found) < needed and haversine_m(rows[-1][1], rows[-1][2], lon0, lat0) <= reach:
            # all that was read is inside the distance but some fell in the band: read every point inside
            within = f"{points} AND ST_DWithin(g.geog, {centre}, {reach!r}, false)"
            every = await connection.fetch(f"SELECT g.rid, ST_X(g.geom), ST_Y(g.geom), NULL {within}", *sql.params)
            found = _geo_decisions(geo, [*every, *shapes])
        return found

    async def _docs(self, connection: asyncpg.Connection, t: int, rids: list[int]) -> dict[int, Entity]:
        rows = await connection.fetch("SELECT rid, doc FROM entities WHERE t = $1 AND rid = ANY($2::bigint[])", t, rids)
        return dict(rows)

    # -- discovery ----------------------------------------------------------------------------------
    async def types(self, connection: asyncpg.Connection, t: int, with_attributes: bool) -> list[TypeSummary]:
        counts = await connection.fetch("SELECT type_id, count(*) FROM entity_types WHERE t = $1 GROUP BY type_id", t)
        names = await self.iris.names(connection, {type_id for type_id, _ in counts})
        summaries = {type_id: TypeSummary(names[type_id], count) for type_id, count in counts}
        if with_attributes and summaries:
            rows = await connection.fetch(
                "SELECT DISTINCT et.type_id, a.key, i->>'type' FROM entities e JOIN entity_types et ON et.t = e.t AND et.rid = e.rid, "
                "json_each(e.doc->'attrs') a, json_array_elements(a.value) i WHERE e.t = $1",
                t,
            )
            for type_id, attr, kind in rows:
                summaries[type_id].attributes.setdefault(attr, set()).add(kind or "Property")
        return sorted(summaries.values(), key=lambda s: s.type)

    async def attributes(self, connection: asyncpg.Connection, t: int) -> list[AttributeSummary]:
        summaries: dict[str, AttributeSummary] = {}
        rows = await connection.fetch(
            "SELECT a.key, count(DISTINCT e.rid), array_agg(DISTINCT i->>'type') FROM entities e, json_each(e.doc->'attrs') a, "
            "json_array_elements(a.value) i WHERE e.t = $1 GROUP BY a.key",
            t,
        )
        for attr, count, kinds in rows:
            summaries[attr] = AttributeSummary(attr, count, kinds={k or "Property" for k in kinds})
        typed = await connection.fetch(
            "SELECT DISTINCT a.key, et.type_id FROM entities e JOIN entity_types et ON et.t = e.t AND et.rid = e.rid, "
            "json_object_keys(e.doc->'attrs') a(key) WHERE e.t = $1",
            t,
        )
        names = await self.iris.names(connection, {type_id for _, type_id in typed})
        for attr, type_id in typed:
            summaries[attr].types.add(names[type_id])
        return sorted(summaries.values(), key=lambda s: s.attribute)


def _range(sql: _Sql, low: Any, high: Any) -> list[str]:
    if (
        isinstance(low, (int, float))
        and isinstance(high, (int, float))
        and not isinstance(low, bool)
        and not isinstance(high, bool)
    ):
        bounds = f"{sql.param(as_float(low))}::float8 AND {sql.param(as_float(high))}::float8"
        return [f"kind = {PRESENT}", f"kind = {NUMBER} AND num BETWEEN {bounds}"]
    if isinstance(low, str) and isinstance(high, str):
        return [f"kind = {PRESENT}", f"kind = {STRING} AND txt BETWEEN {sql.param(low)}::text AND {sql.param(high)}::text"]
    return [f"kind = {PRESENT}"]


def _geo_decisions(geo: GeoQuery, rows: list[asyncpg.Record]) -> dict[int, float]:
    """rid -> order key (distance for near, else the rid) of the rows whose geometry satisfies ``geo``."""
    found: dict[int, float] = {}
    points = [(rid, lon, lat) for rid, lon, lat, shape in rows if shape is None]
    if geo.relation == "near":
        if geo.point is not None:
            decided = geo.near_points(points)
        else:
            decided = [(rid, geo.distance_m(None, (lon, lat))) for rid, lon, lat in points]
            decided = [(rid, d) for rid, d in decided if geo.distance_ok(d)]
        for rid, distance in decided:
            if rid not in found or distance < found[rid]:
                found[rid] = distance
    else:
        for rid in geo.matching_points(points):
            found[rid] = float(rid)
    for rid, _, _, shape in rows:
        if shape is not None:
            geo.order_shape(found, rid, geometry_of(orjson.loads(shape)))
    return found
