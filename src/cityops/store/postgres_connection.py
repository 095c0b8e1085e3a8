"""Connections to PostgreSQL: one asyncpg pool a process, JSON read and written with orjson."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

# Many short queries at once: parallel workers and JIT compilation cost more than they save.
SESSION_SETTINGS = {"max_parallel_workers_per_gather": "0", "jit": "off"}


def _encode_json(value: Any) -> bytes:
    """json in binary form (what COPY needs) is its text as it is; bytes are already serialized."""
    return value if isinstance(value, bytes) else orjson.dumps(value)


async def _prepare(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec("json", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog", format="binary")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> asyncpg.Pool:
    """A pool whose connections give up on a statement after ``timeout`` x 6 seconds; connecting
    gives up after ``timeout`` (asyncpg raises, the store answers 503)."""
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=timeout * 6, init=_prepare,
        server_settings=SESSION_SETTINGS,
    )  # fmt: skip


async def connect(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection outside the pool (migrations, the leader's lock, partitions, IRIs)."""
    connection = await asyncpg.connect(url, timeout=timeout, command_timeout=timeout * 6)
    await _prepare(connection)
    return connection


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


class Params(list[Any]):
    """Positional parameters of one statement: ``add`` keeps a value and gives its placeholder
    ($n, with an optional cast)."""

    def add(self, value: Any, cast: str = "") -> str:
        self.append(value)
        return f"${len(self)}{cast}"


COPY_FROM_ROWS = 64  # fewer rows go in one INSERT … unnest (COPY's set-up costs more than it saves)


async def insert_rows(
    connection: asyncpg.Connection, table: str, columns: dict[str, str], rows: list[tuple[Any, ...]], *, on_conflict: str = ""
) -> None:
    """Insert ``rows`` into ``table``; ``columns``: name -> SQL type. COPY for many rows, one
    ``INSERT … SELECT unnest(…)`` statement for a few, or for an upsert (``on_conflict``: what
    follows ON CONFLICT; COPY has no such clause)."""
    if not rows:
        return
    if len(rows) >= COPY_FROM_ROWS and not on_conflict:
        await connection.copy_records_to_table(table, records=rows, columns=list(columns))
        return
    arrays = [f"${n}::{kind}[]" for n, kind in enumerate(columns.values(), start=1)]
    await connection.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({', '.join(arrays)})"
        + (f" ON CONFLICT {on_conflict}" if on_conflict else ""),
        *(list(column) for column in zip(*rows)),
    )


def row_count(status: str) -> int:
    """The number of rows an UPDATE or DELETE reached, from its command status."""
    return int(status.rsplit(" ", 1)[-1])
