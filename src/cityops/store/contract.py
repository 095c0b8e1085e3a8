"""The storage contract of the hub. Every backend (SQLite, PostgreSQL) implements it and passes
the same test suite (``tests/store``). No SQL leaves a backend.

Entities cross this boundary in the hub's stored form (``cityops.hub.entity``). A backend keeps
them, answers ``EntityQuery`` selections exactly (using its indexes where it can and
``EntityQuery.matches`` where it cannot), and runs writes in transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncContextManager, Protocol

from ..hub.entity import Entity
from ..hub.query import EntityQuery

DEFAULT_TENANT = ""


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


class Transaction(Protocol):
    """Writes of one tenant that become visible together, or not at all."""

    async def get(self, entity_id: str) -> Entity | None: ...

    async def get_many(self, entity_ids: list[str]) -> dict[str, Entity]: ...

    async def insert(self, entity: Entity) -> None:
        """Add a new entity; the caller has checked that its id is free."""

    async def replace(self, entity: Entity, previous: Entity) -> None:
        """Store ``entity`` in place of ``previous`` (same id), re-indexing what changed."""

    async def delete(self, entity: Entity) -> None: ...

    def savepoint(self) -> AsyncContextManager[None]:
        """A nested unit: if the block raises, only its writes are undone."""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def tenant_exists(self, tenant: str) -> bool: ...

    def transaction(self, tenant: str) -> AsyncContextManager[Transaction]:
        """A write transaction; creates the tenant if it does not exist yet."""

    async def get(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]: ...

    async def attributes(self, tenant: str) -> list[AttributeSummary]: ...

    async def count_entities(self, tenant: str) -> int: ...
