"""Which service groups and devices exist: kept as records in the store (per tenant), cached in
memory for the hot path, and kept in step with other processes by polling record versions.

Devices send only an API key and a device id (in the MQTT topic or the HTTP query), so the cache
is indexed across tenants: an API key belongs to one service group, a device id is unique per key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..periodic import Periodic
from ..store.contract import DEFAULT_TENANT, Store
from .provisioning import Device, DeviceProfile, ServiceGroup

log = logging.getLogger("cityops.ingest")

GROUP = "iot-group"  # key: "<resource>|<apikey>"
DEVICE = "iot-device"  # key: device id
SEEN = "iot-seen"  # key: device id; {"at": epoch seconds of its last message}
DEAD_LETTER = "iot-dead-letter"  # key: "<epoch ns, 20 digits>-<n>"
RECEIPT = "mqtt-receipt"  # key: "<client id>|<packet id>"; {"d": digest of the message}
COMMAND = "iot-command"  # key: "<device id>|<command>"; a command owed to a device


@dataclass(frozen=True, slots=True)
class Provisioned:
    tenant: str
    device: Device
    created: float

    @classmethod
    def from_record(cls, tenant: str, doc: dict) -> Provisioned:
        return cls(tenant, Device.from_json(doc["device"]), doc["created"])

    def record(self) -> dict:
        """The DEVICE record that keeps it."""
        return {"device": self.device.to_json(), "created": self.created}


class DeviceRegistry:
    def __init__(self, store: Store, refresh_interval: float = 1.0):
        self.store = store
        self.refresh_interval = refresh_interval
        self.groups: dict[str, dict[str, ServiceGroup]] = {}  # tenant -> key -> group
        self.devices: dict[str, dict[str, Provisioned]] = {}  # tenant -> device id -> device
        self._group_by_apikey: dict[str, tuple[str, ServiceGroup]] = {}
        self._device_by_key: dict[tuple[str, str], Provisioned] = {}  # (apikey, device id)
        self._profiles: dict[tuple[str, str], DeviceProfile] = {}  # (tenant, device id)
        self._versions: dict[tuple[str, str], int] = {}  # (tenant, kind) -> version seen
        self._following = Periodic("device-registry", refresh_interval, self.refresh, "could not refresh the device registry")

    async def start(self) -> None:
        await self.refresh()
        await self._following.start()

    async def stop(self) -> None:
        await self._following.stop()

    async def refresh(self, tenant: str | None = None) -> None:
        """Take in every group and device written since the last refresh (by any process)."""
        tenants = [tenant] if tenant is not None else sorted({DEFAULT_TENANT, *await self.store.tenants()})
        for name in tenants:
            for kind in (GROUP, DEVICE):
                since = self._versions.get((name, kind), 0)
                version, changed = await self.store.records_changed(name, kind, since)
                for key, doc in changed:
                    self.take(name, kind, key, doc)
                self._versions[(name, kind)] = max(since, version)

    def _take_group(self, tenant: str, key: str, group: ServiceGroup | None) -> None:
        groups = self.groups.setdefault(tenant, {})
        old = groups.pop(key, None)
        if old is not None and self._group_by_apikey.get(old.apikey, (None, None))[1] == old:
            del self._group_by_apikey[old.apikey]
        if group is not None:
            groups[key] = group
            self._group_by_apikey[group.apikey] = (tenant, group)
        self._profiles = {k: v for k, v in self._profiles.items() if k[0] != tenant}

    def _take_device(self, tenant: str, device_id: str, provisioned: Provisioned | None) -> None:
        devices = self.devices.setdefault(tenant, {})
        old = devices.pop(device_id, None)
        if old is not None:
            self._device_by_key.pop((old.device.apikey or "", device_id), None)
        self._profiles.pop((tenant, device_id), None)
        if provisioned is not None:
            devices[device_id] = provisioned
            self._device_by_key[(provisioned.device.apikey or "", device_id)] = provisioned

    def group(self, apikey: str) -> tuple[str, ServiceGroup] | None:
        return self._group_by_apikey.get(apikey)

    def find(self, apikey: str, device_id: str) -> Provisioned | None:
        return self._device_by_key.get((apikey, device_id))

    def device(self, tenant: str, device_id: str) -> Provisioned | None:
        return self.devices.get(tenant, {}).get(device_id)

    def profile(self, provisioned: Provisioned) -> DeviceProfile:
        key = (provisioned.tenant, provisioned.device.device_id)
        profile = self._profiles.get(key)
        if profile is None:
            group = self._group_of(provisioned)
            profile = self._profiles[key] = DeviceProfile.of(provisioned.tenant, provisioned.device, group)
        return profile

    def _group_of(self, provisioned: Provisioned) -> ServiceGroup | None:
        found = self._group_by_apikey.get(provisioned.device.apikey or "")
        return found[1] if found is not None and found[0] == provisioned.tenant else None

    def take(self, tenant: str, kind: str, key: str, doc: dict | None) -> None:
        """A group or device record as written (by this process at once, by others when polled); None: deleted."""
        if kind == GROUP:
            self._take_group(tenant, key, None if doc is None else ServiceGroup.from_json(doc))
        elif kind == DEVICE:
            self._take_device(tenant, key, None if doc is None else Provisioned.from_record(tenant, doc))

    def with_timeout(self) -> list[tuple[Provisioned, float]]:
        """Every device expected to report at least every so many seconds, with that interval."""
        found = []
        for devices in self.devices.values():
            for provisioned in devices.values():
                timeout = self.profile(provisioned).timeout
                if timeout is not None:
                    found.append((provisioned, timeout))
        return found
