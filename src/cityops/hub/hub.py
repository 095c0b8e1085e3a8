"""The hub: NGSI-LD entity operations over a store, each one atomic, each one a change.

The API layer parses requests into stored-form entities and fragments (``cityops.hub.entity``);
the hub checks existence and conflicts, combines old and new (``cityops.hub.merge``), writes in a
transaction and tells its listeners what changed once the transaction has committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from ..store.contract import AttributeSummary, QueryResult, Store, Transaction, TypeSummary
from .entity import Entity, Instance, find_instance, stamp_new_attributes
from .errors import AlreadyExists, BadRequestData, NgsiError, ResourceNotFound
from .merge import is_delete_marker, merge_attribute, replace_attribute
from .query import EntityQuery
from .timestamps import now_iso

log = logging.getLogger("cityops.hub")


@dataclass(frozen=True)
class Change:
    """One accepted change of one entity: ``before`` is None for a creation, ``after`` for a deletion."""

    tenant: str
    entity_id: str
    before: Entity | None
    after: Entity | None
    at: str

    @property
    def kind(self) -> str:
        if self.before is None:
            return "created"
        if self.after is None:
            return "deleted"
        return "updated"


ChangeListener = Callable[[list[Change]], Awaitable[None]]


@dataclass
class UpdateResult:
    """Which attributes an update changed and which it did not, with the reason."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BatchResult:
    """Per-entity outcome of a batch operation: ids that succeeded, and errors by id."""

    success: list[str] = field(default_factory=list)
    errors: list[tuple[str, NgsiError]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


class Hub:
    def __init__(self, store: Store, *, max_batch_size: int = 10000):
        self.store = store
        self.max_batch_size = max_batch_size
        self._listeners: list[ChangeListener] = []

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def _publish(self, changes: list[Change]) -> None:
        if not changes:
            return
        for listener in self._listeners:
            try:
                await listener(changes)
            except Exception:  # a consumer's failure must not undo or hide an accepted change
                log.exception("a change listener failed on %d change(s)", len(changes))

    # -- single entities -----------------------------------------------------------------------
    async def create(self, tenant: str, entity: Entity) -> None:
        async with self.store.transaction(tenant) as tx:
            if await tx.get(entity["id"]) is not None:
                raise AlreadyExists(f"entity {entity['id']} already exists", instance=entity["id"])
            await tx.insert(entity)
        await self._publish([Change(tenant, entity["id"], None, entity, entity["modifiedAt"])])

    async def retrieve(self, tenant: str, entity_id: str) -> Entity:
        entity = await self.store.get(tenant, entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} does not exist", instance=entity_id)
        return entity

    async def delete(self, tenant: str, entity_id: str) -> None:
        async with self.store.transaction(tenant) as tx:
            entity = await self._existing(tx, entity_id)
            await tx.delete(entity)
        await self._publish([Change(tenant, entity_id, entity, None, now_iso())])

    async def replace(self, tenant: str, entity: Entity) -> None:
        """PUT /entities/{id}: the new content takes the place of the old; creation time is kept."""
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity["id"])
            entity["createdAt"] = previous["createdAt"]
            await tx.replace(entity, previous)
        await self._publish([Change(tenant, entity["id"], previous, entity, entity["modifiedAt"])])

    async def merge(self, tenant: str, entity_id: str, fragment: Entity) -> None:
        """PATCH /entities/{id}: merge attributes (and add types and scopes) into the entity."""
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity_id)
            updated = self._merged(previous, fragment)
            await tx.replace(updated, previous)
        await self._publish([Change(tenant, entity_id, previous, updated, updated["modifiedAt"])])

    def _merged(self, previous: Entity, fragment: Entity) -> Entity:
        now = now_iso()
        attrs = dict(previous["attrs"])
        for name, instances in fragment["attrs"].items():
            merged = merge_attribute(attrs.get(name), instances, now)
            if merged:
                attrs[name] = merged
            else:
                attrs.pop(name, None)
        updated = dict(previous, attrs=attrs, modifiedAt=now)
        if fragment.get("type"):
            updated["type"] = previous["type"] + [t for t in fragment["type"] if t not in previous["type"]]
        if "scope" in fragment:
            updated["scope"] = fragment["scope"]
        return updated

    async def append_attributes(
        self, tenant: str, entity_id: str, attrs: dict[str, list[Instance]], *, overwrite: bool = True
    ) -> UpdateResult:
        """POST /entities/{id}/attrs: add attributes, replacing existing ones unless ``overwrite`` is off."""
        result = UpdateResult()
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity_id)
            now = now_iso()
            new_attrs = dict(previous["attrs"])
            for name, instances in attrs.items():
                existing = new_attrs.get(name)
                if not overwrite and existing is not None and all(
                    find_instance(existing, i.get("datasetId")) is not None for i in instances
                ):
                    result.not_updated.append((name, "the attribute exists and noOverwrite was asked"))
                    continue
                if not overwrite and existing is not None:
                    instances = [i for i in instances if find_instance(existing, i.get("datasetId")) is None]
                new_attrs[name] = replace_attribute(existing, instances, now)
                if not new_attrs[name]:
                    del new_attrs[name]
                result.updated.append(name)
            updated = dict(previous, attrs=new_attrs, modifiedAt=now)
            if result.updated:
                await tx.replace(updated, previous)
        if result.updated:
            await self._publish([Change(tenant, entity_id, previous, updated, now)])
        return result

    async def update_attributes(self, tenant: str, entity_id: str, attrs: dict[str, list[Instance]]) -> UpdateResult:
        """PATCH /entities/{id}/attrs: replace attributes that exist; report those that do not."""
        result = UpdateResult()
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity_id)
            now = now_iso()
            new_attrs = dict(previous["attrs"])
            for name, instances in attrs.items():
                existing = new_attrs.get(name)
                missing = [i for i in instances if existing is None or find_instance(existing, i.get("datasetId")) is None]
                if missing:
                    dataset = missing[0].get("datasetId")
                    reason = "the attribute does not exist" + (f" with datasetId {dataset}" if dataset else "")
                    result.not_updated.append((name, reason))
                    continue
                new_attrs[name] = replace_attribute(existing, instances, now)
                if not new_attrs[name]:
                    del new_attrs[name]
                result.updated.append(name)
            updated = dict(previous, attrs=new_attrs, modifiedAt=now)
            if result.updated:
                await tx.replace(updated, previous)
        if result.updated:
            await self._publish([Change(tenant, entity_id, previous, updated, now)])
        return result

    async def update_attribute(self, tenant: str, entity_id: str, name: str, instance: Instance, *, partial: bool) -> None:
        """PATCH (partial, merged) or PUT (whole) /entities/{id}/attrs/{attr}: the attribute must exist."""
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity_id)
            existing = previous["attrs"].get(name)
            dataset = instance.get("datasetId")
            if existing is None or find_instance(existing, dataset) is None:
                where = f" with datasetId {dataset}" if dataset else ""
                raise ResourceNotFound(f"entity {entity_id} has no attribute {name}{where}", instance=entity_id)
            now = now_iso()
            if is_delete_marker(instance):
                raise BadRequestData("the new attribute value must not be null")
            combined = merge_attribute(existing, [instance], now) if partial else replace_attribute(existing, [instance], now)
            updated = dict(previous, attrs={**previous["attrs"], name: combined}, modifiedAt=now)
            await tx.replace(updated, previous)
        await self._publish([Change(tenant, entity_id, previous, updated, now)])

    async def delete_attribute(
        self, tenant: str, entity_id: str, name: str, *, dataset_id: str | None = None, delete_all: bool = False
    ) -> None:
        async with self.store.transaction(tenant) as tx:
            previous = await self._existing(tx, entity_id)
            existing = previous["attrs"].get(name)
            if existing is None:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {name}", instance=entity_id)
            if delete_all:
                remaining: list[Instance] = []
            else:
                index = find_instance(existing, dataset_id)
                if index is None:
                    where = f"with datasetId {dataset_id}" if dataset_id else "without datasetId (the default instance)"
                    raise ResourceNotFound(f"entity {entity_id} has no instance of {name} {where}", instance=entity_id)
                remaining = existing[:index] + existing[index + 1 :]
            now = now_iso()
            attrs = dict(previous["attrs"])
            if remaining:
                attrs[name] = remaining
            else:
                del attrs[name]
            updated = dict(previous, attrs=attrs, modifiedAt=now)
            await tx.replace(updated, previous)
        await self._publish([Change(tenant, entity_id, previous, updated, now)])

    async def _existing(self, tx: Transaction, entity_id: str) -> Entity:
        entity = await tx.get(entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} does not exist", instance=entity_id)
        return entity

    # -- batches -------------------------------------------------------------------------------
    def _check_batch(self, items: list[Any]) -> None:
        if len(items) > self.max_batch_size:
            raise BadRequestData(f"a batch may hold at most {self.max_batch_size} entities, got {len(items)}")

    async def batch_create(self, tenant: str, entities: list[Entity]) -> BatchResult:
        self._check_batch(entities)
        result, changes = BatchResult(), []
        async with self.store.transaction(tenant) as tx:
            existing = await tx.get_many([e["id"] for e in entities])
            seen: set[str] = set()
            for entity in entities:
                if entity["id"] in existing or entity["id"] in seen:
                    result.errors.append((entity["id"], AlreadyExists(f"entity {entity['id']} already exists")))
                    continue
                async with tx.savepoint():
                    await tx.insert(entity)
                seen.add(entity["id"])
                result.success.append(entity["id"])
                changes.append(Change(tenant, entity["id"], None, entity, entity["modifiedAt"]))
        await self._publish(changes)
        return result

    async def batch_upsert(self, tenant: str, entities: list[Entity], *, replace: bool) -> BatchResult:
        """Create what does not exist; replace (or, with ``replace`` off, update) what does."""
        self._check_batch(entities)
        result, changes = BatchResult(), []
        async with self.store.transaction(tenant) as tx:
            current = await tx.get_many([e["id"] for e in entities])
            for entity in entities:
                previous = current.get(entity["id"])
                if previous is None:
                    await tx.insert(entity)
                    result.created.append(entity["id"])
                    after = entity
                else:
                    after = self._upserted(previous, entity, replace)
                    await tx.replace(after, previous)
                current[entity["id"]] = after
                result.success.append(entity["id"])
                changes.append(Change(tenant, entity["id"], previous, after, after["modifiedAt"]))
        await self._publish(changes)
        return result

    def _upserted(self, previous: Entity, entity: Entity, replace: bool) -> Entity:
        now = entity["modifiedAt"]
        if replace:
            return dict(entity, createdAt=previous["createdAt"])
        attrs = dict(previous["attrs"])
        for name, instances in entity["attrs"].items():
            attrs[name] = replace_attribute(attrs.get(name), instances, now)
            if not attrs[name]:
                del attrs[name]
        types = previous["type"] + [t for t in entity["type"] if t not in previous["type"]]
        return dict(previous, type=types, attrs=attrs, modifiedAt=now)

    async def batch_update(self, tenant: str, entities: list[Entity], *, overwrite: bool) -> BatchResult:
        """Append attributes to existing entities (noOverwrite keeps existing attributes)."""
        self._check_batch(entities)
        result, changes = BatchResult(), []
        async with self.store.transaction(tenant) as tx:
            current = await tx.get_many([e["id"] for e in entities])
            for entity in entities:
                previous = current.get(entity["id"])
                if previous is None:
                    result.errors.append((entity["id"], ResourceNotFound(f"entity {entity['id']} does not exist")))
                    continue
                now = entity["modifiedAt"]
                attrs = dict(previous["attrs"])
                for name, instances in entity["attrs"].items():
                    existing = attrs.get(name)
                    if not overwrite and existing is not None:
                        instances = [i for i in instances if find_instance(existing, i.get("datasetId")) is None]
                    if instances:
                        attrs[name] = replace_attribute(existing, instances, now)
                        if not attrs[name]:
                            del attrs[name]
                after = dict(previous, attrs=attrs, modifiedAt=now)
                await tx.replace(after, previous)
                current[entity["id"]] = after
                result.success.append(entity["id"])
                changes.append(Change(tenant, entity["id"], previous, after, now))
        await self._publish(changes)
        return result

    async def batch_merge(self, tenant: str, fragments: list[Entity]) -> BatchResult:
        self._check_batch(fragments)
        result, changes = BatchResult(), []
        async with self.store.transaction(tenant) as tx:
            current = await tx.get_many([f["id"] for f in fragments])
            for fragment in fragments:
                previous = current.get(fragment["id"])
                if previous is None:
                    result.errors.append((fragment["id"], ResourceNotFound(f"entity {fragment['id']} does not exist")))
                    continue
                after = self._merged(previous, fragment)
                await tx.replace(after, previous)
                current[fragment["id"]] = after
                result.success.append(fragment["id"])
                changes.append(Change(tenant, fragment["id"], previous, after, after["modifiedAt"]))
        await self._publish(changes)
        return result

    async def batch_delete(self, tenant: str, entity_ids: list[str]) -> BatchResult:
        self._check_batch(entity_ids)
        result, changes = BatchResult(), []
        now = now_iso()
        async with self.store.transaction(tenant) as tx:
            current = await tx.get_many(list(entity_ids))
            for entity_id in entity_ids:
                previous = current.pop(entity_id, None)
                if previous is None:
                    result.errors.append((entity_id, ResourceNotFound(f"entity {entity_id} does not exist")))
                    continue
                await tx.delete(previous)
                result.success.append(entity_id)
                changes.append(Change(tenant, entity_id, previous, None, now))
        await self._publish(changes)
        return result

    # -- reads ---------------------------------------------------------------------------------
    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self.store.query(tenant, query)

    async def types(self, tenant: str, *, with_attributes: bool = False) -> list[TypeSummary]:
        return await self.store.types(tenant, with_attributes)

    async def attributes(self, tenant: str) -> list[AttributeSummary]:
        return await self.store.attributes(tenant)


def fresh_attributes(attrs: dict[str, list[Instance]], now: str) -> dict[str, list[Instance]]:
    stamp_new_attributes(attrs, now)
    return attrs


def ids_of(entities: Iterable[Entity]) -> list[str]:
    return [entity["id"] for entity in entities]
