"""Editing history directly in PostgreSQL (the temporal provision API): one instance changed or
removed, an attribute's instances removed, an entity's history removed. These correct the record;
they are not changes of an entity's state, so they raise no change event. Each runs in the
caller's transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from ..hub.entity import Instance
from ..hub.errors import ResourceNotFound
from .history import history_row
from .postgres_connection import row_count
from .postgres_schema import Iris


async def _tid(conn: asyncpg.Connection, t: int, entity_id: str) -> int:
    tid = await conn.fetchval("SELECT tid FROM temporal_entities WHERE t = $1 AND id = $2", t, entity_id)
    if tid is None:
        raise ResourceNotFound(f"entity {entity_id} has no history", instance=entity_id)
    return tid


async def _attr_id(conn: asyncpg.Connection, iris: Iris, entity_id: str, attr: str) -> int:
    known = await iris.known(conn, [attr])
    if attr not in known:
        raise ResourceNotFound(f"entity {entity_id} has no history of attribute {attr}", instance=entity_id)
    return known[attr]


async def modify_instance(
    conn: asyncpg.Connection,
    t: int,
    iris: Iris,
    entity_id: str,
    attr: str,
    iid: int,
    instance: Instance,
    at: str,
    ensure_month: Callable[[float], Awaitable[None]],
) -> None:
    """Replace instance ``iid``; a new observedAt may move it to another month's partition, which
    ``ensure_month`` (given the new time) creates first, on a connection of its own. Creating a
    partition waits for every transaction that has read ``history``: this transaction must not
    have touched it before (this function touches it only after ``ensure_month``)."""
    tid, attr_id = await _tid(conn, t, entity_id), await _attr_id(conn, iris, entity_id, attr)
    _, _, observed, _, modified, deleted, dataset, num, doc = history_row(tid, attr_id, instance, at)
    await ensure_month(observed)
    status = await conn.execute(
        "UPDATE history SET observed = $1, modified = $2, deleted = $3, dataset = $4, num = $5, doc = $6 "
        "WHERE iid = $7 AND tid = $8 AND attr_id = $9",
        observed, modified, deleted, dataset, num, doc, iid, tid, attr_id,
    )  # fmt: skip
    if row_count(status) == 0:
        raise ResourceNotFound(f"entity {entity_id} has no instance {iid} of attribute {attr}", instance=entity_id)


async def delete_instances(
    conn: asyncpg.Connection,
    t: int,
    iris: Iris,
    entity_id: str,
    attr: str,
    *,
    iid: int | None = None,
    dataset: str | None = None,
    every: bool = False,
) -> None:
    """One instance (``iid``), every instance (``every``), or the instances of one dataset (None: the default one)."""
    tid, attr_id = await _tid(conn, t, entity_id), await _attr_id(conn, iris, entity_id, attr)
    if iid is not None:
        status = await conn.execute("DELETE FROM history WHERE iid = $1 AND tid = $2 AND attr_id = $3", iid, tid, attr_id)
    elif every:
        status = await conn.execute("DELETE FROM history WHERE tid = $1 AND attr_id = $2", tid, attr_id)
    else:
        status = await conn.execute(
            "DELETE FROM history WHERE tid = $1 AND attr_id = $2 AND dataset IS NOT DISTINCT FROM $3::text", tid, attr_id, dataset
        )
    if row_count(status) == 0:
        raise ResourceNotFound(f"entity {entity_id} has no such history of attribute {attr}", instance=entity_id)


async def delete_history(conn: asyncpg.Connection, t: int, entity_id: str) -> None:
    tid = await _tid(conn, t, entity_id)
    await conn.execute("DELETE FROM history WHERE tid = $1", tid)
    await conn.execute("DELETE FROM temporal_entities WHERE tid = $1", tid)


async def prune(conn: asyncpg.Connection, t: int, iris: Iris, type_iri: str | None, before: float, keep_types: list[str]) -> int:
    """Remove history observed before ``before`` of the tenant's entities of ``type_iri`` (None: of
    every type but ``keep_types``, which have their own retention); how many instances went."""
    if type_iri is not None:
        known = await iris.known(conn, [type_iri])
        if type_iri not in known:
            return 0  # no entity ever had the type
        chosen, param = "$3 = ANY(types)", known[type_iri]
    else:
        chosen, param = "NOT (types && $3::int[])", list((await iris.known(conn, keep_types)).values())
    status = await conn.execute(
        f"DELETE FROM history WHERE observed < $2 AND tid IN (SELECT tid FROM temporal_entities WHERE t = $1 AND {chosen})",
        t, before, param,
    )  # fmt: skip
    return row_count(status)
