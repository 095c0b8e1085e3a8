"""How attribute instances combine when an entity changes: merge, replace, delete markers.

Pure functions over the stored form; the hub applies them inside a store transaction.
"""

from __future__ import annotations

from .entity import DATA_MEMBER, NULL, RESERVED_MEMBERS, Instance, find_instance, stamp_replacing


def is_delete_marker(instance: Instance) -> bool:
    if "type" not in instance:
        return False
    return instance.get(DATA_MEMBER.get(instance["type"], "value")) == NULL


def merge_instance(old: Instance | None, new: Instance, now: str) -> Instance | None:
    """``new`` merged into ``old`` (members replaced, sub-attributes merged); ``None`` deletes."""
    if is_delete_marker(new):
        return None
    if old is None or old.get("type") != new.get("type", old.get("type")):
        clean = {k: v for k, v in new.items() if k in RESERVED_MEMBERS or not (isinstance(v, dict) and is_delete_marker(v))}
        return stamp_replacing(clean, old, now)
    merged: Instance = dict(old)
    for key, value in new.items():
        if key in RESERVED_MEMBERS:
            if key not in ("createdAt", "modifiedAt"):
                merged[key] = value
            continue
        sub = merge_instance(old.get(key), value, now) if isinstance(value, dict) else None
        if sub is None:
            merged.pop(key, None)
        else:
            merged[key] = sub
    merged["createdAt"] = old.get("createdAt", now)
    merged["modifiedAt"] = now
    return merged


def merge_attribute(old: list[Instance] | None, new: list[Instance], now: str) -> list[Instance]:
    """Merge each new instance into the instance with the same datasetId; returns the surviving instances."""
    result = [dict(i) for i in old] if old else []
    for instance in new:
        index = find_instance(result, instance.get("datasetId"))
        merged = merge_instance(result[index] if index is not None else None, instance, now)
        if index is None:
            if merged is not None:
                result.append(merged)
        elif merged is None:
            result.pop(index)
        else:
            result[index] = merged
    return result


def replace_attribute(old: list[Instance] | None, new: list[Instance], now: str) -> list[Instance]:
    """Each new instance replaces the instance with the same datasetId whole (creation time kept)."""
    result = [dict(i) for i in old] if old else []
    for instance in new:
        index = find_instance(result, instance.get("datasetId"))
        if is_delete_marker(instance):
            if index is not None:
                result.pop(index)
            continue
        previous = result[index] if index is not None else None
        replacement = stamp_replacing(instance, previous, now)
        if index is None:
            result.append(replacement)
        else:
            result[index] = replacement
    return result
