"""A background job run again and again: every ``interval`` seconds, or sooner when woken.

A failure is logged in the job's own words and the job runs again next time: a database hiccup
must not stop a duty (retention, liveness, command delivery, following other processes' writes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cityops")


class Periodic:
    def __init__(self, name: str, interval: float, job: Callable[[], Awaitable[object]], failure: str):
        self.name = name
        self.interval = interval
        self.job = job
        self.failure = failure  # what the log says when the job fails, e.g. "delivering device commands failed"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Run the job now rather than at the end of the interval."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s; trying again in %g s", self.failure, self.interval)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
