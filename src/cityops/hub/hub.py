"""The hub: NGSI-LD entity operations over a store, each one atomic, each one a list of changes.

Every write is a unit of work (``cityops.hub.changes``): the store loads the entities the
operation names, a plain function decides what to write (checking existence and conflicts,
combining old and new with ``cityops.hub.merge``), and the store applies that decision atomically.
Once it is committed, the hub publishes the changes on the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bus.bus import Bus, InProcessBus
from ..store.contract import AttributeSummary, QueryResult, Store, TypeSummary
from .changes import RecordKey, UnitOfWork, WriteSet
from .entity import Entity, Instance, find_instance
from .errors import AlreadyExists, BadRequestData, NgsiError, ResourceNotFound
from .merge import is_delete_marker, merge_attribute, replace_attribute
from .query import EntityQuery
from .temporal_provision import record_provided
from .timestamps import now_iso

log = logging.getLogger("cityops.hub")

Current = Mapping[str, "Entity | None"]


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


def _existing(current: Current, entity_id: str) -> Entity:
    entity = current.get(entity_id)
    if entity is None:
        raise ResourceNotFound(f"entity {entity_id} does not exist", instance=entity_id)
    return entity


def _with_attrs(previous: Entity, attrs: dict[str, list[Instance]], now: str) -> Entity:
    return dict(previous, attrs=attrs, modifiedAt=now)


def _add_types(entity: Entity, fragment: Entity) -> None:
    if fragment.get("type"):
        entity["type"] = entity["type"] + [t for t in fragment["type"] if t not in entity["type"]]


def merged_entity(previous: Entity, fragment: Entity, now: str) -> Entity:
    """``fragment`` merged into ``previous``: attributes merged, types and scopes added."""
    attrs = dict(previous["attrs"])
    for name, instances in fragment["attrs"].items():
        merged = merge_attribute(attrs.get(name), instances, now)
        if merged:
            attrs[name] = merged
        else:
            attrs.pop(name, None)
    updated = _with_attrs(previous, attrs, now)
    _add_types(updated, fragment)
    if "scope" in fragment:
        updated["scope"] = fragment["scope"]
    return updated


def appended_attributes(
    previous: Entity, attrs: dict[str, list[Instance]], now: str, *, overwrite: bool, result: UpdateResult | None = None
) -> dict[str, list[Instance]]:
    """Attributes after appending ``attrs``; without ``overwrite`` existing instances stay as they are."""
    new_attrs = dict(previous["attrs"])
    for name, instances in attrs.items():
        existing = new_attrs.get(name)
        if not overwrite and existing is not None:
            instances = [i for i in instances if find_instance(existing, i.get("datasetId")) is None]
            if not instances:
                if result is not None:
                    result.not_updated.append((name, "the attribute exists and noOverwrite was asked"))
                continue
        replaced = replace_attribute(existing, instances, now)
        if replaced:
            new_attrs[name] = replaced
        else:
            new_attrs.pop(name, None)
        if result is not None:
            result.updated.append(name)
    return new_attrs


class Hub:
    def __init__(self, store: Store, *, bus: Bus | None = None, max_batch_size: int = 10000):
        self.store = store
        self.bus: Bus = bus if bus is not None else InProcessBus()
        self.max_batch_size = max_batch_size

    async def apply(self, tenant: str, ids: list[str], work: UnitOfWork[Any], records: Sequence[RecordKey] = ()) -> Any:
        """Run a unit of work decided by a layer above the hub (the IoT gateway's ingest and
        provisioning): atomically, with the ``records`` it names loaded, its changes then published."""
        result, changes = await self.store.write(tenant, ids, work, records)
        self.bus.publish(changes)
        return result

    # -- single entities -----------------------------------------------------------------------
    async def create(self, tenant: str, entity: Entity) -> None:
        def work(current: Current, writes: WriteSet) -> None:
            if current.get(entity["id"]) is not None:
                raise AlreadyExists(f"entity {entity['id']} already exists", instance=entity["id"])
            writes.insert(entity)

        await self.apply(tenant, [entity["id"]], work)

    async def provide_history(self, tenant: str, provided: Entity, *, existing_only: bool = False) -> bool:
        """Record a temporal representation (its instances into history, its newest values into the
        entity); whether the entity was created. ``existing_only``: append to an existing entity."""
        entity_id = provided["id"]

        def work(current: Current, writes: WriteSet) -> bool:
            previous = current.get(entity_id)
            if previous is None and existing_only:
                raise ResourceNotFound(f"entity {entity_id} does not exist", instance=entity_id)
            record_provided(writes, previous, provided, now_iso())
            return previous is None

        return await self.apply(tenant, [entity_id], work)

    async def delete_temporal(self, tenant: str, entity_id: str) -> None:
        """Delete an entity's temporal representation: its current state (if any), then its history."""
        try:
            await self.delete(tenant, entity_id)
        except ResourceNotFound:
            pass
        await self.store.delete_history(tenant, entity_id)

    async def retrieve(self, tenant: str, entity_id: str) -> Entity:
        entity = await self.store.get(tenant, entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} does not exist", instance=entity_id)
        return entity

    async def delete(self, tenant: str, entity_id: str) -> None:
        def work(current: Current, writes: WriteSet) -> None:
            writes.delete(_existing(current, entity_id), now_iso())

        await self.apply(tenant, [entity_id], work)

    async def replace(self, tenant: str, entity: Entity) -> None:
        """PUT /entities/{id}: the new content takes the place of the old; creation time is kept."""

        def work(current: Current, writes: WriteSet) -> None:
            previous = _existing(current, entity["id"])
            writes.replace(dict(entity, createdAt=previous["createdAt"]), previous)

        await self.apply(tenant, [entity["id"]], work)

    async def merge(self, tenant: str, entity_id: str, fragment: Entity) -> None:
        """PATCH /entities/{id}: merge attributes (and add types and scopes) into the entity."""

        def work(current: Current, writes: WriteSet) -> None:
            previous = _existing(current, entity_id)
            writes.replace(merged_entity(previous, fragment, now_iso()), previous)

        await self.apply(tenant, [entity_id], work)

    async def append_attributes(self, tenant: str, entity_id: str, fragment: Entity, *, overwrite: bool = True) -> UpdateResult:
        """POST /entities/{id}/attrs: add attributes (and types, scopes), replacing existing ones
        unless ``overwrite`` is off, in which case existing instances and scopes are kept."""

        def work(current: Current, writes: WriteSet) -> UpdateResult:
            previous = _existing(current, entity_id)
            result = UpdateResult()
            now = now_iso()
            updated = _with_attrs(previous, appended_attributes(previous, fragment["attrs"], now, overwrite=overwrite, result=result), now)
            _add_types(updated, fragment)
            if "scope" in fragment:
                kept = previous.get("scope", []) if not overwrite else []
                updated["scope"] = kept + [s for s in fragment["scope"] if s not in kept]
            if updated != dict(previous, modifiedAt=now):
                writes.replace(updated, previous)
            return result

        return await self.apply(tenant, [entity_id], work)

    async def update_attributes(self, tenant: str, entity_id: str, fragment: Entity) -> UpdateResult:
        """PATCH /entities/{id}/attrs: replace the instances with the same datasetId, add new
        attributes, delete those sent as urn:ngsi-ld:null, add types; the scope only where it exists."""

        def work(current: Current, writes: WriteSet) -> UpdateResult:
            previous = _existing(current, entity_id)
            result = UpdateResult()
            now = now_iso()
            new_attrs = dict(previous["attrs"])
            for name, instances in fragment["attrs"].items():
                existing = new_attrs.get(name)
                missing_deletes = [
                    i for i in instances if is_delete_marker(i) and (existing is None or find_instance(existing, i.get("datasetId")) is None)
                ]
                if missing_deletes:
                    result.not_updated.append((name, "there is no such attribute instance to delete"))
                    continue
                replaced = replace_attribute(existing, instances, now)
                if replaced:
                    new_attrs[name] = replaced
                else:
                    new_attrs.pop(name, None)
                result.updated.append(name)
            updated = _with_attrs(previous, new_attrs, now)
            _add_types(updated, fragment)
            if "scope" in fragment:
                if "scope" in previous:
                    updated["scope"] = fragment["scope"]
                    result.updated.append("scope")
                else:
                    result.not_updated.append(("scope", "the entity has no scope to update"))
            if updated != dict(previous, modifiedAt=now):
                writes.replace(updated, previous)
            return result

        return await self.apply(tenant, [entity_id], work)

    async def update_attribute(self, tenant: str, entity_id: str, name: str, instance: Instance, *, partial: bool) -> None:
        """PATCH (partial: members merged into the instance) or PUT (whole) /entities/{id}/attrs/{attr}.
        The attribute instance (by datasetId) must exist; urn:ngsi-ld:null deletes it."""

        def work(current: Current, writes: WriteSet) -> None:
            previous = _existing(current, entity_id)
            existing = previous["attrs"].get(name)
            dataset = instance.get("datasetId")
            index = find_instance(existing, dataset) if existing is not None else None
            if index is None:
                where = f" with datasetId {dataset}" if dataset else ""
                raise ResourceNotFound(f"entity {entity_id} has no attribute {name}{where}", instance=entity_id)
            kind = existing[index].get("type")
            if partial and "type" in instance and instance["type"] != kind and not is_delete_marker(instance):
                raise BadRequestData(f"attribute {name} is a {kind}; a partial update cannot make it a {instance['type']}")
            now = now_iso()
            combined = merge_attribute(existing, [instance], now) if partial else replace_attribute(existing, [instance], now)
            attrs = dict(previous["attrs"])
            if combined:
                attrs[name] = combined
            else:
                del attrs[name]
            writes.replace(_with_attrs(previous, attrs, now), previous)

        await self.apply(tenant, [entity_id], work)

    async def delete_scope(self, tenant: str, entity_id: str) -> None:
        """DELETE /entities/{id}/attrs/scope: the entity loses its scopes."""

        def work(current: Current, writes: WriteSet) -> None:
            previous = _existing(current, entity_id)
            if "scope" not in previous:
                raise ResourceNotFound(f"entity {entity_id} has no scope", instance=entity_id)
            updated = {k: v for k, v in previous.items() if k != "scope"}
            updated["modifiedAt"] = now_iso()
            writes.replace(updated, previous)

        await self.apply(tenant, [entity_id], work)

    async def delete_attribute(
        self, tenant: str, entity_id: str, name: str, *, dataset_id: str | None = None, delete_all: bool = False
    ) -> None:
        def work(current: Current, writes: WriteSet) -> None:
            previous = _existing(current, entity_id)
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
            attrs = dict(previous["attrs"])
            if remaining:
                attrs[name] = remaining
            else:
                del attrs[name]
            writes.replace(_with_attrs(previous, attrs, now_iso()), previous)

        await self.apply(tenant, [entity_id], work)

    # -- batches -------------------------------------------------------------------------------
    def _check_batch(self, items: list[Any]) -> None:
        if len(items) > self.max_batch_size:
            raise BadRequestData(f"a batch may hold at most {self.max_batch_size} entities, got {len(items)}")

    async def batch_create(self, tenant: str, entities: list[Entity]) -> BatchResult:
        self._check_batch(entities)

        def work(current: Current, writes: WriteSet) -> BatchResult:
            result = BatchResult()
            seen: set[str] = set()
            for entity in entities:
                if current.get(entity["id"]) is not None or entity["id"] in seen:
                    result.errors.append((entity["id"], AlreadyExists(f"entity {entity['id']} already exists")))
                    continue
                writes.insert(entity)
                seen.add(entity["id"])
                result.success.append(entity["id"])
            return result

        return await self.apply(tenant, [e["id"] for e in entities], work)

    async def batch_upsert(self, tenant: str, entities: list[Entity], *, replace: bool) -> BatchResult:
        """Create what does not exist; replace (or, with ``replace`` off, update) what does."""
        self._check_batch(entities)

        def work(current: Current, writes: WriteSet) -> BatchResult:
            result = BatchResult()
            state = dict(current)
            for entity in entities:
                previous = state.get(entity["id"])
                if previous is None:
                    writes.insert(entity)
                    result.created.append(entity["id"])
                    after = entity
                else:
                    after = self._upserted(previous, entity, replace)
                    writes.replace(after, previous)
                state[entity["id"]] = after
                result.success.append(entity["id"])
            return result

        return await self.apply(tenant, [e["id"] for e in entities], work)

    @staticmethod
    def _upserted(previous: Entity, entity: Entity, replace: bool) -> Entity:
        now = entity["modifiedAt"]
        if replace:
            return dict(entity, createdAt=previous["createdAt"])
        updated = _with_attrs(previous, appended_attributes(previous, entity["attrs"], now, overwrite=True), now)
        _add_types(updated, entity)
        return updated

    async def _batch_change(
        self, tenant: str, items: list[Entity], change: Callable[[Entity, Entity, BatchResult], Entity]
    ) -> BatchResult:
        """Apply ``change(previous, item, result) -> after`` to each existing entity of a batch (``previous``
        returned unchanged means nothing to write); a missing entity is an error of the batch, not a creation."""
        self._check_batch(items)

        def work(current: Current, writes: WriteSet) -> BatchResult:
            result = BatchResult()
            state = dict(current)
            for item in items:
                previous = state.get(item["id"])
                if previous is None:
                    result.errors.append((item["id"], ResourceNotFound(f"entity {item['id']} does not exist")))
                    continue
                after = change(previous, item, result)
                if after is not previous:
                    writes.replace(after, previous)
                    state[item["id"]] = after
            return result

        return await self.apply(tenant, [item["id"] for item in items], work)

    async def batch_update(self, tenant: str, entities: list[Entity], *, overwrite: bool) -> BatchResult:
        """Append attributes to existing entities (noOverwrite keeps existing attributes)."""

        def change(previous: Entity, entity: Entity, result: BatchResult) -> Entity:
            now = entity["modifiedAt"]
            outcome = UpdateResult()
            after = _with_attrs(previous, appended_attributes(previous, entity["attrs"], now, overwrite=overwrite, result=outcome), now)
            _add_types(after, entity)
            if outcome.not_updated:
                names = ", ".join(name for name, _ in outcome.not_updated)
                result.errors.append((entity["id"], BadRequestData(f"not updated (the attributes exist and noOverwrite was asked): {names}")))
            if outcome.updated or not outcome.not_updated:
                result.success.append(entity["id"])
            if after == dict(previous, modifiedAt=now):
                return previous  # nothing changed: no write, no change event
            return after

        return await self._batch_change(tenant, entities, change)

    async def batch_merge(self, tenant: str, fragments: list[Entity]) -> BatchResult:
        now = now_iso()

        def change(previous: Entity, fragment: Entity, result: BatchResult) -> Entity:
            result.success.append(fragment["id"])
            return merged_entity(previous, fragment, now)

        return await self._batch_change(tenant, fragments, change)

    async def batch_delete(self, tenant: str, entity_ids: list[str]) -> BatchResult:
        self._check_batch(entity_ids)

        def work(current: Current, writes: WriteSet) -> BatchResult:
            result = BatchResult()
            state = dict(current)
            now = now_iso()
            for entity_id in entity_ids:
                previous = state.pop(entity_id, None)
                if previous is None:
                    result.errors.append((entity_id, ResourceNotFound(f"entity {entity_id} does not exist")))
                    continue
                writes.delete(previous, now)
                result.success.append(entity_id)
            return result

        return await self.apply(tenant, list(entity_ids), work)

    async def purge(self, tenant: str, query: EntityQuery) -> int:
        """Delete, in one transaction, the entities ``query`` selects when it runs (at most one batch)."""
        found = await self.store.query(tenant, query)
        ids = [e["id"] for e in found.entities]
        if found.count is not None and found.count > len(ids):
            raise BadRequestData(
                f"the purge selects {found.count} entities, more than {len(ids)} at once; narrow the query or repeat it"
            )
        if not ids:
            return 0
        result = await self.batch_delete(tenant, ids)
        return len(result.success)

    # -- reads ---------------------------------------------------------------------------------
    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self.store.query(tenant, query)

    async def types(self, tenant: str, *, with_attributes: bool = False) -> list[TypeSummary]:
        return await self.store.types(tenant, with_attributes)

    async def attributes(self, tenant: str) -> list[AttributeSummary]:
        return await self.store.attributes(tenant)
