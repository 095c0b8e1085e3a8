"""Temporal evolution of entities: which instances a change adds to history, and what a temporal
query asks (ETSI GS CIM 009 clause 4.11 and 5.7.3/5.7.4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .changes import Change
from .context import NGSI_LD
from .entity import DATA_MEMBER, NULL, Instance
from .errors import BadRequestData
from .timestamps import iso_from_epoch, parse_datetime

TIMERELS = ("before", "after", "between")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGREGATION_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
INSTANCE_ID_PREFIX = "urn:ngsi-ld:attribute:instance:"
SCOPE = NGSI_LD + "scope"  # scope has no attribute of its own; its history is kept under this IRI
_DURATION = re.compile(
    r"P(?:(?P<years>\d+(?:\.\d+)?)Y)?(?:(?P<months>\d+(?:\.\d+)?)M)?(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
_SECONDS = {"years": 365 * 86400, "months": 30 * 86400, "weeks": 7 * 86400, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def changed_instances(change: Change) -> Iterator[tuple[str, Instance]]:
    """(attribute IRI, instance) for every attribute instance the change created or modified; a
    changed scope is kept as an instance of the ``scope`` property."""
    after = change.after
    if after is None:
        return
    before_attrs = change.before["attrs"] if change.before is not None else {}
    for name, instances in after["attrs"].items():
        previous = before_attrs.get(name)
        for instance in instances:
            if previous is not None and instance in previous:
                continue
            yield name, instance
    scope = after.get("scope")
    if scope and scope != (change.before or {}).get("scope"):
        yield SCOPE, {"type": "Property", "value": scope, "createdAt": change.at, "modifiedAt": change.at}


def deleted_instances(change: Change) -> Iterator[tuple[str, Instance]]:
    """(attribute IRI, deletion instance) for every attribute instance the change removed: the
    NGSI-LD null as its data, and ``deletedAt``."""
    before = change.before
    if before is None:
        return
    after_attrs = change.after["attrs"] if change.after is not None else {}
    for name, instances in before["attrs"].items():
        kept = {i.get("datasetId") for i in after_attrs.get(name, ())}
        for instance in instances:
            if instance.get("datasetId") not in kept:
                yield name, deletion_instance(instance, change.at)
    if before.get("scope") and not (change.after or {}).get("scope"):
        yield SCOPE, {"type": "Property", "value": [], "deletedAt": change.at}


def deletion_instance(instance: Instance, at: str) -> Instance:
    kind = instance.get("type", "Property")
    member = DATA_MEMBER.get(kind, "value")
    deleted: Instance = {"type": kind, member: {"@none": NULL} if kind == "LanguageProperty" else NULL, "deletedAt": at}
    if "datasetId" in instance:
        deleted["datasetId"] = instance["datasetId"]
    return deleted


def parse_duration(text: str) -> float:
    """An ISO 8601 duration in seconds (a month counts 30 days, a year 365); ``PT0S`` is 0."""
    match = _DURATION.fullmatch(text.strip()) if text else None
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise BadRequestData(f"{text!r} is not an ISO 8601 duration such as PT1H, P1D or PT0S")
    return sum(float(value) * _SECONDS[unit] for unit, value in match.groupdict().items() if value)


@dataclass
class TemporalEntity:
    """An entity's history as a temporal query selected it."""

    id: str
    types: list[str]
    attrs: dict[str, list[Instance]] = field(default_factory=dict)  # attribute IRI -> instances, oldest first
    times: dict[str, list[float]] = field(default_factory=dict)  # their times (of the query's timeproperty), epoch seconds
    aggregated: dict[str, dict[str, list[list[Any]]]] | None = None  # attribute IRI -> method -> buckets


@dataclass(frozen=True)
class Aggregation:
    methods: tuple[str, ...]
    period: float  # seconds; 0 = the whole range in one bucket


@dataclass
class TemporalQuery:
    """What part of the history to return, and how."""

    timerel: str | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None
    attrs: tuple[str, ...] | None = None  # attribute IRIs
    aggregation: Aggregation | None = None
    datasets: frozenset[str | None] | None = None  # only instances of these datasetIds (None: the default instance)
    entity_filter: Any = None  # a query.EntityQuery (q, geo-query, scopeQ) the entities' current state must match
    order_by: tuple[tuple[Any, bool], ...] | None = None  # entities ordered by their current state (query.Path, descending)
    instance_limit: int = 10_000  # most instances of one attribute in one answer; more is paginated (clause 6.3.10)

    @property
    def start(self) -> float | None:
        if self.timerel == "after" or self.timerel == "between":
            return self.time_at.timestamp() if self.time_at else None
        return None

    @property
    def end(self) -> float | None:
        if self.timerel == "before":
            return self.time_at.timestamp() if self.time_at else None
        if self.timerel == "between":
            return self.end_time_at.timestamp() if self.end_time_at else None
        return None


def paginate(histories: list[TemporalEntity], query: TemporalQuery) -> str | None:
    """Temporal pagination (ETSI GS CIM 009 clause 6.3.10): when an attribute has more instances
    than the limit, every attribute of every entity is cut to one time range that no attribute
    exceeds, and the range is returned as a ``Content-Range`` value (None: nothing was cut).

    Each attribute holds at most limit + 1 instances, oldest first; with lastN they are the most
    recent ones and the range runs backwards, from the newest to the oldest kept."""
    limit = query.instance_limit
    backwards = query.last_n is not None
    cut_at: list[float] = []
    for history in histories:
        for times in history.times.values():
            if len(times) > limit:
                cut_at.append(times[-limit] if backwards else times[limit - 1])
    if not cut_at:
        return None
    edge = max(cut_at) if backwards else min(cut_at)
    kept_times: list[float] = []
    for history in histories:
        for iri, times in history.times.items():
            keep = [i for i, t in enumerate(times) if (t >= edge if backwards else t <= edge)]
            keep = keep[-limit:] if backwards else keep[:limit]
            history.attrs[iri] = [history.attrs[iri][i] for i in keep]
            history.times[iri] = [times[i] for i in keep]
            kept_times += history.times[iri]
    if backwards:
        start = query.end if query.end is not None else max(kept_times)
        return f"date-time {iso_from_epoch(start)}-{iso_from_epoch(edge)}/{query.last_n}"
    start = query.start if query.start is not None else min(kept_times)
    return f"date-time {iso_from_epoch(start)}-{iso_from_epoch(edge)}/*"


def parse_temporal_query(
    *,
    timerel: str | None,
    time_at: str | None,
    end_time_at: str | None,
    timeproperty: str | None,
    last_n: str | int | None,
    aggr_methods: str | list[str] | None = None,
    aggr_period: str | None = None,
    aggregated: bool = False,
    required: bool = False,
) -> TemporalQuery:
    query = TemporalQuery()
    if timerel is None:
        if required:
            raise BadRequestData("a temporal query needs timerel and timeAt (or lastN)")
        if time_at is not None or end_time_at is not None:
            raise BadRequestData("timeAt and endTimeAt need a timerel")
    else:
        if timerel not in TIMERELS:
            raise BadRequestData(f"timerel must be before, after or between, got {timerel!r}")
        if time_at is None:
            raise BadRequestData(f"timerel={timerel} needs timeAt")
        query.timerel = timerel
        query.time_at = _datetime(time_at, "timeAt")
        if timerel == "between":
            if end_time_at is None:
                raise BadRequestData("timerel=between needs endTimeAt")
            query.end_time_at = _datetime(end_time_at, "endTimeAt")
            if query.end_time_at < query.time_at:
                raise BadRequestData("endTimeAt is before timeAt")
        elif end_time_at is not None:
            raise BadRequestData("endTimeAt is only used with timerel=between")
    if timeproperty is not None:
        if timeproperty not in TIME_PROPERTIES:
            raise BadRequestData(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}, got {timeproperty!r}")
        query.timeproperty = timeproperty
    if last_n is not None:
        try:
            query.last_n = int(last_n)
        except (TypeError, ValueError):
            raise BadRequestData(f"lastN must be a positive integer, got {last_n!r}") from None
        if query.last_n < 1:
            raise BadRequestData(f"lastN must be a positive integer, got {last_n!r}")
    if aggregated:
        if isinstance(aggr_methods, str):
            aggr_methods = [m.strip() for m in aggr_methods.split(",") if m.strip()]
        if not aggr_methods:
            raise BadRequestData(f"aggregatedValues needs aggrMethods (some of {', '.join(AGGREGATION_METHODS)})")
        unknown = [m for m in aggr_methods if m not in AGGREGATION_METHODS]
        if unknown:
            raise BadRequestData(f"unknown aggrMethods {', '.join(unknown)}; use {', '.join(AGGREGATION_METHODS)}")
        period = parse_duration(aggr_period) if aggr_period else 0.0
        query.aggregation = Aggregation(tuple(dict.fromkeys(aggr_methods)), period)
    return query


def _datetime(text: str, name: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise BadRequestData(f"{name} must be an ISO 8601 DateTime, got {text!r}") from None


def instance_id(number: int) -> str:
    return f"{INSTANCE_ID_PREFIX}{number}"


def instance_number(text: str) -> int:
    if not text.startswith(INSTANCE_ID_PREFIX) or not text[len(INSTANCE_ID_PREFIX) :].isdigit():
        raise BadRequestData(f"{text!r} is not an attribute instance id of this hub")
    return int(text[len(INSTANCE_ID_PREFIX) :])
