"""Providing history directly (POST /temporal/entities, POST /temporal/entities/{id}/attrs): the
instances given go into history as they are, and the entity's current state takes, per attribute
and dataset, the most recent of them when it is newer than what the entity holds."""

from __future__ import annotations

from .changes import WriteSet
from .entity import Entity, Instance, find_instance, stamp_replacing
from .timestamps import parse_datetime


def _time_of(instance: Instance) -> float | None:
    observed = instance.get("observedAt")
    return parse_datetime(observed).timestamp() if observed else None


def _newest(instances: list[Instance]) -> dict[str | None, Instance]:
    """Per datasetId, the instance with the latest observedAt (the last one given when none has one)."""
    if len(instances) == 1:
        return {instances[0].get("datasetId"): instances[0]}
    newest: dict[str | None, Instance] = {}
    for instance in instances:
        dataset = instance.get("datasetId")
        held = newest.get(dataset)
        if held is None or (_time_of(instance) or float("inf")) >= (_time_of(held) or float("-inf")):
            newest[dataset] = instance
    return newest


def provided_state(previous: Entity | None, provided: Entity, now: str) -> Entity:
    """The entity's state once ``provided`` (a temporal representation) has been recorded."""
    # ``previous`` stays as it was (the store compares the two): only what changes is copied.
    if previous is None:
        state: Entity = {"id": provided["id"], "type": list(provided["type"]), "createdAt": now, "attrs": {}}
    else:
        state = dict(previous, attrs=dict(previous["attrs"]))
        state["type"] = list(dict.fromkeys([*previous["type"], *provided.get("type", [])]))
    if "scope" in provided:
        state["scope"] = provided["scope"]
    state["modifiedAt"] = now
    attrs = state["attrs"]
    for iri, instances in provided["attrs"].items():
        current = attrs[iri] = list(attrs.get(iri, ()))
        for dataset, instance in _newest(instances).items():
            fresh = dict(instance)
            fresh.pop("instanceId", None)
            index = find_instance(current, dataset)
            if index is None:
                current.append(stamp_replacing(fresh, None, now))
            elif (_time_of(fresh) or float("inf")) >= (_time_of(current[index]) or float("-inf")):
                current[index] = stamp_replacing(fresh, current[index], now)
    return state


def record_provided(writes: WriteSet, previous: Entity | None, provided: Entity, now: str, *, start: Entity | None = None) -> None:
    """Record ``provided`` in a unit of work: its instances into history, the newest into the entity's
    state. ``start``: the state to begin from when the entity does not exist yet (a device's entity
    as provisioning makes it), else ``previous``."""
    writes.provide(provided_state(start if previous is None and start is not None else previous, provided, now), previous, history_of(provided))


def observed_property(value: object, observed: str, now: str) -> Instance:
    """A Property instance observed at ``observed``, written at ``now``."""
    return {"type": "Property", "value": value, "observedAt": observed, "createdAt": now, "modifiedAt": now}


def history_of(provided: Entity) -> tuple[tuple[str, Instance], ...]:
    return tuple((iri, instance) for iri, instances in provided["attrs"].items() for instance in instances)
