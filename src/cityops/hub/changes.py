"""Changes: what a write decided, and the record of each accepted change of an entity.

A unit of work may also read and write records: small JSON documents the store keeps beside the
entities, named by (kind, key), committed in the same transaction as the unit's changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .entity import Entity, Instance

T = TypeVar("T")
RecordKey = tuple[str, str]  # (kind, key)


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
    # the records the unit named, as committed before it (None: absent); the store fills it
    records: dict[RecordKey, dict[str, Any] | None] = field(default_factory=dict)
    record_writes: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)  # (kind, key, doc or None: delete)
    # the latest of record_writes by record, so that reading one back costs one lookup
    _written: dict[RecordKey, dict[str, Any] | None] = field(default_factory=dict, init=False, repr=False)

    def insert(self, entity: Entity) -> None:
        self.changes.append(Change(self.tenant, entity["id"], None, entity, entity["modifiedAt"]))

    def replace(self, entity: Entity, previous: Entity) -> None:
        self.changes.append(Change(self.tenant, entity["id"], previous, entity, entity["modifiedAt"]))

    def provide(self, entity: Entity, previous: Entity | None, history: tuple[tuple[str, Instance], ...]) -> None:
        """A temporal provision: ``history`` goes into history; ``entity`` is the resulting state."""
        self.changes.append(Change(self.tenant, entity["id"], previous, entity, entity["modifiedAt"], history))

    def delete(self, entity: Entity, at: str) -> None:
        self.changes.append(Change(self.tenant, entity["id"], entity, None, at))

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record as this unit sees it (its own writes first); KeyError if the unit neither
        named it nor wrote it, since the store did not read (or lock) it for the unit."""
        if (kind, key) in self._written:
            return self._written[(kind, key)]
        return self.records[(kind, key)]

    def put_record(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self.record_writes.append((kind, key, doc))
        self._written[(kind, key)] = doc

    def delete_record(self, kind: str, key: str) -> None:
        self.record_writes.append((kind, key, None))
        self._written[(kind, key)] = None

    def final_records(self) -> dict[RecordKey, dict[str, Any] | None]:
        """What a store must write: each record's last write, less deletions of records the unit
        named and saw absent (there is nothing to delete)."""
        last = {(kind, key): doc for kind, key, doc in self.record_writes}
        return {k: doc for k, doc in last.items() if doc is not None or k not in self.records or self.records[k] is not None}


# A unit of work: given the current state of the entities it named (None where absent), it decides
# and records writes, or raises an NgsiError having recorded nothing that matters. It must not block.
UnitOfWork = Callable[[Mapping[str, "Entity | None"], WriteSet], T]
