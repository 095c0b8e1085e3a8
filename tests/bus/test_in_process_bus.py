"""The change stream: every committed change reaches every consumer once, in commit order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cityops.bus.bus import InProcessBus
from cityops.hub.changes import Change
from cityops.hub.context import ContextResolver
from cityops.hub.entity import parse_entity
from cityops.hub.hub import Hub
from cityops.hub.timestamps import now_iso
from cityops.store.sqlite import SQLiteStore

TERMS = ContextResolver().core


def test_consumers_get_every_change_in_commit_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(str(tmp_path / "bus.db"))
        await store.open()
        bus = InProcessBus()
        hub = Hub(store, bus=bus)
        seen: dict[str, list[Change]] = {"a": [], "b": []}

        async def consumer_a(changes: list[Change]) -> None:
            seen["a"].extend(changes)

        async def consumer_b(changes: list[Change]) -> None:
            await asyncio.sleep(0)  # a slower consumer sees the same stream
            seen["b"].extend(changes)

        bus.subscribe("a", consumer_a)
        bus.subscribe("b", consumer_b)
        await bus.start()
        await hub.create("", parse_entity({"id": "urn:ngsi-ld:Counter:1", "type": "Counter", "n": 0}, TERMS, now=now_iso()))

        async def bump(value: int) -> None:
            await hub.update_attributes("", "urn:ngsi-ld:Counter:1", {"id": "urn:ngsi-ld:Counter:1", "type": [], "attrs": {TERMS.expand("n"): [{"type": "Property", "value": value}]}})

        await asyncio.gather(*(bump(v) for v in range(1, 101)))
        await hub.delete("", "urn:ngsi-ld:Counter:1")
        await bus.stop()
        await store.close()

        for changes in seen.values():
            assert [c.kind for c in changes] == ["created"] + ["updated"] * 100 + ["deleted"]
            # each change starts from the state the previous one left: the order is the commit order
            for previous, change in zip(changes, changes[1:]):
                assert change.before == previous.after

    asyncio.run(scenario())
