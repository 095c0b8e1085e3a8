"""Subscriptions and the notification outbox in PostgreSQL: plain functions over a connection and
a tenant number. The writing ones (``save``, ``delete``, ``insert_outbox``, ``done``) run in the
caller's transaction, at READ COMMITTED (PostgreSQL's default).

Several processes share the database, so what must be ordered is serialized per tenant with
transaction-scoped advisory locks, held until commit: a subscription's version (the tenant's
highest + 1) is taken under one, so versions become visible in their order; outbox rows are
inserted under another, so their sequence numbers are in commit order and a reader reading past
``after`` never skips a row that commits later with a lower number."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import orjson

from ..hub.errors import AlreadyExists, ResourceNotFound
from .contract import SubscriptionRecord
from .postgres_connection import insert_rows
from .postgres_schema import OUTBOX_LOCK_CLASS, SUBSCRIPTION_LOCK_CLASS

_COLUMNS = (
    "id, payload, context, (SELECT doc FROM term_maps WHERE key = s.terms), (SELECT doc FROM term_maps WHERE key = s.notify_terms), "
    "created, modified, status"
)


async def lock_subscriptions(conn: asyncpg.Connection, t: int) -> None:
    """Hold the tenant's subscription lock until this transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", SUBSCRIPTION_LOCK_CLASS, t)


async def lock_outbox(conn: asyncpg.Connection, t: int) -> None:
    """Hold the tenant's outbox lock until this transaction ends (take it just before inserting)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", OUTBOX_LOCK_CLASS, t)


async def current_version(conn: asyncpg.Connection, t: int) -> int:
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM subscriptions WHERE t = $1", t)


async def changes_since(conn: asyncpg.Connection, t: int, since: int) -> tuple[int, list[SubscriptionRecord]]:
    version = await current_version(conn, t)
    if version <= since:
        return version, []
    rows = await conn.fetch(
        f"SELECT version, {_COLUMNS} FROM subscriptions s WHERE t = $1 AND version > $2 ORDER BY version", t, since
    )
    # a change committed between the two statements is in the rows: the version covers it
    return max([version, *(row[0] for row in rows)]), [_record(tuple(row)[1:]) for row in rows]


def _record(row: Any) -> SubscriptionRecord:
    sid, payload, context, terms, notify_terms, created, modified, status = row
    return SubscriptionRecord(
        id=sid,
        payload=payload,
        context=context,
        terms=terms,
        notify_terms=notify_terms,
        created=created,
        modified=modified,
        status=status,
    )


async def get(conn: asyncpg.Connection, t: int, subscription_id: str) -> SubscriptionRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM subscriptions s WHERE t = $1 AND id = $2 AND payload IS NOT NULL", t, subscription_id
    )
    return _record(row) if row else None


async def page(conn: asyncpg.Connection, t: int, limit: int, offset: int) -> tuple[list[SubscriptionRecord], int]:
    count = await conn.fetchval("SELECT count(*) FROM subscriptions WHERE t = $1 AND payload IS NOT NULL", t)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM subscriptions s WHERE t = $1 AND payload IS NOT NULL ORDER BY created, id LIMIT $2 OFFSET $3",
        t, limit, offset,
    )  # fmt: skip
    return [_record(row) for row in rows], count


async def save(conn: asyncpg.Connection, t: int, record: SubscriptionRecord, *, new: bool) -> None:
    """Create (``new``) or replace a subscription, as the tenant's next version."""
    await lock_subscriptions(conn, t)
    created = await conn.fetchval(
        "SELECT created FROM subscriptions WHERE t = $1 AND id = $2 AND payload IS NOT NULL", t, record.id
    )
    if new and created is not None:
        raise AlreadyExists(f"subscription {record.id} already exists", instance=record.id)
    if not new and created is None:
        raise ResourceNotFound(f"no subscription {record.id}", instance=record.id)
    await conn.execute(
        "INSERT INTO subscriptions (t, id, version, payload, context, terms, notify_terms, created, modified, status) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (t, id) DO UPDATE SET version = excluded.version, "
        "payload = excluded.payload, context = excluded.context, terms = excluded.terms, notify_terms = excluded.notify_terms, "
        "modified = excluded.modified" + (", created = excluded.created, status = excluded.status" if new else ""),
        t, record.id, await current_version(conn, t) + 1, record.payload, record.context,
        await _term_map_key(conn, record.terms), await _term_map_key(conn, record.notify_terms),
        created if created is not None else record.created, record.modified, record.status,
    )  # fmt: skip


async def _term_map_key(conn: asyncpg.Connection, term_map: dict[str, Any] | None) -> str | None:
    """Keep a resolved @context once, however many subscriptions (of any tenant) use it; its key."""
    if term_map is None:
        return None
    doc = orjson.dumps(term_map, option=orjson.OPT_SORT_KEYS)
    key = hashlib.sha256(doc).hexdigest()
    await conn.execute("INSERT INTO term_maps (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, doc)
    return key


async def delete(conn: asyncpg.Connection, t: int, subscription_id: str) -> None:
    await lock_subscriptions(conn, t)
    if await get(conn, t, subscription_id) is None:
        raise ResourceNotFound(f"no subscription {subscription_id}", instance=subscription_id)
    # The row stays without its payload so that every process sees the deletion as a newer version.
    await conn.execute(
        "UPDATE subscriptions SET payload = NULL, context = NULL, terms = NULL, notify_terms = NULL, status = '{}', version = $1 "
        "WHERE t = $2 AND id = $3",
        await current_version(conn, t) + 1, t, subscription_id,
    )  # fmt: skip
    await conn.execute("DELETE FROM outbox WHERE t = $1 AND subscription = $2", t, subscription_id)


async def insert_outbox(conn: asyncpg.Connection, t: int, rows: list[tuple[str, bytes]]) -> None:
    """Owe notifications, (subscription id, body); call it as the transaction's last step, since the
    tenant's outbox lock it takes is held until commit."""
    if not rows:
        return
    await lock_outbox(conn, t)
    await insert_rows(conn, "outbox", {"t": "int", "subscription": "text", "body": "bytea"}, [(t, sid, body) for sid, body in rows])


async def pending(conn: asyncpg.Connection, t: int, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    rows = await conn.fetch(
        "SELECT seq, subscription, body FROM outbox WHERE t = $1 AND seq > $2 ORDER BY seq LIMIT $3", t, after, limit
    )
    return [tuple(row) for row in rows]


async def notifications(
    conn: asyncpg.Connection, t: int, subscription_id: str, after: int, limit: int
) -> list[tuple[int, bytes]]:
    rows = await conn.fetch(
        "SELECT seq, body FROM outbox WHERE t = $1 AND subscription = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        t,
        subscription_id,
        after,
        limit,
    )
    return [tuple(row) for row in rows]


async def done(conn: asyncpg.Connection, t: int, seqs: list[int], statuses: dict[str, dict[str, Any]]) -> None:
    """Remove delivered notifications and keep the subscriptions' delivery statuses."""
    if seqs:
        await conn.execute("DELETE FROM outbox WHERE t = $1 AND seq = ANY($2::bigint[])", t, seqs)
    if statuses:
        await conn.executemany(
            "UPDATE subscriptions SET status = $1 WHERE t = $2 AND id = $3 AND payload IS NOT NULL",
            [(status, t, sid) for sid, status in statuses.items()],
        )
