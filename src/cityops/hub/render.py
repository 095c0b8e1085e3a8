"""Entities from stored form to what a client asked for: normalized, concise, keyValues or GeoJSON,
compacted with the client's @context, with projections (attrs, pick, omit), sysAttrs and lang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .context import TermMap
from .entity import DATA_MEMBER, RESERVED_MEMBERS, Entity, Instance

FORMATS = ("normalized", "concise", "keyValues")
_SYSTEM = ("createdAt", "modifiedAt")


@dataclass
class Projection:
    """Which parts of an entity to return. ``attrs`` holds attribute IRIs; pick/omit hold compact member names."""

    attrs: frozenset[str] | None = None
    pick: frozenset[str] | None = None
    omit: frozenset[str] | None = None


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
        self.lang = lang
        self.projection = projection or Projection()

    def compact_types(self, types: list[str]) -> str | list[str]:
        compact = [self.terms.compact(t) for t in types]
        return compact[0] if len(compact) == 1 else compact

    def entity(self, entity: Entity) -> dict[str, Any]:
        projection = self.projection
        pick, omit, attrs_wanted = projection.pick, projection.omit, projection.attrs
        out: dict[str, Any] = {}
        if self._wanted("id", pick, omit):
            out["id"] = entity["id"]
        if self._wanted("type", pick, omit):
            out["type"] = self.compact_types(entity["type"])
        if "scope" in entity and self._wanted("scope", pick, omit):
            out["scope"] = entity["scope"][0] if len(entity["scope"]) == 1 else entity["scope"]
        for iri, instances in entity["attrs"].items():
            if attrs_wanted is not None and iri not in attrs_wanted:
                continue
            name = self.terms.compact(iri)
            if not self._wanted(name, pick, omit):
                continue
            out[name] = self.attribute(instances)
        if self.sys_attrs:
            for member in _SYSTEM:
                if member in entity and self._wanted(member, pick, omit):
                    out[member] = entity[member]
        return out

    @staticmethod
    def _wanted(name: str, pick: frozenset[str] | None, omit: frozenset[str] | None) -> bool:
        if pick is not None and name not in pick:
            return False
        return omit is None or name not in omit

    def attribute(self, instances: list[Instance]) -> Any:
        render = {"normalized": self.normalized, "concise": self.concise, "keyValues": self.key_value}[self.fmt]
        if len(instances) == 1:
            return render(instances[0])
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
        if self.lang is None or self.lang == "*" or instance.get("type") != "LanguageProperty":
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
        wanted = [part.split(";")[0].strip() for part in (self.lang or "").split(",") if part.strip()]
        for tag in wanted:
            if tag in language_map:
                return tag
        for tag in wanted:
            for candidate in language_map:
                if candidate.split("-")[0] == tag.split("-")[0]:
                    return candidate
        if "@none" in language_map:
            return "@none"
        return next(iter(language_map), None)

    def normalized(self, instance: Instance) -> dict[str, Any]:
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
        feature: dict[str, Any] = {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": properties}
        return feature
