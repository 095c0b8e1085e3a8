"""The storage contract of the hub. Every backend (SQLite, PostgreSQL) implements it and passes
the same test suite (``tests/store``). No SQL leaves a backend.

Entities cross this boundary in the hub's stored form (``cityops.hub.entity``). A backend keeps
them, answers ``EntityQuery`` selections exactly (using its indexes where it can and
``EntityQuery.matches`` where it cannot), and applies units of work (``cityops.hub.changes``)
atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..hub.changes import Change, UnitOfWork
from ..hub.entity import Entity
from ..hub.query import EntityQuery, Selector
from ..hub.temporal import TemporalEntity, TemporalQuery

DEFAULT_TENANT = ""
T = TypeVar("T")


@dataclass
class QueryResult:
    entities: list[Entity]
    count: int | None = None  # total matches, when the query asked for a count


@dataclass
class TypeSummary:
    type: str
    entity_count: int
    attributes: dict[str, set[str]] = field(default_factory=dict)  # attribute IRI -> attribute kinds


@dataclass
class AttributeSummary:
    attribute: str
    entity_count: int
    types: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def tenant_exists(self, tenant: str) -> bool: ...

    async def write(self, tenant: str, entity_ids: list[str], work: UnitOfWork[T]) -> tuple[T, list[Change]]:
        """Run a unit of work atomically: load the named entities (None where absent), call ``work``,
        apply the writes it recorded, commit. Creates the tenant if needed. If ``work`` raises,
        nothing is written and the exception propagates. Returns what ``work`` returned and the
        committed changes, in order."""

    async def get(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]: ...

    async def attributes(self, tenant: str) -> list[AttributeSummary]: ...

    async def temporal_entity(self, tenant: str, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        """The history of one entity (None when it has none), as ``query`` selects and aggregates it."""

    async def temporal_query(
        self, tenant: str, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        """Histories of the entities ``selectors`` pick (by id, id pattern and type), a page of them."""
