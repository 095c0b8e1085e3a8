"""Changes: what a write decided, and the record of each accepted change of an entity."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .entity import Entity, Instance

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One accepted change of one entity: ``before`` is None for a creation, ``after`` for a deletion."""

    tenant: str
    entity_id: str
    before: Entity | None
    after: Entity | None
    at: str
    # The attribute instances this change adds to history when they are not simply the instances it
    # changed: the instances a temporal payload provides (they replace instances of the same
    # attribute, dataset and observedAt).
    history: tuple[tuple[str, Instance], ...] | None = None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "created"
        if self.after is None:
            return "deleted"
        return "updated"


@dataclass
class WriteSet:
    """The writes one unit of work decided on, in order. A store applies all of them or none."""

    tenant: str
    changes: list[Change] = field(default_factory=list)

    def insert(self, entity: Entity) -> None:
        self.changes.append(Change(self.tenant, entity["id"], None, entity, entity["modifiedAt"]))

    def replace(self, entity: Entity, previous: Entity) -> None:
        self.changes.append(Change(self.tenant, entity["id"], previous, entity, entity["modifiedAt"]))

    def provide(self, entity: Entity, previous: Entity | None, history: tuple[tuple[str, Instance], ...]) -> None:
        """A temporal provision: ``history`` goes into history; ``entity`` is the resulting state."""
        self.changes.append(Change(self.tenant, entity["id"], previous, entity, entity["modifiedAt"], history))

    def delete(self, entity: Entity, at: str) -> None:
        self.changes.append(Change(self.tenant, entity["id"], entity, None, at))


# A unit of work: given the current state of the entities it named (None where absent), it decides
# and records writes, or raises an NgsiError having recorded nothing that matters. It must not block.
UnitOfWork = Callable[[Mapping[str, "Entity | None"], WriteSet], T]
