"""What every store's history shares: the row of one attribute instance (its times as epoch
seconds, its dataset, its value as a number when it is one, and the instance itself), the time
column a ``timeproperty`` reads, and how each aggregation method follows from SQL aggregates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..hub.changes import Change
from ..hub.entity import Instance
from ..hub.query import sort_entities
from ..hub.temporal import TemporalQuery, changed_instances, deleted_instances
from ..hub.timestamps import iso_from_epoch, parse_datetime


def history_row(tid: int, attr_id: int, instance: Instance, at: str) -> tuple[Any, ...]:
    """A history row of one attribute instance written at ``at``: (tid, attr_id, observed, created,
    modified, deleted, dataset, num, doc). A deletion instance is placed in time at its deletion."""
    deleted = instance.get("deletedAt")
    modified = epoch(deleted or instance.get("modifiedAt", at))
    observed = instance.get("observedAt")
    value = instance.get("value")
    if type(value) is dict and "@value" in value:
        value = value["@value"]
    number = value if type(value) in (int, float) else None
    return (
        tid,
        attr_id,
        epoch(observed) if observed else modified,
        epoch(instance.get("createdAt", deleted or at)),
        modified,
        modified if deleted else None,
        instance.get("datasetId"),
        number,
        orjson.dumps(instance),
    )


def recorded_instances(change: Change) -> list[tuple[str, Instance, bool]]:
    """(attribute IRI, instance, whether it replaces the instance at the same time and dataset) of
    every instance ``change`` adds to history: those a temporal payload provides, else those it
    created or modified; and a deletion instance for each it removed."""
    found: list[tuple[str, Instance, bool]] = []
    if change.history is not None:
        found += [(name, instance, True) for name, instance in change.history]
    else:
        found += [(name, instance, False) for name, instance in changed_instances(change)]
    found += [(name, instance, False) for name, instance in deleted_instances(change)]
    return found


def epoch(text: str) -> float:
    return parse_datetime(text).timestamp()


TIME_COLUMN = {"observedAt": "observed", "createdAt": "created", "modifiedAt": "modified", "deletedAt": "deleted"}

# The SQL aggregates (named by each store) a method needs; its value follows by ``method_value``.
RAW_AGGREGATES = {
    "totalCount": ("count",),
    "distinctCount": ("distinct",),
    "sum": ("sum",),
    "avg": ("avg",),
    "min": ("min",),
    "max": ("max",),
    "sumsq": ("sumsq",),
    "stddev": ("sumsq", "avg", "numbers"),
}


def method_value(method: str, raw: dict[str, Any]) -> Any:
    if method == "stddev":
        numbers = raw["numbers"]
        return math.sqrt(max(0.0, raw["sumsq"] / numbers - raw["avg"] * raw["avg"])) if numbers else None
    return raw[RAW_AGGREGATES[method][0]]


@dataclass
class AggregatedAnswer:
    """An aggregated answer being put together from SQL rows: per attribute and method,
    [[value, startAt, endAt], ...]. Buckets start at ``timeAt`` or at the earliest instance of any
    selected attribute; a store adds one row of raw aggregates (``needed``, in order) a bucket."""

    query: TemporalQuery
    origin: float
    last: float
    needed: list[str]

    @classmethod
    def over(cls, query: TemporalQuery, spans: dict[int, tuple[float, float]]) -> AggregatedAnswer:
        """For attributes whose instances span (first, last) times, as ``spans`` gives them."""
        assert query.aggregation is not None
        origin = query.start if query.start is not None else min(low for low, _ in spans.values())
        last = query.end if query.end is not None else max(high for _, high in spans.values())
        # only what the methods ask for is computed (a distinct count reads every instance's
        # document, the rest only time and number); the count tells empty buckets
        wanted = (raw for method in query.aggregation.methods for raw in RAW_AGGREGATES[method])
        return cls(query, origin, last, list(dict.fromkeys(["count", *wanted])))

    def add(self, methods: dict[str, list[list[Any]]], bucket: int, values: Sequence[Any]) -> None:
        raw = dict(zip(self.needed, values))
        if not raw["count"]:
            return
        assert self.query.aggregation is not None
        period = self.query.aggregation.period
        start = self.origin + bucket * period if period > 0 else self.origin
        interval = [iso_from_epoch(start), iso_from_epoch(start + period if period > 0 else self.last)]
        for method in self.query.aggregation.methods:
            methods.setdefault(method, []).append([method_value(method, raw), *interval])


def select_by_current_state(
    rows: list[tuple[int, str, list[str]]], current: dict[str, Any], query: TemporalQuery, limit: int, offset: int, count: bool
) -> tuple[list[tuple[int, str, list[str]]], int | None]:
    """A temporal query's page of (tid, id, types) when it filters (``q``, geo) or orders by the
    entities' current state (``current``: id -> entity); entities without one come last."""
    if query.entity_filter is not None:
        current = {k: e for k, e in current.items() if query.entity_filter.matches(e)}
        rows = [row for row in rows if row[1] in current]
    if query.order_by is not None:
        rank = {e["id"]: position for position, e in enumerate(sort_entities(list(current.values()), query.order_by))}
        rows = sorted(rows, key=lambda row: rank.get(row[1], len(rank)))
    return rows[offset : offset + limit], len(rows) if count else None
