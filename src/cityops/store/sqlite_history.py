"""Reading history: the temporal representation of entities, and aggregations computed in SQLite."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import orjson

from ..hub.query import Selector
from ..hub.temporal import TemporalQuery, instance_id
from ..hub.timestamps import iso_from_epoch
from .sqlite_schema import IriCache

_TIME_COLUMN = {"observedAt": "observed", "createdAt": "created", "modifiedAt": "modified", "deletedAt": "deleted"}


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
            if selectors is not None and not any(_selects(s, entity_id, type_list) for s in selectors):
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
        column = _TIME_COLUMN[query.timeproperty]
        where, params = ["tid = ?"], [tid]
        if column == "deleted":
            where.append("deleted IS NOT NULL")
        if query.attrs is not None:
            ids = [i for i in (self.iris.id(a, create=False) for a in query.attrs) if i is not None]
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
        column = _TIME_COLUMN[query.timeproperty]
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
        """Per attribute and method, [[value, startAt, endAt], ...] over buckets of ``aggrPeriodDuration``."""
        assert query.aggregation is not None
        where, params = self._filter(tid, query)
        column = _TIME_COLUMN[query.timeproperty]
        bounds = self.connection.execute(f"SELECT min({column}), max({column}) FROM history WHERE {where}", params).fetchone()
        if bounds[0] is None:
            return {}
        origin = query.start if query.start is not None else bounds[0]
        period = query.aggregation.period
        bucket = f"CAST(({column} - ?) / ? AS INTEGER)" if period > 0 else "0"
        bucket_params = [origin, period] if period > 0 else []
        sql = (
            f"SELECT attr_id, {bucket} AS bucket, count(*), count(DISTINCT json_extract(doc, '$.value')), sum(num), avg(num), "
            f"min(num), max(num), sum(num * num), count(num) FROM history WHERE {where} GROUP BY attr_id, bucket ORDER BY attr_id, bucket"
        )
        last = query.end if query.end is not None else bounds[1]
        result: dict[str, dict[str, list[list[Any]]]] = {}
        for attr_id, number, total, distinct, total_sum, average, low, high, squares, numbers in self.connection.execute(
            sql, bucket_params + params
        ):
            start = origin + number * period if period > 0 else origin
            end = start + period if period > 0 else last
            interval = [iso_from_epoch(start), iso_from_epoch(end)]
            values = {
                "totalCount": total,
                "distinctCount": distinct,
                "sum": total_sum,
                "avg": average,
                "min": low,
                "max": high,
                "sumsq": squares,
                "stddev": math.sqrt(max(0.0, squares / numbers - average * average)) if numbers else None,
            }
            methods = result.setdefault(self.iris.iri(attr_id), {})
            for method in query.aggregation.methods:
                methods.setdefault(method, []).append([values[method], *interval])
        return result


def _selects(selector: Selector, entity_id: str, types: list[str]) -> bool:
    if selector.ids is not None and entity_id not in selector.ids:
        return False
    if selector.id_pattern is not None and not selector.id_pattern.search(entity_id):
        return False
    if selector.types is not None and not any(wanted <= set(types) for wanted in selector.types):
        return False
    return True

