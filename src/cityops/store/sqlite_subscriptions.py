"""Subscriptions and the notification outbox in SQLite: plain functions over a connection, run by
the writer (inside its transaction) or by a reader."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import orjson

from ..hub.errors import AlreadyExists, ResourceNotFound
from .contract import SubscriptionRecord

_COLUMNS = (
    "id, payload, context, (SELECT doc FROM term_maps WHERE key = s.terms), (SELECT doc FROM term_maps WHERE key = s.notify_terms), "
    "created, modified, status"
)


def current_version(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT coalesce(max(version), 0) FROM subscriptions").fetchone()[0]


def changes_since(connection: sqlite3.Connection, since: int) -> tuple[int, list[SubscriptionRecord]]:
    version = current_version(connection)
    if version <= since:
        return version, []
    rows = connection.execute(f"SELECT {_COLUMNS} FROM subscriptions s WHERE version > ? ORDER BY version", (since,)).fetchall()
    return version, [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> SubscriptionRecord:
    sid, payload, context, terms_doc, notify_terms_doc, created, modified, status = row
    return SubscriptionRecord(
        id=sid,
        payload=orjson.loads(payload) if payload is not None else None,
        context=orjson.loads(context) if context is not None else None,
        terms=orjson.loads(terms_doc) if terms_doc is not None else None,
        notify_terms=orjson.loads(notify_terms_doc) if notify_terms_doc is not None else None,
        created=created,
        modified=modified,
        status=orjson.loads(status),
    )


def get(connection: sqlite3.Connection, subscription_id: str) -> SubscriptionRecord | None:
    row = connection.execute(f"SELECT {_COLUMNS} FROM subscriptions s WHERE id = ? AND payload IS NOT NULL", (subscription_id,)).fetchone()
    return _record(row) if row else None


def page(connection: sqlite3.Connection, limit: int, offset: int) -> tuple[list[SubscriptionRecord], int]:
    (count,) = connection.execute("SELECT count(*) FROM subscriptions WHERE payload IS NOT NULL").fetchone()
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM subscriptions s WHERE payload IS NOT NULL ORDER BY created, id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return [_record(row) for row in rows], count


def save(connection: sqlite3.Connection, record: SubscriptionRecord, *, new: bool) -> None:
    existing = connection.execute("SELECT created FROM subscriptions WHERE id = ? AND payload IS NOT NULL", (record.id,)).fetchone()
    if new and existing:
        raise AlreadyExists(f"subscription {record.id} already exists", instance=record.id)
    if not new and not existing:
        raise ResourceNotFound(f"no subscription {record.id}", instance=record.id)
    created = existing[0] if existing else record.created
    connection.execute(
        "INSERT INTO subscriptions (id, version, payload, context, terms, notify_terms, created, modified, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, payload = excluded.payload, "
        "context = excluded.context, terms = excluded.terms, notify_terms = excluded.notify_terms, modified = excluded.modified"
        + (", created = excluded.created, status = excluded.status" if new else ""),
        (record.id, current_version(connection) + 1, orjson.dumps(record.payload), orjson.dumps(record.context),
         _term_map_key(connection, record.terms), _term_map_key(connection, record.notify_terms), created, record.modified,
         orjson.dumps(record.status)),
    )  # fmt: skip


def _term_map_key(connection: sqlite3.Connection, term_map: dict[str, Any] | None) -> str | None:
    """Keep a resolved @context once, however many subscriptions use it; its key."""
    if term_map is None:
        return None
    doc = orjson.dumps(term_map, option=orjson.OPT_SORT_KEYS)
    key = hashlib.sha256(doc).hexdigest()
    connection.execute("INSERT OR IGNORE INTO term_maps (key, doc) VALUES (?, ?)", (key, doc))
    return key


def delete(connection: sqlite3.Connection, subscription_id: str) -> None:
    if get(connection, subscription_id) is None:
        raise ResourceNotFound(f"no subscription {subscription_id}", instance=subscription_id)
    # The row stays without its payload so that every process sees the deletion as a newer version.
    connection.execute(
        "UPDATE subscriptions SET payload = NULL, context = NULL, terms = NULL, notify_terms = NULL, status = '{}', version = ? WHERE id = ?",
        (current_version(connection) + 1, subscription_id),
    )
    connection.execute("DELETE FROM outbox WHERE subscription = ?", (subscription_id,))


def pending(connection: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    return connection.execute("SELECT seq, subscription, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()


def notifications(connection: sqlite3.Connection, subscription_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
    return connection.execute(
        "SELECT seq, body FROM outbox WHERE subscription = ? AND seq > ? ORDER BY seq LIMIT ?", (subscription_id, after, limit)
    ).fetchall()


def done(connection: sqlite3.Connection, seqs: list[int], statuses: dict[str, dict[str, Any]]) -> None:
    connection.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])
    connection.executemany(
        "UPDATE subscriptions SET status = ? WHERE id = ? AND payload IS NOT NULL",
        [(orjson.dumps(status), sid) for sid, status in statuses.items()],
    )
