"""Reading history in PostgreSQL: the temporal representation of entities, and aggregations
computed in the database. Every function takes the connection to read on; a tenant's entities
are found by tenant number, and their history by ``tid`` (unique across tenants)."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..hub.query import Selector
from ..hub.temporal import TemporalQuery, instance_id
from .history import TIME_COLUMN, AggregatedAnswer
from .postgres_connection import Params
from .postgres_schema import Iris

# The SQL aggregates each method needs (``RAW_AGGREGATES`` says which). A distinct count counts
# distinct values of any kind, as SQLite's coalesce(num, json_extract(doc, '$.value')) does: the
# number when there is one, else the JSON value, with true and false counting as the numbers 1
# and 0 (SQLite's json_extract gives them so), JSON null and a missing value not at all.
_AGGREGATE_SQL = {
    "count": "count(*)",
    "distinct": (
        "count(DISTINCT coalesce(to_jsonb(num), CASE json_typeof(doc->'value') "
        "WHEN 'boolean' THEN to_jsonb((doc->>'value')::boolean::int) WHEN 'null' THEN NULL ELSE (doc->'value')::jsonb END))"
    ),
    "sum": "sum(num)",
    "avg": "avg(num)",
    "min": "min(num)",
    "max": "max(num)",
    "sumsq": "sum(num * num)",
    "numbers": "count(num)",
}


class HistoryReader:
    """History queries; one per store, used on any connection (it keeps only the IRI cache)."""

    def __init__(self, iris: Iris):
        self.iris = iris

    async def entities(
        self,
        conn: asyncpg.Connection,
        t: int,
        selectors: tuple[Selector, ...] | None,
        limit: int,
        offset: int,
        count: bool,
        query: TemporalQuery | None = None,
    ) -> tuple[list[tuple[int, str, list[str]]], int | None]:
        """(tid, id, types) of the tenant's entities with history that match ``selectors``, in
        creation order; with a time window in ``query``, only those with an instance in it."""
        params = Params([t])
        where = ["te.t = $1"]
        if selectors is not None:
            where.append(await self._selection(conn, selectors, params))
        if query is not None and query.timerel is not None:
            where.append(f"EXISTS (SELECT 1 FROM history WHERE {await self._filter(conn, 'te.tid', query, params)})")
        sql = f"SELECT te.tid, te.id, te.types FROM temporal_entities te WHERE {' AND '.join(where)} ORDER BY te.tid"
        patterned = selectors is not None and any(s.id_pattern is not None for s in selectors)
        if patterned:  # Python's regular expressions are not PostgreSQL's: the pattern is applied here
            rows = await self._named_types(conn, await conn.fetch(sql, *params))
            rows = [row for row in rows if any(s.matches({"id": row[1], "type": row[2]}) for s in selectors or ())]
            return rows[offset : offset + limit], len(rows) if count else None
        total = None
        if count:
            total = await conn.fetchval(f"SELECT count(*) FROM temporal_entities te WHERE {' AND '.join(where)}", *params)
        limited = f"{sql} LIMIT {params.add(limit, '::bigint')} OFFSET {params.add(offset, '::bigint')}"
        return await self._named_types(conn, await conn.fetch(limited, *params)), total

    async def entity(self, conn: asyncpg.Connection, t: int, entity_id: str) -> tuple[int, list[str]] | None:
        row = await conn.fetchrow("SELECT tid, types FROM temporal_entities WHERE t = $1 AND id = $2", t, entity_id)
        if row is None:
            return None
        names = await self.iris.names(conn, set(row[1]))
        return row[0], [names[number] for number in row[1]]

    async def _named_types(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[tuple[int, str, list[str]]]:
        names = await self.iris.names(conn, {number for row in rows for number in row[2]})
        return [(tid, entity_id, [names[number] for number in types]) for tid, entity_id, types in rows]

    async def _selection(self, conn: asyncpg.Connection, selectors: tuple[Selector, ...], params: Params) -> str:
        """A condition on ``te`` that holds for the entities any selector selects by id and type
        (an id pattern is left to ``Selector.matches``)."""
        wanted_iris = [iri for s in selectors for wanted in s.types or () for iri in wanted]
        known = await self.iris.known(conn, wanted_iris)
        either = []
        for selector in selectors:
            both = []
            if selector.ids is not None:
                both.append(f"te.id = ANY({params.add(list(selector.ids), '::text[]')})")
            if selector.types is not None:
                type_sets = [[known[iri] for iri in wanted] for wanted in selector.types if all(iri in known for iri in wanted)]
                any_set = [f"te.types @> {params.add(numbers, '::int[]')}" for numbers in type_sets]
                both.append(f"({' OR '.join(any_set)})" if any_set else "FALSE")
            either.append(f"({' AND '.join(both)})" if both else "TRUE")
        return f"({' OR '.join(either)})" if either else "FALSE"

    async def _filter(self, conn: asyncpg.Connection, tid: str, query: TemporalQuery, params: Params) -> str:
        """The condition on ``history`` rows of entity ``tid`` (a placeholder or a column) the query
        selects: attributes, datasets and the time window on its time property."""
        column = TIME_COLUMN[query.timeproperty]
        where = [f"tid = {tid}"]
        if column == "deleted":
            where.append("deleted IS NOT NULL")
        if query.attrs is not None:
            where.append(f"attr_id = ANY({params.add(await self._named_ids(conn, query.attrs), '::int[]')})")
        if query.datasets is not None:
            named = [d for d in query.datasets if d is not None]
            either = [f"dataset = ANY({params.add(named, '::text[]')})"] if named else []
            if None in query.datasets:
                either.append("dataset IS NULL")
            where.append(f"({' OR '.join(either) or 'FALSE'})")
        start, end = query.start, query.end
        if query.timerel == "before":
            where.append(f"{column} < {params.add(end, '::float8')}")
        elif query.timerel == "after":
            where.append(f"{column} >= {params.add(start, '::float8')}")
        elif query.timerel == "between":
            where.append(f"{column} >= {params.add(start, '::float8')} AND {column} < {params.add(end, '::float8')}")
        return " AND ".join(where)

    async def instances(
        self, conn: asyncpg.Connection, tid: int, query: TemporalQuery
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
        """The attribute instances of one entity in the window, oldest first, with their times: per
        attribute at most ``instance_limit`` + 1 (the earliest, or with lastN the most recent), so
        that ``paginate`` can tell when the limit cuts an answer short."""
        params = Params([tid])
        where = await self._filter(conn, "$1", query, params)
        column = TIME_COLUMN[query.timeproperty]
        order, take = "ASC", query.instance_limit + 1
        if query.last_n is not None:
            order, take = "DESC", min(query.last_n, take)
        sql = (
            f"SELECT iid, attr_id, doc, tm FROM (SELECT iid, attr_id, doc, {column} AS tm, ROW_NUMBER() OVER "
            f"(PARTITION BY attr_id ORDER BY {column} {order}, iid {order}) AS n FROM history WHERE {where}) AS ranked "
            f"WHERE n <= {params.add(take, '::bigint')} ORDER BY attr_id, tm, iid"
        )
        rows = await conn.fetch(sql, *params)
        names = await self.iris.names(conn, {row[1] for row in rows})
        attrs: dict[str, list[dict[str, Any]]] = {}
        times: dict[str, list[float]] = {}
        for iid, attr_id, instance, time in rows:
            instance["instanceId"] = instance_id(iid)
            iri = names[attr_id]
            attrs.setdefault(iri, []).append(instance)
            times.setdefault(iri, []).append(time)
        return attrs, times

    async def aggregated(self, conn: asyncpg.Connection, tid: int, query: TemporalQuery) -> dict[str, dict[str, list[list[Any]]]]:
        """Per attribute and method, [[value, startAt, endAt], ...] over buckets of ``aggrPeriodDuration``.

        Buckets start at ``timeAt`` (or the earliest instance of any attribute); an instance is in
        bucket n when origin + n x period <= its time < origin + (n + 1) x period, computed as the
        bucket's bounds are shown. Empty buckets are left out; a period of 0 is one bucket up to
        ``endTimeAt`` (or the latest instance)."""
        assert query.aggregation is not None
        attr_ids = await self._attribute_ids(conn, tid, query)
        if not attr_ids:
            return {}
        params = Params([tid])
        where = await self._filter(conn, "$1", query, params)
        column = TIME_COLUMN[query.timeproperty]
        # per attribute its first and last time, each an index lookup when the time is observedAt
        span_params = Params(params)
        spans_sql = (
            f"SELECT a.id, s.low, s.high FROM unnest({span_params.add(attr_ids, '::int[]')}) WITH ORDINALITY AS a(id, position) "
            f"CROSS JOIN LATERAL (SELECT min({column}) AS low, max({column}) AS high FROM history WHERE {where} AND attr_id = a.id) s "
            f"WHERE s.low IS NOT NULL ORDER BY a.position"
        )
        spans = {attr_id: (low, high) for attr_id, low, high in await conn.fetch(spans_sql, *span_params)}
        if not spans:
            return {}
        answer = AggregatedAnswer.over(query, spans)
        origin, period = answer.origin, query.aggregation.period
        aggregates = ", ".join(_AGGREGATE_SQL[raw] for raw in answer.needed)
        selected = f"{where} AND attr_id = ANY({params.add(list(spans), '::int[]')})"
        if period <= 0:
            placed = f"SELECT attr_id, num, doc, 0::bigint AS bucket FROM history WHERE {selected}"
        else:
            start, width = params.add(origin, "::float8"), params.add(period, "::float8")
            # floor() may land one off the shown bounds where float rounding differs: put it right
            placed = (
                f"SELECT attr_id, num, doc, guess + CASE WHEN tm >= {start} + (guess + 1) * {width} THEN 1 "
                f"WHEN tm < {start} + guess * {width} THEN -1 ELSE 0 END AS bucket FROM ("
                f"SELECT attr_id, num, doc, {column} AS tm, floor(({column} - {start}) / {width})::bigint AS guess "
                f"FROM history WHERE {selected}) AS guessed"
            )
        sql = f"SELECT attr_id, bucket, {aggregates} FROM ({placed}) AS placed GROUP BY attr_id, bucket ORDER BY attr_id, bucket"
        rows = await conn.fetch(sql, *params)
        names = await self.iris.names(conn, set(spans))
        result: dict[str, dict[str, list[list[Any]]]] = {names[attr_id]: {} for attr_id in spans}
        for attr_id, number, *values in rows:
            answer.add(result[names[attr_id]], number, values)
        return result

    async def _attribute_ids(self, conn: asyncpg.Connection, tid: int, query: TemporalQuery) -> list[int]:
        if query.attrs is not None:
            return await self._named_ids(conn, query.attrs)
        # a skip-scan of the history index: one step per attribute, not per instance
        sql = (
            "WITH RECURSIVE a(id) AS (SELECT min(attr_id) FROM history WHERE tid = $1 "
            "UNION ALL SELECT (SELECT min(attr_id) FROM history WHERE tid = $1 AND attr_id > a.id) FROM a WHERE a.id IS NOT NULL) "
            "SELECT id FROM a WHERE id IS NOT NULL"
        )
        return [row[0] for row in await conn.fetch(sql, tid)]

    async def _named_ids(self, conn: asyncpg.Connection, names: tuple[str, ...]) -> list[int]:
        known = await self.iris.known(conn, list(names))
        return list(dict.fromkeys(known[name] for name in names if name in known))
