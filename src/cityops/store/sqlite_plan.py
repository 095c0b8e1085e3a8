"""Planning selective queries: drive from the smallest index range, probe the rest.

A query that is a plain conjunction (one type, AND-ed ``q`` terms the indexes decide exactly,
``attrs``) is split into conjuncts. Each positive conjunct can list its entities from an index
(``driver``) and test one entity cheaply (``probe``): equality terms and types by a primary-key
seek, ranges by membership in their (once materialised) range. The planner counts, up to a cap,
how many entities each driver would list, starts from the smallest and probes the others. For a
query that also wants a count this costs in proportion to the smallest range, not to the number
of entities of the type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

ESTIMATE_CAP = 2000  # a driver listing fewer entities than this is always worth starting from
ESTIMATE_TTL = 30.0  # seconds an estimate is reused
_estimates: dict[tuple[Any, ...], tuple[float, list[int]]] = {}


@dataclass
class Conjunct:
    table: str | None  # the table whose rows matching ``where`` list the entities (None: cannot drive)
    where: str = ""
    params: list[Any] = field(default_factory=list)
    probe: str = ""  # a condition on d.rid
    probe_params: list[Any] = field(default_factory=list)
    estimate: int = 0


def type_conjunct(type_id: int) -> Conjunct:
    return Conjunct(
        "entity_types",
        f"type_id = {type_id}",
        probe=f"EXISTS (SELECT 1 FROM entity_types WHERE type_id = {type_id} AND rid = d.rid)",
    )


def equality_conjunct(attr_id: int, kind: int, values: list[Any]) -> Conjunct:
    """A value equal to one of ``values``: probed by a primary-key seek per value."""
    test = "val = ?" if len(values) == 1 else f"val IN ({','.join('?' * len(values))})"
    where = f"attr_id = {attr_id} AND kind = {kind} AND {test}"
    return Conjunct(
        "attr_values",
        where,
        list(values),
        probe=f"EXISTS (SELECT 1 FROM attr_values WHERE {where} AND rid = d.rid)",
        probe_params=list(values),
    )


def membership_conjunct(table: str, where: str, params: list[Any]) -> Conjunct:
    """A conjunct whose index is not keyed by entity: probing is membership in its (materialised) listing."""
    return Conjunct(table, where, list(params), probe=f"d.rid IN (SELECT rid FROM {table} WHERE {where})", probe_params=list(params))


def range_conjunct(where: str, params: list[Any]) -> Conjunct:
    return membership_conjunct("attr_values", where, params)


def negated_conjunct(where: str, params: list[Any]) -> Conjunct:
    return Conjunct(None, probe=f"d.rid NOT IN (SELECT rid FROM attr_values WHERE {where})", probe_params=list(params))


def plan_sql(conjuncts: list[Conjunct], connection: Any, database: str) -> tuple[str, list[Any]] | None:
    """SQL listing the rids of every entity satisfying all conjuncts, driven by the smallest one
    (a rid may come more than once: callers deduplicate)."""
    drivers = [c for c in conjuncts if c.table is not None]
    if not drivers:
        return None
    # Count every listing up to a cap that doubles until one listing ends below it: ranking
    # then costs a few times the smallest listing, never the largest.
    # Estimates only choose the plan, so recent ones of the same database file are reused (a stale
    # one costs speed, never correctness).
    now = time.monotonic()
    key = (database, *((c.table, c.where, tuple(c.params)) for c in drivers))
    cached = _estimates.get(key)
    if cached is not None and now - cached[0] < ESTIMATE_TTL:
        for conjunct, estimate in zip(drivers, cached[1]):
            conjunct.estimate = estimate
    else:
        cap = ESTIMATE_CAP
        while True:
            for conjunct in drivers:
                conjunct.estimate = connection.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM {conjunct.table} WHERE {conjunct.where} LIMIT {cap + 1})", conjunct.params
                ).fetchone()[0]
            if len(drivers) == 1 or any(c.estimate <= cap for c in drivers) or cap > 10_000_000:
                break
            cap *= 2
        if len(_estimates) > 1000:
            _estimates.clear()
        _estimates[key] = (now, [c.estimate for c in drivers])
    driver = min(drivers, key=lambda c: c.estimate)
    probes = [c for c in conjuncts if c is not driver]
    where = " AND ".join(c.probe for c in probes) or "1"
    # Probing in entity order walks each probed index in order too: about a third faster than
    # probing in the driver's (value) order.
    listing = f"SELECT rid FROM {driver.table} WHERE {driver.where} ORDER BY rid"
    return f"SELECT d.rid FROM ({listing}) AS d WHERE {where}", driver.params + [p for c in probes for p in c.probe_params]


def smallest_estimate(conjuncts: list[Conjunct]) -> int:
    return min((c.estimate for c in conjuncts if c.table is not None), default=0)
