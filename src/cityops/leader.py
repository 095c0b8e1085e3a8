"""Background duties (delivering notifications, enforcing history retention) run in exactly one
process of a multi-worker server: the one holding the leader lock. The others keep trying, so
when the leader dies another takes over within seconds.

On SQLite the lock is a file lock next to the database; on PostgreSQL a session advisory lock,
held by a connection of its own (the database releases it when that connection ends)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from typing import Protocol

import asyncpg

log = logging.getLogger("cityops")

RETRY_SECONDS = 2.0


class Leader(Protocol):
    async def acquire(self) -> None:
        """Return once this process leads."""

    async def wait_lost(self) -> None:
        """Return if this process stops leading (its lock went with its database connection)."""

    async def release(self) -> None: ...


def _announce() -> None:
    log.info("this process (pid %d) runs the background duties: notifications and history retention", os.getpid())


class FileLeader:
    def __init__(self, database: str):
        self.database = database
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self.database == ":memory:":
            return True  # one process only
        if self._fd is None:
            self._fd = os.open(f"{self.database}.leader.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def acquire(self) -> None:
        while not self.try_acquire():
            await asyncio.sleep(RETRY_SECONDS)
        _announce()

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()  # a file lock is held until the process ends

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


class PostgresLeader:
    def __init__(self, url: str, key: int):
        self.url = url
        self.key = key
        self._connection: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self.url, timeout=10)
            return bool(await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
            log.warning("leader: the database cannot be reached to take the leader lock (%s); will retry", error)
            self._connection = None
            return False

    async def acquire(self) -> None:
        while not await self.try_acquire():
            await asyncio.sleep(RETRY_SECONDS)
        _announce()

    async def wait_lost(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                assert self._connection is not None
                await self._connection.fetchval("SELECT 1", timeout=10)
            except Exception as error:  # the lock went with the connection: another process may lead now
                log.error(
                    "leader: lost the database connection that held the leader lock (%s); this process stops its background duties",
                    error,
                )
                self._connection = None
                return

    async def release(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.close(timeout=5)
            except Exception:
                pass
            self._connection = None
