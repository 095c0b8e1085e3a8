"""Records in SQLite: plain functions over a connection, run by the writer (inside its transaction)
or by a reader. The tenant's record version is kept in ``meta``; the writer takes the next ones
inside its write transaction, so versions are in commit order even with several processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..hub.changes import RecordKey
from .contract import prefix_end

CHUNK = 500  # records named in one statement (two parameters each)


def current_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT value FROM meta WHERE key = 'record_version'").fetchone()[0])


def load(connection: sqlite3.Connection, keys: Sequence[RecordKey]) -> dict[RecordKey, dict[str, Any] | None]:
    """The named records (None where absent), a chunk of them a statement."""
    found: dict[RecordKey, dict[str, Any] | None] = dict.fromkeys(keys)
    named = list(found)
    for start in range(0, len(named), CHUNK):
        chunk = named[start : start + CHUNK]
        pairs = ", ".join(["(?, ?)"] * len(chunk))
        for kind, key, doc in connection.execute(
            f"WITH named (kind, key) AS (VALUES {pairs}) SELECT r.kind, r.key, r.doc FROM named "
            "JOIN records r ON r.kind = named.kind AND r.key = named.key WHERE r.doc IS NOT NULL",
            [part for pair in chunk for part in pair],
        ):
            found[(kind, key)] = orjson.loads(doc)
    return found


def write(connection: sqlite3.Connection, rows: Iterable[tuple[str, str, str | None, int]], version: int) -> None:
    """Put (kind, key, doc, version) rows, a None doc leaving a tombstone; ``version``: the last one taken."""
    connection.executemany(
        "INSERT INTO records (kind, key, doc, version) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc, version = excluded.version",
        rows,
    )
    connection.execute("UPDATE meta SET value = ? WHERE key = 'record_version'", (version,))


def get(connection: sqlite3.Connection, kind: str, key: str) -> dict[str, Any] | None:
    row = connection.execute("SELECT doc FROM records WHERE kind = ? AND key = ? AND doc IS NOT NULL", (kind, key)).fetchone()
    return orjson.loads(row[0]) if row else None


def _live(kind: str, prefix: str | None) -> tuple[str, list[Any]]:
    """The condition (and its parameters) selecting the live records of ``kind`` with the key prefix."""
    condition, params = "kind = ? AND doc IS NOT NULL", [kind]
    if prefix:
        condition += " AND key >= ?"
        params.append(prefix)
        end = prefix_end(prefix)
        if end is not None:
            condition += " AND key < ?"
            params.append(end)
    return condition, params


def page(connection: sqlite3.Connection, kind: str, limit: int | None, offset: int, prefix: str | None) -> list[tuple[str, dict[str, Any]]]:
    condition, params = _live(kind, prefix)
    rows = connection.execute(
        f"SELECT key, doc FROM records WHERE {condition} ORDER BY key LIMIT ? OFFSET ?", (*params, -1 if limit is None else limit, offset)
    )
    return [(key, orjson.loads(doc)) for key, doc in rows]


def count(connection: sqlite3.Connection, kind: str, prefix: str | None) -> int:
    condition, params = _live(kind, prefix)
    return connection.execute(f"SELECT count(*) FROM records WHERE {condition}", params).fetchone()[0]


def changes_since(connection: sqlite3.Connection, kind: str, since: int) -> tuple[int, list[tuple[str, dict[str, Any] | None]]]:
    version = current_version(connection)
    # up to the version read first: a record written after it comes with the next call
    rows = connection.execute(
        "SELECT key, doc FROM records WHERE kind = ? AND version > ? AND version <= ? ORDER BY version", (kind, since, version)
    )
    return version, [(key, orjson.loads(doc) if doc is not None else None) for key, doc in rows]


def trim(connection: sqlite3.Connection, kind: str, keep: int) -> int:
    return connection.execute(
        "DELETE FROM records WHERE kind = ? AND doc IS NOT NULL AND version <= "
        "(SELECT version FROM records WHERE kind = ? AND doc IS NOT NULL ORDER BY version DESC LIMIT 1 OFFSET ?)",
        (kind, kind, keep),
    ).rowcount
