"""Temporal representations: normalized (every instance), temporalValues (value and time pairs)
and aggregatedValues (method results per period), compacted like any other representation."""

from __future__ import annotations

from typing import Any

from .render import Renderer
from .temporal import TemporalEntity

# the member that holds the pairs in the simplified temporal representation, per attribute type
_VALUES_MEMBER = {
    "Property": ("value", "values"),
    "GeoProperty": ("value", "values"),
    "Relationship": ("object", "objects"),
    "LanguageProperty": ("languageMap", "languageMaps"),
    "ListProperty": ("valueList", "valueLists"),
    "ListRelationship": ("objectList", "objectLists"),
    "VocabProperty": ("vocab", "vocabs"),
    "JsonProperty": ("json", "jsons"),
}


class TemporalRenderer:
    def __init__(self, renderer: Renderer, *, mode: str, timeproperty: str = "observedAt"):
        self.renderer = renderer
        self.mode = mode  # "normalized", "temporalValues" or "aggregatedValues"
        self.timeproperty = timeproperty

    def entity(self, history: TemporalEntity) -> dict[str, Any]:
        terms = self.renderer.terms
        out: dict[str, Any] = {"id": history.id, "type": self.renderer.compact_types(history.types)}
        if self.mode == "aggregatedValues":
            for iri, methods in (history.aggregated or {}).items():
                out[terms.compact(iri)] = {"type": "Property", **methods}
            return out
        for iri, instances in history.attrs.items():
            name = terms.compact(iri)
            if self.mode == "temporalValues":
                out[name] = self._values(instances)
            else:
                out[name] = [self.renderer.normalized(instance) for instance in instances]
        return out

    def _values(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        kind = instances[0].get("type", "Property")
        member, plural = _VALUES_MEMBER.get(kind, ("value", "values"))
        pairs = []
        for instance in instances:
            value = self.renderer.key_value(instance) if kind in ("VocabProperty", "ListRelationship") else instance.get(member)
            pairs.append([value, instance.get(self.timeproperty) or instance.get("modifiedAt")])
        return {"type": kind, plural: pairs}
