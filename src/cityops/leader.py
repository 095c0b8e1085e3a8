"""Background duties (delivering notifications, enforcing history retention) run in exactly one
process of a multi-worker server: the one holding a lock file next to the database. The others
keep trying, so when the leader dies another takes over within seconds."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os

log = logging.getLogger("cityops")

RETRY_SECONDS = 2.0


class Leader:
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
        log.info("this process (pid %d) runs the background duties: notifications and history retention", os.getpid())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
