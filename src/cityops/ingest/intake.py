"""Messages from devices as the gateway receives them, and the bounded buffer they wait in.

The buffer holds at most ``capacity`` messages from receipt until their reading is committed.
When it is full, the MQTT network thread blocks (so the gateway stops reading from the broker,
which keeps QoS 1 messages for it) and HTTP ingest waits: intake slows, memory stays bounded,
nothing is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    DEAD_LETTER = "dead_letter"
    FAILED = "failed"  # not stored and not kept (HTTP only: the client is told and may retry)


@dataclass(slots=True)
class Message:
    transport: str  # "mqtt" or "http"
    apikey: str
    device_id: str
    payload: bytes
    received: float  # epoch seconds
    format: str | None = None  # "ul" or "json"; None: as the device's protocol or group says
    attribute: str | None = None  # a single-measure topic (/attrs/<name>): the payload is its value
    topic: str | None = None
    receipt: str | None = None  # QoS 1 MQTT: "<client id>|<packet id>", to recognise a redelivery
    redelivered: bool = False
    on_done: Callable[[Outcome, str | None], None] | None = None  # called once settled, with the reason if refused
    problem: str | None = None  # why the intake could not route it (a bad topic): refused as it is
    refusal: str | None = None  # the gateway's category when it refused it: unknown_device, malformed...


class Intake:
    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop):
        self.capacity = capacity
        self._loop = loop
        self._items: deque[Message] = deque()
        self._lock = threading.Lock()
        self._space = threading.Semaphore(capacity)
        self._ready = asyncio.Event()
        self._signalled = False
        self.held = 0  # messages taken in and not yet released

    def put_blocking(self, message: Message, stop: threading.Event | None = None) -> bool:
        """From a network thread: wait for room (False if ``stop`` is set while waiting), then queue."""
        while not self._space.acquire(timeout=0.5):
            if stop is not None and stop.is_set():
                return False
        with self._lock:
            self._items.append(message)
            self.held += 1
            wake = not self._signalled
            self._signalled = True
        if wake:
            self._loop.call_soon_threadsafe(self._ready.set)
        return True

    async def put(self, message: Message) -> None:
        """From the event loop: wait (without blocking the loop) for room, then queue."""
        while not self._space.acquire(blocking=False):
            await asyncio.sleep(0.005)
        with self._lock:
            self._items.append(message)
            self.held += 1
            self._signalled = True
        self._ready.set()

    async def take(self, most: int) -> list[Message]:
        """The waiting messages, oldest first, at most ``most``; waits for at least one."""
        while True:
            with self._lock:
                if self._items:
                    count = min(most, len(self._items))
                    taken = [self._items.popleft() for _ in range(count)]
                    if not self._items:
                        self._signalled = False
                        self._ready.clear()
                    return taken
                self._signalled = False
                self._ready.clear()
            await self._ready.wait()

    def release(self, count: int) -> None:
        """``count`` taken messages are settled: their room is free again."""
        with self._lock:
            self.held -= count
        if count:
            self._space.release(count)

    def __len__(self) -> int:
        return self.held
