"""Commands to devices (dim a streetlight, unlock a locker), with their status on the entity.

A command is asked for through ``POST /iot/devices/{id}/commands`` (and, later, by rules). Asking
writes, in one transaction, the command owed to the device (a record) and the entity's
``<command>_status`` = ``PENDING``. The leading process then delivers what is owed, in the order
asked, as FIWARE IoT agents do: over MQTT to ``/<apikey>/<device>/cmd`` (UltraLight
``<device>@<command>|<value>`` or JSON ``{"<command>": value}``), the device answering on
``/cmdexe``; or, for an HTTP device, in a POST to its ``endpoint`` whose answer is the result.
Status: ``PENDING`` → ``DELIVERED`` (the broker took it) → ``OK`` with ``<command>_info`` (the
device's result), or ``ERROR`` with the reason. Undelivered commands are retried with back-off
and survive a restart; one that cannot be delivered within ``COMMAND_EXPIRY`` is an ``ERROR``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ..hub.changes import WriteSet
from ..hub.entity import Entity
from ..hub.errors import BadRequestData, ResourceNotFound
from ..hub.hub import Hub
from ..hub.temporal_provision import observed_property, record_provided
from ..hub.timestamps import now_iso
from ..metrics import Metrics
from ..periodic import Periodic
from . import json_payload, ultralight
from .mapping import Mapper
from .payload import PayloadError
from .registry import COMMAND, DeviceRegistry, Provisioned

log = logging.getLogger("cityops.ingest")

COMMAND_EXPIRY = 24 * 3600.0  # seconds a command may wait for its device
RETRY_MAX = 60.0
Publisher = Callable[[str, bytes], Awaitable[None]]  # (topic, payload): MQTT QoS 1, returns once the broker has it


def command_key(device_id: str, command: str) -> str:
    return f"{device_id}|{command}"


class Commands:
    def __init__(self, hub: Hub, registry: DeviceRegistry, mapper: Mapper, metrics: Metrics, timeout: float = 10.0):
        self.hub = hub
        self.registry = registry
        self.mapper = mapper
        self.metrics = metrics
        self.publish: Publisher | None = None
        self._http = httpx.AsyncClient(timeout=timeout)
        self._delivering = Periodic("device-commands", 1.0, self.deliver_owed, "delivering device commands failed")
        self._next_try: dict[tuple[str, str], tuple[float, float]] = {}  # (tenant, key) -> (when, back-off)

    # -- asking ------------------------------------------------------------------------------
    async def request(self, tenant: str, device_id: str, command: str, value: Any) -> None:
        provisioned = self.registry.device(tenant, device_id)
        if provisioned is None:
            raise ResourceNotFound(f"device {device_id} is not provisioned", instance=device_id)
        profile = self.registry.profile(provisioned)
        if command not in profile.commands:
            known = ", ".join(sorted(profile.commands)) or "none"
            raise BadRequestData(f"device {device_id} has no command {command!r} (its commands: {known})")
        if provisioned.device.transport == "HTTP" and not provisioned.device.endpoint:
            raise BadRequestData(f"device {device_id} takes commands over HTTP but has no endpoint")
        self._encode(provisioned, command, value)  # refuse now what could never be sent
        key = command_key(device_id, command)
        owed = {"device_id": device_id, "command": command, "value": value, "asked": time.time(), "status": "PENDING"}

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> None:
            writes.put_record(COMMAND, key, owed)
            self._set_status(current, writes, provisioned, command, "PENDING", None, value)

        await self.hub.apply(tenant, [provisioned.device.entity_name], work, [(COMMAND, key)])
        self._next_try.pop((tenant, key), None)
        self._delivering.wake()

    def _set_status(self, current: Mapping[str, Entity | None], writes: WriteSet, provisioned: Provisioned, command: str,
                    status: str, info: Any, value: Any = None) -> None:  # fmt: skip
        entity = current.get(provisioned.device.entity_name)
        if entity is None:
            return
        now = now_iso()
        values = {f"{command}_status": status, f"{command}_info": info, command: value}
        attrs = {self.mapper.terms.expand(name): [observed_property(data, now, now)] for name, data in values.items() if data is not None}
        record_provided(writes, entity, {"id": entity["id"], "type": entity["type"], "attrs": attrs}, now)

    async def _settle(self, tenant: str, device_id: str, command: str, status: str, info: Any) -> None:
        """Record a command's new status; it is no longer owed unless DELIVERED (awaiting its result)."""
        provisioned = self.registry.device(tenant, device_id)
        if provisioned is None:
            return
        key = command_key(device_id, command)

        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> None:
            owed = writes.record(COMMAND, key)
            if owed is None:
                return
            if status == "DELIVERED":
                writes.put_record(COMMAND, key, dict(owed, status="DELIVERED"))
            else:
                writes.delete_record(COMMAND, key)
            self._set_status(current, writes, provisioned, command, status, info)

        await self.hub.apply(tenant, [provisioned.device.entity_name], work, [(COMMAND, key)])
        self.metrics.commands.labels(status.lower()).inc()

    # -- results from devices ------------------------------------------------------------------
    def on_result(self, apikey: str, device_id: str, payload: bytes, fmt: str | None) -> None:
        """A device's answer on /cmdexe (called by the MQTT intake)."""
        provisioned = self.registry.find(apikey, device_id)
        if provisioned is None:
            log.warning("a command result from unknown device %s (apikey %s) was ignored", device_id, apikey)
            return
        try:
            results = self._decode_result(provisioned, payload, fmt)
        except PayloadError as exc:
            log.warning("device %s sent a command result that cannot be read: %s", device_id, exc)
            return
        for command, result in results.items():
            asyncio.get_running_loop().create_task(self._settle(provisioned.tenant, device_id, command, "OK", result))

    def _decode_result(self, provisioned: Provisioned, payload: bytes, fmt: str | None) -> dict[str, Any]:
        if (fmt or provisioned.device.payload_format) == "json":
            return json_payload.parse_command_result(payload)
        _, command, result = ultralight.parse_command_result(payload)
        return {command: result}

    # -- delivering ------------------------------------------------------------------------------
    def _encode(self, provisioned: Provisioned, command: str, value: Any) -> bytes:
        try:
            if provisioned.device.payload_format == "json":
                return json_payload.encode_command(command, value)
            return ultralight.encode_command(provisioned.device.device_id, command, value).encode()
        except PayloadError as exc:
            raise BadRequestData(str(exc)) from None

    async def start(self) -> None:
        await self._delivering.start()

    async def stop(self) -> None:
        await self._delivering.stop()

    async def close(self) -> None:
        await self.stop()
        await self._http.aclose()

    async def deliver_owed(self) -> None:
        now = time.time()
        for tenant in list(self.registry.devices):
            for key, owed in await self.hub.store.records(tenant, COMMAND):
                if owed["status"] != "PENDING" or self._next_try.get((tenant, key), (0.0, 0.0))[0] > now:
                    continue
                await self._deliver(tenant, key, owed, now)

    async def _deliver(self, tenant: str, key: str, owed: dict[str, Any], now: float) -> None:
        device_id, command = owed["device_id"], owed["command"]
        provisioned = self.registry.device(tenant, device_id)
        if provisioned is None or now - owed["asked"] > COMMAND_EXPIRY:
            why = "the device is no longer provisioned" if provisioned is None else "the device could not be reached in time"
            await self._settle(tenant, device_id, command, "ERROR", why)
            return
        payload = self._encode(provisioned, command, owed["value"])
        try:
            if provisioned.device.transport == "HTTP":
                response = await self._http.post(provisioned.device.endpoint or "", content=payload)
                if response.status_code >= 300:
                    raise OSError(f"the device answered HTTP {response.status_code}")
                results = self._decode_result(provisioned, response.content, None) if response.content else {command: ""}
                await self._settle(tenant, device_id, command, "OK", results.get(command, ""))
            else:
                if self.publish is None:
                    raise OSError("the gateway has no MQTT broker")
                await self.publish(f"/{provisioned.device.apikey}/{device_id}/cmd", payload)
                await self._settle(tenant, device_id, command, "DELIVERED", None)
            self._next_try.pop((tenant, key), None)
        except Exception as exc:  # any failure to deliver (network, broker, device) is retried
            _, back_off = self._next_try.get((tenant, key), (0.0, 0.5))
            back_off = min(back_off * 2, RETRY_MAX)
            self._next_try[(tenant, key)] = (now + back_off, back_off)
            log.warning("command %s to device %s not delivered (%s); retrying in %.0f s", command, device_id, exc, back_off)
