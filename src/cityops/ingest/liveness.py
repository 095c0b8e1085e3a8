"""Device liveness: a device with an expected interval (``timeout`` on it or its group) that stays
silent longer is marked offline when the interval passes, not when its next message comes.

Every second the leading process reads the ``lastSeen`` records written since its last look (by
any process, with the readings), and marks each overdue device's entity ``deviceState: offline``
(observed at the moment it became overdue): a change event like any other. The next reading
sets it ``online`` again (``cityops.ingest.gateway``). Nothing here is only in memory: after a
restart, the records and the entities say which devices are overdue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ..hub.changes import WriteSet
from ..hub.entity import Entity
from ..hub.errors import NgsiError
from ..hub.hub import Hub
from ..hub.temporal_provision import observed_property, record_provided
from ..hub.timestamps import iso_from_epoch, now_iso
from ..metrics import Metrics
from ..periodic import Periodic
from .mapping import Mapper
from .registry import SEEN, DeviceRegistry, Provisioned

log = logging.getLogger("cityops.ingest")

DEVICE_STATE = "deviceState"  # "online" / "offline", on devices with an expected interval (Smart Data Models Device)


class Liveness:
    def __init__(self, hub: Hub, registry: DeviceRegistry, metrics: Metrics, mapper: Mapper, interval: float = 1.0):
        self.hub = hub
        self.registry = registry
        self.metrics = metrics
        self.mapper = mapper
        self.state_iri = ""
        self.interval = interval
        self._seen: dict[tuple[str, str], float] = {}
        self._versions: dict[str, int] = {}
        self._marked: set[tuple[str, str]] = set()  # marked offline and not heard from since
        self._checking = Periodic("liveness", interval, self.check, "device liveness check failed")

    async def start(self) -> None:
        self.state_iri = self.mapper.terms.expand(DEVICE_STATE)
        await self._checking.start()

    async def stop(self) -> None:
        await self._checking.stop()

    async def check(self, now: float | None = None) -> int:
        """Mark every overdue device offline; how many were marked."""
        await self._follow_seen()
        now = time.time() if now is None else now
        overdue: dict[str, list[tuple[Provisioned, float]]] = {}
        for provisioned, timeout in self.registry.with_timeout():
            key = (provisioned.tenant, provisioned.device.device_id)
            if key in self._marked:
                continue
            if self._seen.get(key, provisioned.created) + timeout <= now:
                overdue.setdefault(provisioned.tenant, []).append((provisioned, timeout))
        marked = 0
        for tenant, devices in overdue.items():
            marked += await self._mark(tenant, devices, now)
        return marked

    async def _follow_seen(self) -> None:
        for tenant in list(self.registry.devices):
            version, changed = await self.hub.store.records_changed(tenant, SEEN, self._versions.get(tenant, 0))
            self._versions[tenant] = max(version, self._versions.get(tenant, 0))
            for device_id, doc in changed:
                if doc is not None:
                    self._seen[(tenant, device_id)] = doc["at"]
                    self._marked.discard((tenant, device_id))

    async def _mark(self, tenant: str, devices: list[tuple[Provisioned, float]], now: float) -> int:
        """Mark these (device, timeout) offline, each unless its record says it spoke meanwhile."""
        by_entity = {p.device.entity_name: (p, timeout) for p, timeout in devices}

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> list[tuple[str, str]]:
            stamp = now_iso()
            done = []
            for entity_id, (provisioned, timeout) in by_entity.items():
                device_id = provisioned.device.device_id
                seen = writes.record(SEEN, device_id)
                due = (seen["at"] if seen is not None else provisioned.created) + timeout
                if due > now:
                    continue  # it spoke after we looked
                entity = current.get(entity_id)
                done.append((tenant, device_id))
                if entity is None or device_state(entity, self.state_iri) == "offline":
                    continue
                offline = observed_property("offline", iso_from_epoch(due), stamp)
                record_provided(writes, entity, {"id": entity_id, "type": entity["type"], "attrs": {self.state_iri: [offline]}}, stamp)
            return done

        try:
            done = await self.hub.apply(tenant, list(by_entity), work, [(SEEN, p.device.device_id) for p, _ in devices])
        except NgsiError as exc:
            log.warning("could not mark %d silent devices offline: %s", len(devices), exc.detail)
            return 0
        self._marked.update(done)
        if done:
            self.metrics.devices_offline.inc(len(done))
            log.info("%d device(s) of tenant %r missed their expected interval and are marked offline", len(done), tenant or "default")
        return len(done)


def device_state(entity: Entity, state_iri: str) -> object:
    """The entity's ``deviceState`` value ("online", "offline"), None when it has none."""
    instances = entity["attrs"].get(state_iri)
    return instances[0].get("value") if instances else None
