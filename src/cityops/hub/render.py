"""Entities from stored form to what a client asked for: normalized, concise, keyValues or GeoJSON,
compacted with the client's @context, projected (attrs, pick, omit, datasetId), with sysAttrs and
lang, and with linked entities joined inline or flat (NGSI-LD linked entity retrieval)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .context import TermMap
from .entity import DATA_MEMBER, RESERVED_MEMBERS, Entity, Instance
from .projection import Projection

FORMATS = ("normalized", "concise", "keyValues")
JOINS = ("inline", "flat", "@none")
MAX_JOINED = 5_000  # linked entities rendered for one answer at most
_SYSTEM = ("createdAt", "modifiedAt")
# Members rendered exactly as stored (no names to compact): an instance made only of these is copied.
_PLAIN_MEMBERS = frozenset(
    {"type", "value", "object", "languageMap", "valueList", "objectList", "json", "observedAt", "unitCode", "datasetId",
     "lang", "createdAt", "modifiedAt"}
)

Fetch = Callable[[list[str]], Awaitable[dict[str, Entity]]]


def parse_language_preferences(text: str) -> list[tuple[str, float]]:
    """``fr-CH,fr;q=0.9,en;q=0.8,*;q=0.5`` as (tag, weight), heaviest first (stable)."""
    preferences = []
    for index, part in enumerate(text.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        if tag.strip():
            preferences.append((tag.strip(), weight, index))
    preferences.sort(key=lambda p: (-p[1], p[2]))
    return [(tag, weight) for tag, weight, _ in preferences]


class Renderer:
    def __init__(
        self,
        terms: TermMap,
        *,
        fmt: str = "normalized",
        sys_attrs: bool = False,
        lang: str | None = None,
        projection: Projection | None = None,
    ):
        self.terms = terms
        self.fmt = fmt
        self.sys_attrs = sys_attrs
        self.lang = parse_language_preferences(lang) if lang else None
        self.projection = projection or Projection()
        self._render = {"normalized": self.normalized, "concise": self.concise, "keyValues": self.key_value}[fmt]

    def compact_types(self, types: list[str]) -> str | list[str]:
        compact = [self.terms.compact(t) for t in types]
        return compact[0] if len(compact) == 1 else compact

    # -- one entity ----------------------------------------------------------------------------
    def entity(self, entity: Entity, projection: Projection | None = None) -> dict[str, Any]:
        projection = projection or self.projection
        if projection.pick is None and projection.omit is None and projection.attrs is None and projection.datasets is None:
            return self._whole(entity)
        keeps = projection.keeps
        out: dict[str, Any] = {}
        if keeps("id"):
            out["id"] = entity["id"]
        if keeps("type"):
            out["type"] = self.compact_types(entity["type"])
        if "scope" in entity and keeps("scope"):
            out["scope"] = entity["scope"][0] if len(entity["scope"]) == 1 else entity["scope"]
        attrs_wanted, datasets = projection.attrs, projection.datasets
        for iri, instances in entity["attrs"].items():
            if attrs_wanted is not None and iri not in attrs_wanted:
                continue
            name = self.terms.compact(iri)
            if not keeps(name):
                continue
            if datasets is not None:
                instances = [i for i in instances if i.get("datasetId") in datasets]
                if not instances:
                    continue
            out[name] = self.attribute(instances)
        if self.sys_attrs:
            for member in _SYSTEM:
                if member in entity and keeps(member):
                    out[member] = entity[member]
        return out

    def _whole(self, entity: Entity) -> dict[str, Any]:
        """The common case, without projection: every member."""
        out: dict[str, Any] = {"id": entity["id"], "type": self.compact_types(entity["type"])}
        if "scope" in entity:
            out["scope"] = entity["scope"][0] if len(entity["scope"]) == 1 else entity["scope"]
        compact = self.terms.compact
        render = self._render
        for iri, instances in entity["attrs"].items():
            out[compact(iri)] = render(instances[0]) if len(instances) == 1 else self.attribute(instances)
        if self.sys_attrs:
            out["createdAt"] = entity["createdAt"]
            out["modifiedAt"] = entity["modifiedAt"]
        return out

    def attribute(self, instances: list[Instance]) -> Any:
        """One attribute; several instances (datasets) are a list, or in keyValues a ``dataset``
        map from datasetId (``@none`` for the default instance) to value."""
        render = self._render
        if len(instances) == 1:
            return render(instances[0])
        if self.fmt == "keyValues":
            return {"dataset": {instance.get("datasetId", "@none"): render(instance) for instance in instances}}
        return [render(instance) for instance in instances]

    def _members(self, instance: Instance, *, with_type: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in instance.items():
            if key in RESERVED_MEMBERS:
                if key == "type" and not with_type:
                    continue
                if key in _SYSTEM and not self.sys_attrs:
                    continue
                if key == "objectType":
                    value = self.compact_types(value if isinstance(value, list) else [value])
                elif key == "vocab":
                    value = [self.terms.compact(v) for v in value] if isinstance(value, list) else self.terms.compact(value)
                out[key] = value
            else:
                out[self.terms.compact(key)] = self.normalized(value) if with_type else self.concise(value)
        return out

    def _language(self, instance: Instance) -> Instance:
        """With ``lang``, a LanguageProperty becomes a Property holding the text in the best-matching language."""
        if self.lang is None or instance.get("type") != "LanguageProperty":
            return instance
        language_map = instance.get("languageMap") or {}
        tag = self._pick_language(language_map)
        converted = {k: v for k, v in instance.items() if k != "languageMap"}
        converted["type"] = "Property"
        converted["value"] = language_map.get(tag) if tag is not None else None
        if tag is not None:
            converted["lang"] = tag
        return converted

    def _pick_language(self, language_map: dict[str, Any]) -> str | None:
        for tag, weight in self.lang or ():
            if weight <= 0:
                continue
            if tag == "*":
                return next(iter(language_map), None)
            if tag in language_map:
                return tag
            base = tag.split("-")[0]
            for candidate in language_map:
                if candidate.split("-")[0] == base:
                    return candidate
        if "@none" in language_map:
            return "@none"
        return next(iter(language_map), None)

    def normalized(self, instance: Instance) -> dict[str, Any]:
        if instance.keys() <= _PLAIN_MEMBERS and (self.lang is None or instance.get("type") != "LanguageProperty"):
            if self.sys_attrs:
                return dict(instance)
            return {k: v for k, v in instance.items() if k != "createdAt" and k != "modifiedAt"}
        return self._members(self._language(instance), with_type=True)

    def concise(self, instance: Instance) -> Any:
        instance = self._language(instance)
        members = self._members(instance, with_type=False)
        kind = instance.get("type", "Property")
        if kind in ("Property", "GeoProperty") and list(members) == ["value"]:
            value = members["value"]
            if not (isinstance(value, dict) and kind == "Property"):
                return value
        return members

    def key_value(self, instance: Instance) -> Any:
        instance = self._language(instance)
        kind = instance.get("type", "Property")
        data = instance.get(DATA_MEMBER.get(kind, "value"))
        if kind == "ListRelationship" and isinstance(data, list):
            return [item.get("object") if isinstance(item, dict) else item for item in data]
        if kind == "VocabProperty":
            return [self.terms.compact(v) for v in data] if isinstance(data, list) else self.terms.compact(data)
        return data

    def geojson_feature(self, entity: Entity, geometry_property: str) -> dict[str, Any]:
        """A GeoJSON Feature: the entity's GeoProperty as geometry, everything else as properties."""
        rendered = self.entity(entity)
        geometry = None
        instances = entity["attrs"].get(geometry_property)
        if instances and instances[0].get("type") == "GeoProperty":
            geometry = instances[0].get("value")
        properties = {k: v for k, v in rendered.items() if k != "id"}
        return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": properties}

    # -- linked entities -----------------------------------------------------------------------
    async def joined(
        self, roots: list[Entity], fetch: Fetch, *, join: str, level: int, rendered: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Render ``roots`` (or take them ``rendered``) with the entities their relationships point
        at, ``level`` hops deep: ``inline`` puts each linked entity into its relationship (``entity``;
        in keyValues the relationship's value), ``flat`` returns the roots followed by every linked
        entity once."""
        rendered = rendered if rendered is not None else [self.entity(root) for root in roots]
        if join == "@none" or level < 1:
            return rendered
        seen = {root["id"] for root in roots}
        flat_tail: list[dict[str, Any]] = []
        frontier = [(out, root, self.projection) for out, root in zip(rendered, roots)]
        budget = MAX_JOINED  # renders of linked entities, so cycles and fan-out cannot explode
        for _ in range(level):
            wanted: dict[str, list[tuple[dict[str, Any], str, Projection]]] = {}
            for out, source, projection in frontier:
                for iri, instances in source["attrs"].items():
                    name = self.terms.compact(iri)
                    if name not in out:
                        continue
                    for target in _relationship_targets(instances):
                        wanted.setdefault(target, []).append((out, name, projection.linked(name)))
            if not wanted:
                break
            found = await fetch(list(wanted))
            next_frontier = []
            for target_id, uses in wanted.items():
                target = found.get(target_id)
                if target is None:
                    continue
                for out, name, projection in uses:
                    if budget <= 0:
                        break
                    budget -= 1
                    linked_out = self.entity(target, projection)
                    if join == "inline":
                        self._inline(out, name, target_id, linked_out)
                        next_frontier.append((linked_out, target, projection))
                    elif target_id not in seen:
                        seen.add(target_id)
                        flat_tail.append(linked_out)
                        next_frontier.append((linked_out, target, projection))
            frontier = next_frontier
        return rendered + flat_tail

    def _inline(self, out: dict[str, Any], name: str, target_id: str, linked: dict[str, Any]) -> None:
        value = out[name]
        if self.fmt == "keyValues":
            if value == target_id:
                out[name] = linked
            elif isinstance(value, list):
                out[name] = [linked if item == target_id else item for item in value]
            return
        for instance in value if isinstance(value, list) else [value]:
            if isinstance(instance, dict) and instance.get("object") == target_id:
                instance["entity"] = linked


def _relationship_targets(instances: list[Instance]) -> list[str]:
    targets: list[str] = []
    for instance in instances:
        if instance.get("type") != "Relationship":
            continue
        objects = instance.get("object")
        for target in objects if isinstance(objects, list) else [objects]:
            if isinstance(target, str) and target not in targets:
                targets.append(target)
    return targets
