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

from dataclasses import dataclass, field
from typing import Any

ESTIMATE_CAP = 2000


@dataclass
class Conjunct:
    driver: str | None  # SELECT rid ... listing the entities that satisfy it (None for negations)
    driver_params: list[Any] = field(default_factory=list)
    probe: str = ""  # a condition on d.rid
    probe_params: list[Any] = field(default_factory=list)
    estimate: int = 0


def type_conjunct(type_id: int) -> Conjunct:
    return Conjunct(
        driver=f"SELECT rid FROM entity_types WHERE type_id = {type_id}",
        probe=f"EXISTS (SELECT 1 FROM entity_types WHERE type_id = {type_id} AND rid = d.rid)",
    )


def equality_conjunct(attr_id: int, kind: int, values: list[Any]) -> Conjunct:
    marks = ",".join("?" * len(values))
    where = f"attr_id = {attr_id} AND kind = {kind} AND val IN ({marks})"
    return Conjunct(
        driver=f"SELECT rid FROM attr_values WHERE {where}",
        driver_params=list(values),
        probe=f"EXISTS (SELECT 1 FROM attr_values WHERE {where} AND rid = d.rid)",
        probe_params=list(values),
    )


def membership_conjunct(listing: str, params: list[Any]) -> Conjunct:
    """A conjunct tested by membership in a listing (materialised once by SQLite)."""
    return Conjunct(driver=listing, driver_params=list(params), probe=f"d.rid IN ({listing})", probe_params=list(params))


def range_conjunct(where: str, params: list[Any]) -> Conjunct:
    """A conjunct whose index is not keyed by entity first: probing is a membership test."""
    return membership_conjunct(f"SELECT rid FROM attr_values WHERE {where}", params)


def negated_conjunct(where: str, params: list[Any]) -> Conjunct:
    return Conjunct(driver=None, probe=f"d.rid NOT IN (SELECT rid FROM attr_values WHERE {where})", probe_params=list(params))


def plan_sql(conjuncts: list[Conjunct], connection: Any) -> tuple[str, list[Any]] | None:
    """SQL listing the rids of every entity satisfying all conjuncts, driven by the smallest one."""
    drivers = [c for c in conjuncts if c.driver is not None]
    if not drivers:
        return None
    for conjunct in drivers:
        conjunct.estimate = connection.execute(
            f"SELECT count(*) FROM ({conjunct.driver} LIMIT {ESTIMATE_CAP + 1})", conjunct.driver_params
        ).fetchone()[0]
    driver = min(drivers, key=lambda c: c.estimate)
    probes = [c for c in conjuncts if c is not driver]
    where = " AND ".join(c.probe for c in probes) or "1"
    sql = f"SELECT DISTINCT d.rid FROM ({driver.driver}) AS d WHERE {where}"
    return sql, driver.driver_params + [p for c in probes for p in c.probe_params]


def smallest_estimate(conjuncts: list[Conjunct]) -> int:
    return min((c.estimate for c in conjuncts if c.driver is not None), default=0)
