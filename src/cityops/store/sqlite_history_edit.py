"""Editing history directly (the temporal provision API): one instance changed or removed, an
attribute's instances removed, an entity's history removed. These correct the record; they are
not changes of an entity's state, so they raise no change event."""

from __future__ import annotations

import sqlite3

import orjson

from ..hub.entity import Instance
from ..hub.errors import ResourceNotFound
from .history import history_row


def _tid(connection: sqlite3.Connection, entity_id: str) -> int:
    row = connection.execute("SELECT tid FROM temporal_entities WHERE id = ?", (entity_id,)).fetchone()
    if row is None:
        raise ResourceNotFound(f"entity {entity_id} has no history", instance=entity_id)
    return row[0]


def _attr_id(connection: sqlite3.Connection, entity_id: str, attr: str) -> int:
    row = connection.execute("SELECT id FROM iris WHERE iri = ?", (attr,)).fetchone()
    if row is None:
        raise ResourceNotFound(f"entity {entity_id} has no history of attribute {attr}", instance=entity_id)
    return row[0]


def modify_instance(connection: sqlite3.Connection, entity_id: str, attr: str, iid: int, instance: Instance, at: str) -> None:
    tid, attr_id = _tid(connection, entity_id), _attr_id(connection, entity_id, attr)
    found = connection.execute("SELECT created FROM history WHERE iid = ? AND tid = ? AND attr_id = ?", (iid, tid, attr_id)).fetchone()
    if found is None:
        raise ResourceNotFound(f"entity {entity_id} has no instance {iid} of attribute {attr}", instance=entity_id)
    _, _, observed, _, modified, deleted, dataset, num, doc = history_row(tid, attr_id, instance, at)
    connection.execute(
        "UPDATE history SET observed = ?, modified = ?, deleted = ?, dataset = ?, num = ?, doc = ? WHERE iid = ?",
        (observed, modified, deleted, dataset, num, doc, iid),
    )


def delete_instances(
    connection: sqlite3.Connection, entity_id: str, attr: str, *, iid: int | None = None, dataset: str | None = None, every: bool = False
) -> None:
    """One instance (``iid``), every instance (``every``), or the instances of one dataset (None: the default one)."""
    tid, attr_id = _tid(connection, entity_id), _attr_id(connection, entity_id, attr)
    if iid is not None:
        cursor = connection.execute("DELETE FROM history WHERE iid = ? AND tid = ? AND attr_id = ?", (iid, tid, attr_id))
    elif every:
        cursor = connection.execute("DELETE FROM history WHERE tid = ? AND attr_id = ?", (tid, attr_id))
    else:
        cursor = connection.execute("DELETE FROM history WHERE tid = ? AND attr_id = ? AND dataset IS ?", (tid, attr_id, dataset))
    if cursor.rowcount == 0:
        raise ResourceNotFound(f"entity {entity_id} has no such history of attribute {attr}", instance=entity_id)


def delete_history(connection: sqlite3.Connection, entity_id: str) -> None:
    tid = _tid(connection, entity_id)
    connection.execute("DELETE FROM history WHERE tid = ?", (tid,))
    connection.execute("DELETE FROM temporal_entities WHERE tid = ?", (tid,))


def prune(connection: sqlite3.Connection, type_iri: str | None, before: float, keep_types: list[str]) -> int:
    """Remove history observed before ``before`` of entities of ``type_iri`` (None: of every type
    but ``keep_types``, which have their own retention); how many instances went."""
    tids = []
    for tid, types in connection.execute("SELECT tid, types FROM temporal_entities"):
        listed = set(orjson.loads(types))
        if (type_iri in listed) if type_iri is not None else not (listed & set(keep_types)):
            tids.append(tid)
    removed = 0
    for start in range(0, len(tids), 500):
        chunk = tids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        removed += connection.execute(f"DELETE FROM history WHERE tid IN ({marks}) AND observed < ?", (*chunk, before)).rowcount
    return removed
