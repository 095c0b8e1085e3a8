"""Messages from devices as the gateway receives them, and the bounded buffer they wait in.

The buffer holds at most ``capacity`` messages from receipt until their reading is committed.
When it is full, the MQTT intake stops reading from the broker (which keeps QoS 1 messages for
the gateway's session) and HTTP ingest waits: intake slows, memory stays bounded, nothing is
dropped. Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    DEAD_LETTER = "dead_letter"
    FAILED = "failed"  # neither stored nor kept: an HTTP client is told; an MQTT message is sent again by the broker


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
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.held = 0  # messages taken in and not yet released

    async def put_many(self, messages: list[Message]) -> None:
        """Queue messages once there is room for them (an empty buffer takes any number)."""
        while self.held and self.held + len(messages) > self.capacity:
            self._room.clear()
            await self._room.wait()
        self._items.extend(messages)
        self.held += len(messages)
        self._ready.set()

    async def put(self, message: Message) -> None:
        await self.put_many([message])

    async def take(self, most: int) -> list[Message]:
        """The waiting messages, oldest first, at most ``most``; waits for at least one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items = self._items
        return [items.popleft() for _ in range(min(most, len(items)))]

    def release(self, count: int) -> None:
        """``count`` taken messages are settled: their room is free again."""
        self.held -= count
        self._room.set()

    def __len__(self) -> int:
        return self.held
