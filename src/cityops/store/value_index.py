"""The value index both stores keep: every scalar an attribute holds, one row a value, so that a
``q`` term can be answered (SQLite) or narrowed (PostgreSQL) without reading entities.

A row is keyed (attribute, value kind, value, entity) and carries the attribute's kind. What it
holds per attribute kind must agree with ``query_language.values_at``: Property values,
Relationship objects, ListProperty items, every text of a LanguageProperty, ListRelationship
objects. An instance without any scalar leaves a PRESENT row (its value: the attribute kind), so
the attribute's existence is still indexed.
"""

from __future__ import annotations

import math
from typing import Any

from ..hub.entity import ATTRIBUTE_TYPES, Instance

KIND_CODE = {kind: index for index, kind in enumerate(ATTRIBUTE_TYPES)}
KIND_NAME = dict(enumerate(ATTRIBUTE_TYPES))
# Attribute kinds whose values the value index holds exactly as the query language compares them.
INDEXED_KINDS = frozenset(
    KIND_CODE[k] for k in ("Property", "Relationship", "LanguageProperty", "ListProperty", "ListRelationship")
)
NUMBER, STRING, BOOLEAN, PRESENT = 0, 1, 2, 3  # value kinds in the index

ValueRows = dict[tuple[int, int, Any, int], int]  # (attr_id, value kind, value, rid) -> attribute kind


def _add_scalars(rows: ValueRows, attr_id: int, rid: int, value: Any, akind: int) -> bool:
    """Add rows for ``value`` (arrays: their scalar elements); whether any was added."""
    added = False
    for item in value if type(value) is list else (value,):
        kind = type(item)
        if kind is str:
            rows[(attr_id, STRING, item, rid)] = akind
        elif kind is int or kind is float:
            rows[(attr_id, NUMBER, item, rid)] = akind
        elif kind is bool:
            rows[(attr_id, BOOLEAN, int(item), rid)] = akind
        elif kind is dict and "@value" in item and type(item["@value"]) in (str, int, float, bool):
            added = _add_scalars(rows, attr_id, rid, item["@value"], akind) or added
            continue
        else:
            continue
        added = True
    return added


def add_instance_values(rows: ValueRows, attr_id: int, rid: int, instance: Instance, akind: int) -> None:
    kind_name = instance.get("type", "Property")
    found = False
    if kind_name == "Property":
        found = _add_scalars(rows, attr_id, rid, instance.get("value"), akind)
    elif kind_name == "Relationship":
        found = _add_scalars(rows, attr_id, rid, instance.get("object"), akind)
    elif kind_name == "ListProperty":
        found = _add_scalars(rows, attr_id, rid, instance.get("valueList"), akind)
    elif kind_name == "LanguageProperty":
        for text in (instance.get("languageMap") or {}).values():
            found = _add_scalars(rows, attr_id, rid, text, akind) or found
    elif kind_name == "ListRelationship":
        for item in instance.get("objectList") or ():
            target = item.get("object") if isinstance(item, dict) else item
            found = _add_scalars(rows, attr_id, rid, target, akind) or found
    if not found:
        rows[(attr_id, PRESENT, akind, rid)] = akind


def value_rows(attr_id: int, rid: int, instances: list[Instance]) -> ValueRows:
    rows: ValueRows = {}
    for instance in instances:
        add_instance_values(rows, attr_id, rid, instance, KIND_CODE.get(instance.get("type", "Property"), 0))
    return rows


def as_float(number: float) -> float:
    """A number as a float column holds it: integers beyond a float's range become ±infinity (which
    still compares on the right side of every finite literal)."""
    try:
        return float(number)
    except OverflowError:
        return math.copysign(math.inf, number)
