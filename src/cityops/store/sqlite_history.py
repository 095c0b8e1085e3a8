"""Reading history: the temporal representation of entities, and aggregations computed in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from ..hub.query import Selector
from ..hub.temporal import TemporalQuery, instance_id
from .history import TIME_COLUMN, AggregatedAnswer
from .sqlite_schema import IriCache

# The SQL aggregates each method needs, and how the method's value follows from them.
_AGGREGATE_SQL = {
    "count": "count(*)",
    "distinct": "count(DISTINCT coalesce(num, json_extract(doc, '$.value')))",
    "sum": "sum(num)",
    "avg": "avg(num)",
    "min": "min(num)",
    "max": "max(num)",
    "sumsq": "sum(num * num)",
    "numbers": "count(num)",
}
# Up to this many buckets an aggregation reads one time range per bucket; beyond, it groups.
_RANGED_BUCKETS = 20_000


class HistoryReader:
    """History queries over one connection (used by one thread at a time, like ``Reader``)."""

    def __init__(self, connection: sqlite3.Connection, iris: IriCache):
        self.connection = connection
        self.iris = iris

    def entities(
        self, selectors: tuple[Selector, ...] | None, limit: int, offset: int, count: bool, query: TemporalQuery | None = None
    ) -> tuple[list[tuple[int, str, list[str]]], int | None]:
        """(tid, id, types) of the entities with history that match ``selectors``, in creation order;
        with a time window in ``query``, only those with an instance in it."""
        rows = []
        for tid, entity_id, types in self.connection.execute("SELECT tid, id, types FROM temporal_entities ORDER BY tid"):
            type_list = orjson.loads(types)
            if selectors is not None and not any(s.matches({"id": entity_id, "type": type_list}) for s in selectors):
                continue
            if query is not None and query.timerel is not None:
                where, params = self._filter(tid, query)
                if self.connection.execute(f"SELECT 1 FROM history WHERE {where} LIMIT 1", params).fetchone() is None:
                    continue
            rows.append((tid, entity_id, type_list))
        return rows[offset : offset + limit], len(rows) if count else None

    def entity(self, entity_id: str) -> tuple[int, list[str]] | None:
        row = self.connection.execute("SELECT tid, types FROM temporal_entities WHERE id = ?", (entity_id,)).fetchone()
        return (row[0], orjson.loads(row[1])) if row else None

    def _filter(self, tid: int, query: TemporalQuery) -> tuple[str, list[Any]]:
        column = TIME_COLUMN[query.timeproperty]
        where, params = ["tid = ?"], [tid]
        if column == "deleted":
            where.append("deleted IS NOT NULL")
        if query.attrs is not None:
            ids = self._named_ids(query.attrs)
            where.append(f"attr_id IN ({','.join(map(str, ids)) or 'NULL'})")
        if query.datasets is not None:
            named = [d for d in query.datasets if d is not None]
            either = [f"dataset IN ({','.join('?' * len(named))})"] if named else []
            if None in query.datasets:
                either.append("dataset IS NULL")
            where.append(f"({' OR '.join(either)})")
            params += named
        start, end = query.start, query.end
        if query.timerel == "before":
            where.append(f"{column} < ?")
            params.append(end)
        elif query.timerel == "after":
            where.append(f"{column} >= ?")
            params.append(start)
        elif query.timerel == "between":
            where.append(f"{column} >= ? AND {column} < ?")
            params += [start, end]
        return " AND ".join(where), params

    def instances(self, tid: int, query: TemporalQuery) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
        """The attribute instances of one entity in the window, oldest first, with their times: per
        attribute at most ``instance_limit`` + 1 (the earliest, or with lastN the most recent), so
        that ``paginate`` can tell when the limit cuts an answer short."""
        where, params = self._filter(tid, query)
        column = TIME_COLUMN[query.timeproperty]
        order, take = "ASC", query.instance_limit + 1
        if query.last_n is not None:
            order, take = "DESC", min(query.last_n, take)
        sql = (
            f"SELECT iid, attr_id, doc, t FROM (SELECT iid, attr_id, doc, {column} AS t, ROW_NUMBER() OVER "
            f"(PARTITION BY attr_id ORDER BY {column} {order}, iid {order}) AS n FROM history WHERE {where}) "
            f"WHERE n <= ? ORDER BY attr_id, t, iid"
        )
        attrs: dict[str, list[dict[str, Any]]] = {}
        times: dict[str, list[float]] = {}
        for iid, attr_id, doc, t in self.connection.execute(sql, [*params, take]):
            instance = orjson.loads(doc)
            instance["instanceId"] = instance_id(iid)
            iri = self.iris.iri(attr_id)
            attrs.setdefault(iri, []).append(instance)
            times.setdefault(iri, []).append(t)
        return attrs, times

    def aggregated(self, tid: int, query: TemporalQuery) -> dict[str, dict[str, list[list[Any]]]]:
        """Per attribute and method, [[value, startAt, endAt], ...] over buckets of ``aggrPeriodDuration``.

        Buckets start at ``timeAt`` (or the earliest instance of any attribute) and are computed one
        attribute at a time, so each query reads one range of the history index in time order."""
        assert query.aggregation is not None
        where, params = self._filter(tid, query)
        column = TIME_COLUMN[query.timeproperty]
        spans: dict[int, tuple[float, float]] = {}
        for attr_id in self._attribute_ids(tid, query):
            attr_where, attr_params = f"{where} AND attr_id = ?", [*params, attr_id]
            low = self.connection.execute(f"SELECT min({column}) FROM history WHERE {attr_where}", attr_params).fetchone()[0]
            if low is not None:
                high = self.connection.execute(f"SELECT max({column}) FROM history WHERE {attr_where}", attr_params).fetchone()[0]
                spans[attr_id] = (low, high)
        if not spans:
            return {}
        answer = AggregatedAnswer.over(query, spans)
        origin, period = answer.origin, query.aggregation.period
        aggregates = ", ".join(_AGGREGATE_SQL[raw] for raw in answer.needed)
        result: dict[str, dict[str, list[list[Any]]]] = {}
        for attr_id, (_, high) in spans.items():
            attr_where, attr_params = f"{where} AND attr_id = ?", [*params, attr_id]
            if period <= 0:
                whole = self.connection.execute(f"SELECT {aggregates} FROM history WHERE {attr_where}", attr_params).fetchone()
                rows: Any = [(0, *whole)]
            elif column == "observed" and (high - origin) / period < _RANGED_BUCKETS:
                buckets = int((high - origin) // period) + 1
                if high >= origin + buckets * period:  # the division rounded down across a bucket's start
                    buckets += 1
                rows = self._ranged_buckets(aggregates, attr_where, attr_params, origin, period, buckets)
            else:
                rows = self.connection.execute(
                    f"SELECT CAST(({column} - ?) / ? AS INTEGER) AS bucket, {aggregates} FROM history WHERE {attr_where} "
                    f"GROUP BY bucket ORDER BY bucket",
                    [origin, period, *attr_params],
                )
            methods = result.setdefault(self.iris.iri(attr_id), {})
            for number, *values in rows:
                answer.add(methods, number, values)
        return result

    def _attribute_ids(self, tid: int, query: TemporalQuery) -> list[int]:
        if query.attrs is not None:
            return self._named_ids(query.attrs)
        # a skip-scan of the history index: one step per attribute, not per instance
        sql = (
            "WITH RECURSIVE a(id) AS (SELECT min(attr_id) FROM history WHERE tid = ?1 "
            "UNION ALL SELECT (SELECT min(attr_id) FROM history WHERE tid = ?1 AND attr_id > a.id) FROM a WHERE a.id IS NOT NULL) "
            "SELECT id FROM a WHERE id IS NOT NULL"
        )
        return [row[0] for row in self.connection.execute(sql, (tid,))]

    def _named_ids(self, names: Iterable[str]) -> list[int]:
        return [i for i in (self.iris.id(name, create=False) for name in names) if i is not None]

    def _ranged_buckets(
        self, aggregates: str, where: str, params: list[Any], origin: float, period: float, buckets: int
    ) -> list[tuple[Any, ...]]:
        """One bucket at a time, each a range read of the index in time order: cheaper than
        grouping, which sorts every instance by its bucket first."""
        sql = (
            f"WITH RECURSIVE b(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n + 1 < ?) "
            f"SELECT n, (SELECT json_array({aggregates}) FROM history WHERE {where} "
            f"AND observed >= ? + n * ? AND observed < ? + (n + 1) * ?) FROM b"
        )
        bound = [origin, period, origin, period]
        return [(n, *orjson.loads(values)) for n, values in self.connection.execute(sql, [buckets, *params, *bound])]
