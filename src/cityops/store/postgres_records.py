"""Records in PostgreSQL: plain functions over a connection and a tenant number. The writing ones
run in the unit of work's transaction, at READ COMMITTED.

Several processes may write a tenant's records at once:
- the records a unit names are read ``FOR UPDATE`` (in key order), so they cannot change under
  it; one it found absent has no row to lock, so it is created with a plain INSERT: a unit that
  created it meanwhile makes that collide on the key, and the writer runs the unit again (it then
  sees the record);
- versions are taken from the tenant's row in ``record_versions``, whose lock is held to commit,
  so they become visible in their order and a reader reading past ``since`` never skips one. The
  rows a unit writes without having named them are locked before that (as the named ones were),
  so that a unit holding the versions never waits for a record's row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ..hub.changes import RecordKey
from .contract import prefix_end
from .postgres_connection import Params, insert_rows, row_count

RECORD_COLUMNS = {"t": "int", "kind": "text", "key": "text", "doc": "json", "version": "bigint"}


async def lock(conn: asyncpg.Connection, t: int, keys: Sequence[RecordKey]) -> tuple[dict[RecordKey, Any], set[RecordKey]]:
    """The records (None where absent) with their rows locked until commit, and which have a row
    (a deleted record's included)."""
    found: dict[RecordKey, Any] = dict.fromkeys(keys)
    rows = await conn.fetch(
        "SELECT r.kind, r.key, r.doc FROM records r JOIN unnest($2::text[], $3::text[]) u(kind, key) ON r.kind = u.kind AND r.key = u.key "
        "WHERE r.t = $1 ORDER BY r.kind, r.key FOR UPDATE OF r",
        t, [kind for kind, _ in found], [key for _, key in found],
    )  # fmt: skip
    for kind, key, doc in rows:
        found[(kind, key)] = doc
    return found, {(kind, key) for kind, key, _ in rows}


async def write(
    conn: asyncpg.Connection, t: int, docs: Mapping[RecordKey, Any], named: Mapping[RecordKey, Any], present: set[RecordKey]
) -> int:
    """Write a unit's records (``docs``: None for a deletion), given the records it ``named`` and
    which of them had a row when locked (``present``); how many rows it added."""
    unnamed = [k for k in docs if k not in named]
    if unnamed:
        present = present | (await lock(conn, t, unnamed))[1]
    last = await conn.fetchval(
        "INSERT INTO record_versions (t, version) VALUES ($1, $2) "
        "ON CONFLICT (t) DO UPDATE SET version = record_versions.version + excluded.version RETURNING version",
        t, len(docs),
    )  # fmt: skip
    created, replaced = [], []
    for version, ((kind, key), doc) in enumerate(docs.items(), start=last - len(docs) + 1):
        if (kind, key) in named and (kind, key) not in present:
            created.append((t, kind, key, doc, version))
        else:
            replaced.append((t, kind, key, doc, version))
    await insert_rows(conn, "records", RECORD_COLUMNS, created)
    await insert_rows(
        conn, "records", RECORD_COLUMNS, replaced,
        on_conflict="(t, kind, key) DO UPDATE SET doc = excluded.doc, version = excluded.version, written_at = now()",
    )  # fmt: skip
    return sum(k not in present for k in docs)


async def current_version(conn: asyncpg.Connection, t: int) -> int:
    return await conn.fetchval("SELECT coalesce((SELECT version FROM record_versions WHERE t = $1), 0)", t)


async def get(conn: asyncpg.Connection, t: int, kind: str, key: str) -> Any:
    return await conn.fetchval("SELECT doc FROM records WHERE t = $1 AND kind = $2 AND key = $3", t, kind, key)


def _live(params: Params, kind: str, prefix: str | None) -> str:
    """The condition selecting the live records of ``kind`` with the key prefix (``params`` holds the tenant as $1)."""
    condition = f"t = $1 AND kind = {params.add(kind)} AND doc IS NOT NULL"
    if prefix:
        condition += f" AND key >= {params.add(prefix)}"
        end = prefix_end(prefix)
        if end is not None:
            condition += f" AND key < {params.add(end)}"
    return condition


async def page(conn: asyncpg.Connection, t: int, kind: str, limit: int | None, offset: int, prefix: str | None) -> list[tuple[str, Any]]:
    params = Params([t])
    condition = _live(params, kind, prefix)
    rows = await conn.fetch(
        f"SELECT key, doc FROM records WHERE {condition} ORDER BY key LIMIT {params.add(limit)} OFFSET {params.add(offset)}", *params
    )
    return [(key, doc) for key, doc in rows]


async def count(conn: asyncpg.Connection, t: int, kind: str, prefix: str | None) -> int:
    params = Params([t])
    return await conn.fetchval(f"SELECT count(*) FROM records WHERE {_live(params, kind, prefix)}", *params)


async def changes_since(conn: asyncpg.Connection, t: int, kind: str, since: int) -> tuple[int, list[tuple[str, Any]]]:
    version = await current_version(conn, t)
    # up to the version read first: a record written after it comes with the next call
    rows = await conn.fetch(
        "SELECT key, doc FROM records WHERE t = $1 AND kind = $2 AND version > $3 AND version <= $4 ORDER BY version",
        t, kind, since, version,
    )  # fmt: skip
    return version, [(key, doc) for key, doc in rows]


async def trim(conn: asyncpg.Connection, t: int, kind: str, keep: int) -> int:
    status = await conn.execute(
        "DELETE FROM records WHERE t = $1 AND kind = $2 AND doc IS NOT NULL AND version <= "
        "(SELECT version FROM records WHERE t = $1 AND kind = $2 AND doc IS NOT NULL ORDER BY version DESC LIMIT 1 OFFSET $3)",
        t, kind, keep,
    )  # fmt: skip
    return row_count(status)
