"""The change stream: every committed change, to every consumer, in commit order.

``Bus`` is the contract. ``InProcessBus`` delivers inside one process; a NATS JetStream bus can
replace it when processes are split (same events, at-least-once, ordered per entity).

Consumers that must not miss a change across a crash do not rely on the bus alone: what they
owe (a notification, a rule's state) is written in the same transaction as the change itself
(see ``store`` write hooks). The bus is for what follows the live state: streams to the control
room, caches, metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..hub.changes import Change

log = logging.getLogger("cityops.bus")

Consumer = Callable[[list[Change]], Awaitable[None]]


class Bus(Protocol):
    def subscribe(self, name: str, consumer: Consumer) -> None:
        """``consumer`` receives every list of changes published after this call, in order."""

    def publish(self, changes: list[Change]) -> None:
        """Hand committed changes to the bus; returns at once, delivery is asynchronous."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Deliver what was published, then stop."""


class InProcessBus:
    """An asyncio queue per consumer, each drained by its own task: a slow consumer delays only
    itself, and each consumer sees the changes in the order they were committed."""

    def __init__(self, max_pending: int = 100_000):
        self._consumers: dict[str, tuple[Consumer, asyncio.Queue[list[Change] | None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._max_pending = max_pending
        self.dropped = 0

    def subscribe(self, name: str, consumer: Consumer) -> None:
        if name in self._consumers:
            raise ValueError(f"a bus consumer named {name!r} already exists")
        self._consumers[name] = (consumer, asyncio.Queue())
        if self._tasks:  # already running: start this consumer's task too
            self._tasks.append(asyncio.create_task(self._drain(name), name=f"bus-{name}"))

    def publish(self, changes: list[Change]) -> None:
        if not changes:
            return
        for name, (_, queue) in self._consumers.items():
            if queue.qsize() >= self._max_pending:
                self.dropped += len(changes)
                log.warning("bus: consumer %s is %d batches behind; dropping %d change(s) for it", name, queue.qsize(), len(changes))
                continue
            queue.put_nowait(changes)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain(name), name=f"bus-{name}") for name in self._consumers]

    async def stop(self) -> None:
        for _, queue in self._consumers.values():
            queue.put_nowait(None)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _drain(self, name: str) -> None:
        consumer, queue = self._consumers[name]
        while True:
            changes = await queue.get()
            if changes is None:
                return
            try:
                await consumer(changes)
            except Exception:  # one consumer's failure must not stop the stream for it or the others
                log.exception("bus: consumer %s failed on %d change(s)", name, len(changes))
