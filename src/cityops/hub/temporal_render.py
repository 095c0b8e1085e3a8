"""Temporal representations: normalized (every instance), temporalValues (value and time pairs)
and aggregatedValues (method results per period), compacted like any other representation."""

from __future__ import annotations

from typing import Any

from .projection import Projection
from .render import Renderer
from .temporal import TemporalEntity

# members whose values the simplified representation wraps in an object: [{"languageMap": {...}}, time]
_WRAPPED = frozenset({"LanguageProperty", "JsonProperty", "VocabProperty"})
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
    def __init__(self, renderer: Renderer, *, mode: str, timeproperty: str = "observedAt", projection: Projection | None = None):
        self.renderer = renderer
        self.mode = mode  # "normalized", "temporalValues" or "aggregatedValues"
        self.timeproperty = timeproperty
        self.projection = projection or Projection()

    def entity(self, history: TemporalEntity) -> dict[str, Any]:
        terms = self.renderer.terms
        out: dict[str, Any] = {"id": history.id, "type": self.renderer.compact_types(history.types)}
        if self.mode == "aggregatedValues":
            for iri, methods in (history.aggregated or {}).items():
                out[terms.compact(iri)] = {"type": "Property", **methods}
        else:
            for iri, instances in history.attrs.items():
                name = terms.compact(iri)
                if self.mode == "temporalValues":
                    out[name] = self._by_dataset(instances)
                else:
                    out[name] = [self.renderer.normalized(instance) for instance in instances]
        return {k: v for k, v in out.items() if self.projection.keeps(k)}

    def _by_dataset(self, instances: list[dict[str, Any]]) -> Any:
        """One simplified attribute per dataset: a single object, or a list when there are several."""
        datasets: dict[str | None, list[dict[str, Any]]] = {}
        for instance in instances:
            datasets.setdefault(instance.get("datasetId"), []).append(instance)
        rendered = [self._values(group, dataset) for dataset, group in datasets.items()]
        if not rendered:  # every instance was cut by pagination
            return {"type": "Property", "values": []}
        return rendered[0] if len(rendered) == 1 else rendered

    def _values(self, instances: list[dict[str, Any]], dataset: str | None) -> dict[str, Any]:
        kind = instances[0].get("type", "Property") if instances else "Property"
        member, plural = _VALUES_MEMBER.get(kind, ("value", "values"))
        pairs = []
        for instance in instances:
            value = self.renderer.key_value(instance) if kind in ("VocabProperty", "ListRelationship") else instance.get(member)
            if kind in _WRAPPED:
                value = {member: value}
            pairs.append([value, instance.get(self.timeproperty) or instance.get("modifiedAt")])
        out: dict[str, Any] = {"type": kind}
        if dataset is not None:
            out["datasetId"] = dataset
        out[plural] = pairs
        return out
