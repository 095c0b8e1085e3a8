"""Provisioning writes: service groups and devices created, changed and removed, each operation
one unit of work through the hub, so that a device's record and its entity appear together.

A device's entity is made when the device is provisioned (with the static attributes and the
``scope`` of its service path) unless it exists already; removing a device keeps its entity and
history, which are the city's data, not the gateway's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..hub.changes import WriteSet
from ..hub.entity import Entity, stamp_replacing
from ..hub.errors import AlreadyExists, ResourceNotFound
from ..hub.hub import Hub
from ..hub.timestamps import now_iso
from .mapping import Mapper
from .provisioning import Device, DeviceProfile, ProvisioningError, ServiceGroup
from .registry import DEVICE, GROUP, DeviceRegistry, Provisioned

MAX_BULK = 1000


class Provisioner:
    def __init__(self, hub: Hub, registry: DeviceRegistry, mapper: Mapper):
        self.hub = hub
        self.registry = registry
        self.mapper = mapper

    # -- service groups --------------------------------------------------------------------
    async def create_groups(self, tenant: str, service_path: str, bodies: Any) -> list[ServiceGroup]:
        items = _bulk(bodies, "services")
        groups = [ServiceGroup.parse(body, service_path, f"services[{i}]") for i, body in enumerate(items)]
        keys = [g.key for g in groups]
        if len(set(keys)) != len(keys):
            raise ProvisioningError("services: the same resource and apikey appear twice")
        for group in groups:
            owner = self.registry.group(group.apikey)
            if owner is not None and (owner[0] != tenant or owner[1].resource != group.resource):
                raise AlreadyExists(f"apikey {group.apikey!r} already belongs to another service group")

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> None:
            for group in groups:
                if writes.record(GROUP, group.key) is not None:
                    raise AlreadyExists(f"a service group for resource {group.resource} and apikey {group.apikey} already exists")
                writes.put_record(GROUP, group.key, group.to_json())

        await self.hub.apply(tenant, [], work, [(GROUP, k) for k in keys])
        for group in groups:
            self.registry.take(tenant, GROUP, group.key, group.to_json())
        return groups

    async def groups(self, tenant: str, limit: int, offset: int) -> tuple[list[ServiceGroup], int]:
        rows = await self.hub.store.records(tenant, GROUP, limit=limit, offset=offset)
        return [ServiceGroup.from_json(doc) for _, doc in rows], await self.hub.store.record_count(tenant, GROUP)

    async def update_group(self, tenant: str, resource: str, apikey: str, changes: Any) -> ServiceGroup:
        key = f"{resource}|{apikey}"

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> ServiceGroup:
            doc = writes.record(GROUP, key)
            if doc is None:
                raise ResourceNotFound(f"no service group for resource {resource} and apikey {apikey}")
            group = ServiceGroup.from_json(doc).updated(changes)
            writes.put_record(GROUP, key, group.to_json())
            return group

        group = await self.hub.apply(tenant, [], work, [(GROUP, key)])
        self.registry.take(tenant, GROUP, key, group.to_json())
        return group

    async def delete_group(self, tenant: str, resource: str, apikey: str) -> None:
        key = f"{resource}|{apikey}"

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> None:
            if writes.record(GROUP, key) is None:
                raise ResourceNotFound(f"no service group for resource {resource} and apikey {apikey}")
            writes.delete_record(GROUP, key)

        await self.hub.apply(tenant, [], work, [(GROUP, key)])
        self.registry.take(tenant, GROUP, key, None)

    # -- devices ---------------------------------------------------------------------------
    def _group_for(self, tenant: str, body: Any) -> ServiceGroup | None:
        apikey = body.get("apikey") if isinstance(body, dict) else None
        found = self.registry.group(apikey) if isinstance(apikey, str) else None
        if found is None and len(self.registry.groups.get(tenant, {})) == 1:
            found = (tenant, next(iter(self.registry.groups[tenant].values())))  # the tenant's only group
        return found[1] if found is not None and found[0] == tenant else None

    async def create_devices(self, tenant: str, service_path: str, bodies: Any, *, existing_ok: bool = False) -> list[Device]:
        items = _bulk(bodies, "devices")
        devices = []
        for index, body in enumerate(items):
            group = self._group_for(tenant, body)
            devices.append(Device.parse(body, service_path, group, f"devices[{index}]"))
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ProvisioningError("devices: the same device_id appears twice")
        for device in devices:
            other = self.registry.find(device.apikey or "", device.device_id)
            if other is not None and other.tenant != tenant and not existing_ok:
                raise AlreadyExists(f"device {device.device_id} with apikey {device.apikey} is provisioned in another service")
        created = time.time()
        profiles = {d.device_id: DeviceProfile.of(tenant, d, self._group_for(tenant, {"apikey": d.apikey})) for d in devices}
        entities = {d.device_id: self.new_entity(profiles[d.device_id], now_iso()) for d in devices}

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> list[Provisioned]:
            made = []
            for device in devices:
                if writes.record(DEVICE, device.device_id) is not None:
                    if existing_ok:
                        continue
                    raise AlreadyExists(f"device {device.device_id} is already provisioned")
                provisioned = Provisioned(tenant, device, created)
                writes.put_record(DEVICE, device.device_id, provisioned.record())
                if current.get(device.entity_name) is None:
                    writes.insert(entities[device.device_id])
                made.append(provisioned)
            return made

        made = await self.hub.apply(tenant, [d.entity_name for d in devices], work, [(DEVICE, i) for i in ids])
        for provisioned in made:
            self.registry.take(tenant, DEVICE, provisioned.device.device_id, provisioned.record())
        return [p.device for p in made]

    def new_entity(self, profile: DeviceProfile, now: str) -> Entity:
        """The entity a device's readings go to, as it is before its first reading."""
        device = profile.device
        attrs = {iri: [stamp_replacing(instance, None, now)] for iri, instance in self.mapper.static_instances(profile).items()}
        entity: Entity = {
            "id": device.entity_name,
            "type": [self.mapper.terms.expand(device.entity_type)],
            "createdAt": now,
            "modifiedAt": now,
            "attrs": attrs,
        }
        if device.service_path != "/":
            entity["scope"] = [device.service_path]
        return entity

    async def devices(self, tenant: str, limit: int, offset: int) -> tuple[list[Provisioned], int]:
        rows = await self.hub.store.records(tenant, DEVICE, limit=limit, offset=offset)
        found = [Provisioned.from_record(tenant, doc) for _, doc in rows]
        return found, await self.hub.store.record_count(tenant, DEVICE)

    async def device(self, tenant: str, device_id: str) -> Provisioned:
        doc = await self.hub.store.record(tenant, DEVICE, device_id)
        if doc is None:
            raise ResourceNotFound(f"device {device_id} is not provisioned", instance=device_id)
        return Provisioned.from_record(tenant, doc)

    async def update_device(self, tenant: str, device_id: str, changes: Any) -> Device:
        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> Provisioned:
            doc = writes.record(DEVICE, device_id)
            if doc is None:
                raise ResourceNotFound(f"device {device_id} is not provisioned", instance=device_id)
            before = Provisioned.from_record(tenant, doc)
            updated = Provisioned(tenant, before.device.updated(changes), before.created)
            writes.put_record(DEVICE, device_id, updated.record())
            return updated

        updated = await self.hub.apply(tenant, [], work, [(DEVICE, device_id)])
        self.registry.take(tenant, DEVICE, device_id, updated.record())
        return updated.device

    async def delete_device(self, tenant: str, device_id: str) -> None:
        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> None:
            if writes.record(DEVICE, device_id) is None:
                raise ResourceNotFound(f"device {device_id} is not provisioned", instance=device_id)
            writes.delete_record(DEVICE, device_id)

        await self.hub.apply(tenant, [], work, [(DEVICE, device_id)])
        self.registry.take(tenant, DEVICE, device_id, None)

    async def autoprovision(self, tenant: str, group: ServiceGroup, device_id: str) -> Provisioned | None:
        """Provision a device its group allows on its first message (None: the group does not)."""
        if not group.autoprovision:
            return None
        await self.create_devices(tenant, group.service_path, {"devices": [{"device_id": device_id, "apikey": group.apikey}]}, existing_ok=True)
        return self.registry.find(group.apikey, device_id)


def _bulk(body: Any, member: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(member), list) or not body[member]:
        raise ProvisioningError(f"the body must be an object with a non-empty '{member}' list")
    if len(body[member]) > MAX_BULK:
        raise ProvisioningError(f"'{member}' has {len(body[member])} items; at most {MAX_BULK} a request")
    return body[member]
