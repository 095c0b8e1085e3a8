"""The gateway's hot path: messages in batches to readings, readings to one unit of work a tenant.

Each batch (up to ``CITYOPS_INGEST_BATCH`` messages, as many as are waiting) is decoded, mapped
and written in one transaction per tenant: every reading goes into its device entity's history
(``observedAt`` is the payload's timestamp, else the receipt time), and the entity's current
value takes it only when it is newer than what the entity holds (temporal provision: an
out-of-order reading never overwrites a newer one). In the same transaction: the device's
``lastSeen``, the receipts that recognise a redelivered QoS 1 message, and the dead letters of the
messages the batch refused. Only then is each message settled: an MQTT QoS 1 message is
acknowledged to the broker, an HTTP request answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..hub.changes import RecordKey, WriteSet
from ..hub.entity import Entity, Instance
from ..hub.errors import NgsiError
from ..hub.hub import Hub
from ..hub.temporal_provision import observed_property, record_provided
from ..hub.timestamps import iso_from_epoch, iso_from_microseconds, now_iso
from ..metrics import Metrics
from ..store.contract import DEFAULT_TENANT
from . import json_payload, ultralight
from .intake import Intake, Message, Outcome
from .liveness import DEVICE_STATE, device_state
from .mapping import Mapper
from .payload import MeasureGroup, PayloadError
from .provisioner import Provisioner
from .provisioning import DEFAULT_RESOURCES, DeviceProfile, ProvisioningError
from .registry import DEAD_LETTER, RECEIPT, SEEN, DeviceRegistry, Provisioned

log = logging.getLogger("cityops.ingest")

PAYLOAD_KEPT = 4096  # bytes of a refused payload kept in its dead letter
_sequence = itertools.count()


def digest(message: Message) -> str:
    return hashlib.blake2b((message.topic or "").encode() + b"\0" + message.payload, digest_size=10).hexdigest()


def dead_letter_key(at: float) -> str:
    return f"{int(at * 1e9):020d}-{next(_sequence) % 1_000_000:06d}"


@dataclass(slots=True)
class Refusal:
    message: Message
    reason: str  # a short category for metrics: unknown_device, malformed, provisioning
    detail: str


@dataclass(slots=True)
class Accepted:
    message: Message
    profile: DeviceProfile
    readings: list[dict[str, Instance]]


@dataclass
class TenantBatch:
    """What one transaction of one tenant writes."""

    tenant: str
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def messages(self) -> list[Message]:
        return [a.message for a in self.accepted] + [r.message for r in self.refused]


class Gateway:
    def __init__(self, hub: Hub, registry: DeviceRegistry, provisioner: Provisioner, mapper: Mapper, metrics: Metrics,
                 *, batch_size: int, max_payload: int, dead_letters_kept: int):  # fmt: skip
        self.hub = hub
        self.registry = registry
        self.provisioner = provisioner
        self.mapper = mapper
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_payload = max_payload
        self.dead_letters_kept = dead_letters_kept
        self.intake: Intake | None = None
        self._task: asyncio.Task[None] | None = None
        self._state_iri = ""
        self._dead_since_trim: dict[str, int] = {}
        self._last_receipt: dict[tuple[str, str], int] = {}  # (tenant, device id) -> epoch microseconds

    async def start(self, capacity: int) -> None:
        self.intake = Intake(capacity)
        self._state_iri = self.mapper.terms.expand(DEVICE_STATE)
        self._task = asyncio.create_task(self._run(), name="ingest")

    async def stop(self) -> None:
        """Store what was received, then stop."""
        if self._task is None or self.intake is None:
            return
        deadline = time.monotonic() + 10
        while len(self.intake) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def submit(self, message: Message) -> tuple[Outcome, str | None]:
        """Queue one message from the event loop and wait until it is settled (HTTP ingest)."""
        assert self.intake is not None, "the gateway is not started"
        settled: asyncio.Future[tuple[Outcome, str | None]] = asyncio.get_running_loop().create_future()
        message.on_done = lambda outcome, detail: settled.done() or settled.set_result((outcome, detail))
        await self.intake.put(message)
        return await settled

    async def _run(self) -> None:
        assert self.intake is not None
        while True:
            batch = await self.intake.take(self.batch_size)
            self.metrics.ingest_queue.set(len(self.intake))
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never lose the loop; the messages were settled or will be redelivered
                log.exception("the gateway failed on a batch of %d messages", len(batch))
                for message in batch:
                    _settle(message, Outcome.FAILED, "the gateway failed on this message; the failure is logged")
            finally:
                self.intake.release(len(batch))

    # -- one batch -------------------------------------------------------------------------
    async def _process(self, batch: list[Message]) -> None:
        tenants: dict[str, TenantBatch] = {}
        for message in batch:
            if message.problem is not None:
                self._refuse(tenants, DEFAULT_TENANT, message, "bad_topic", message.problem)
                continue
            try:
                provisioned = await self._device_of(message)
            except ProvisioningError as exc:
                self._refuse(tenants, DEFAULT_TENANT, message, "provisioning", f"the device could not be provisioned: {exc.detail}")
                continue
            if provisioned is None:
                group = self.registry.group(message.apikey)
                tenant = group[0] if group is not None else DEFAULT_TENANT
                why = "its service group does not allow autoprovision" if group else f"no service group has apikey {message.apikey!r}"
                self._refuse(tenants, tenant, message, "unknown_device", f"device {message.device_id!r} is not provisioned and {why}")
                continue
            profile = self.registry.profile(provisioned)
            try:
                # groups without a timestamp take the receipt time, a microsecond apart in the order sent
                groups = self._decode(message, profile)
                readings = [
                    self.mapper.instances(profile, group, iso_from_microseconds(at))
                    for group, at in zip(groups, self._receipt_times(provisioned, message, len(groups)))
                ]
            except PayloadError as exc:
                self._refuse(tenants, provisioned.tenant, message, "malformed", str(exc))
                continue
            tenants.setdefault(provisioned.tenant, TenantBatch(provisioned.tenant)).accepted.append(Accepted(message, profile, readings))
        outcomes: dict[int, tuple[Outcome, str | None]] = {}
        await asyncio.gather(*(self._commit(part, outcomes) for part in tenants.values()))
        stored_at = time.time()
        for message in batch:
            outcome, detail = outcomes.get(id(message), (Outcome.FAILED, "not settled"))
            if outcome is not Outcome.FAILED:
                self.metrics.ingest_latency.observe(stored_at - message.received)
            _settle(message, outcome, detail)

    def _receipt_times(self, provisioned: Provisioned, message: Message, count: int) -> range:
        """The times, in epoch microseconds, of a message's readings that carry no timestamp:
        its receipt time, one microsecond apart, and always after the device's previous ones, so
        that two readings of one device never share an observedAt."""
        key = (provisioned.tenant, provisioned.device.device_id)
        first = max(round(message.received * 1e6), self._last_receipt.get(key, 0) + 1)
        self._last_receipt[key] = first + count - 1
        return range(first, first + count)

    async def _device_of(self, message: Message) -> Provisioned | None:
        found = self.registry.find(message.apikey, message.device_id)
        if found is not None:
            return found
        group = self.registry.group(message.apikey)
        if group is None:
            return None
        return await self.provisioner.autoprovision(group[0], group[1], message.device_id)

    def _decode(self, message: Message, profile: DeviceProfile) -> list[MeasureGroup]:
        kind = message.format or profile.device.payload_format
        if kind is None:
            resource = profile.group.resource if profile.group else "/iot/d"
            kind = DEFAULT_RESOURCES.get(resource, "ul")
        if len(message.payload) > self.max_payload:
            raise PayloadError(f"payload of {len(message.payload)} bytes exceeds the limit of {self.max_payload}")
        if message.attribute is not None:
            return [MeasureGroup({message.attribute: self._single_value(message, kind)}, None)]
        if kind == "json":
            return json_payload.parse_measures(message.payload, max_bytes=self.max_payload)
        return ultralight.parse_measures(message.payload, max_bytes=self.max_payload)

    @staticmethod
    def _single_value(message: Message, kind: str) -> Any:
        try:
            text = message.payload.decode()
        except UnicodeDecodeError:
            raise PayloadError("the payload is not UTF-8 text") from None
        if kind != "json":
            return text.strip()
        try:
            return orjson.loads(message.payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"the payload is not JSON: {exc}") from None

    @staticmethod
    def _refuse(tenants: dict[str, TenantBatch], tenant: str, message: Message, reason: str, detail: str) -> None:
        message.refusal = reason
        tenants.setdefault(tenant, TenantBatch(tenant)).refused.append(Refusal(message, reason, detail))

    # -- one transaction -----------------------------------------------------------------------
    async def _commit(self, part: TenantBatch, outcomes: dict[int, tuple[Outcome, str | None]]) -> None:
        delay = 0.1
        while True:
            try:
                duplicates = await self.hub.apply(part.tenant, self._entity_ids(part), self._work(part), self._records(part))
                break
            except NgsiError as exc:
                if exc.status < 500:
                    if len(part.messages) > 1:
                        await self._commit_one_by_one(part, outcomes)
                        return
                    if part.accepted:
                        self._refuse_all(part, exc)
                        continue
                    log.error("could not keep a dead letter of tenant %r: %s", part.tenant, exc.detail)
                    outcomes[id(part.messages[0])] = (Outcome.FAILED, exc.detail)
                    return
                waiting_http = [m for m in part.messages if m.transport == "http"]
                for message in waiting_http:  # an HTTP client is told now and may retry; MQTT messages wait
                    outcomes[id(message)] = (Outcome.FAILED, exc.detail)
                part.accepted = [a for a in part.accepted if a.message.transport != "http"]
                part.refused = [r for r in part.refused if r.message.transport != "http"]
                if not part.messages:
                    return
                log.warning("could not store %d device messages (%s); retrying in %.1f s", len(part.messages), exc.detail, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.metrics.ingest_batches.inc()
        stored = 0
        for accepted in part.accepted:
            message = accepted.message
            if id(message) in duplicates:
                outcomes[id(message)] = (Outcome.DUPLICATE, None)
                self.metrics.ingest_readings.labels(message.transport, "duplicate").inc(len(accepted.readings))
            else:
                outcomes[id(message)] = (Outcome.STORED, None)
                stored += len(accepted.readings)
        for refusal in part.refused:
            outcomes[id(refusal.message)] = (Outcome.DEAD_LETTER, refusal.detail)
            self.metrics.ingest_readings.labels(refusal.message.transport, "dead_letter").inc()
            self.metrics.dead_letters.labels(refusal.reason).inc()
        by_transport: dict[str, int] = {}
        for accepted in part.accepted:
            if id(accepted.message) not in duplicates:
                by_transport[accepted.message.transport] = by_transport.get(accepted.message.transport, 0) + len(accepted.readings)
        for transport, count in by_transport.items():
            self.metrics.ingest_readings.labels(transport, "stored").inc(count)
        if part.refused:
            await self._trim_dead_letters(part.tenant, len(part.refused))

    async def _commit_one_by_one(self, part: TenantBatch, outcomes: dict[int, tuple[Outcome, str | None]]) -> None:
        """A batch the store refused: each message alone, so one bad reading refuses only itself."""
        for accepted in part.accepted:
            await self._commit(TenantBatch(part.tenant, accepted=[accepted]), outcomes)
        for refusal in part.refused:
            await self._commit(TenantBatch(part.tenant, refused=[refusal]), outcomes)

    @staticmethod
    def _refuse_all(part: TenantBatch, error: NgsiError) -> None:
        for accepted in part.accepted:
            accepted.message.refusal = "refused_by_store"
        part.refused += [Refusal(a.message, "refused_by_store", f"the hub refused the reading: {error.detail}") for a in part.accepted]
        part.accepted = []

    @staticmethod
    def _entity_ids(part: TenantBatch) -> list[str]:
        return list(dict.fromkeys(a.profile.device.entity_name for a in part.accepted))

    @staticmethod
    def _records(part: TenantBatch) -> list[RecordKey]:
        return [(RECEIPT, a.message.receipt) for a in part.accepted if a.message.redelivered and a.message.receipt]

    def _work(self, part: TenantBatch):  # type: ignore[no-untyped-def]
        def work(current: Mapping[str, Entity | None], writes: WriteSet) -> set[int]:
            now = now_iso()
            duplicates: set[int] = set()
            attrs_of: dict[str, dict[str, dict[str, Instance]]] = {}
            profile_of: dict[str, DeviceProfile] = {}
            seen: dict[str, float] = {}
            for accepted in part.accepted:
                message = accepted.message
                fingerprint = digest(message) if message.receipt else None
                if message.redelivered and message.receipt and writes.record(RECEIPT, message.receipt) == {"d": fingerprint}:
                    duplicates.add(id(message))
                    continue
                if message.receipt:
                    writes.put_record(RECEIPT, message.receipt, {"d": fingerprint})
                entity_id = accepted.profile.device.entity_name
                profile_of[entity_id] = accepted.profile
                attrs = attrs_of.setdefault(entity_id, {})
                for reading in accepted.readings:
                    for iri, instance in reading.items():
                        # keyed by time: a reading sent twice (a device resending) is recorded once
                        attrs.setdefault(iri, {})[instance["observedAt"]] = dict(instance, createdAt=now, modifiedAt=now)
                if accepted.profile.timeout is not None:  # liveness follows these; others' last reading is on their entity
                    device_id = accepted.profile.device.device_id
                    seen[device_id] = max(seen.get(device_id, 0.0), message.received)
            for entity_id, by_time in attrs_of.items():
                attrs = {iri: list(instances.values()) for iri, instances in by_time.items()}
                profile = profile_of[entity_id]
                previous = current.get(entity_id)
                base = previous if previous is not None else self.provisioner.new_entity(profile, now)
                if profile.timeout is not None and device_state(base, self._state_iri) != "online":
                    attrs[self._state_iri] = [observed_property("online", now, now)]
                record_provided(writes, previous, {"id": entity_id, "type": base["type"], "attrs": attrs}, now, start=base)
            for device_id, at in seen.items():
                writes.put_record(SEEN, device_id, {"at": at})
            for refusal in part.refused:
                writes.put_record(DEAD_LETTER, dead_letter_key(refusal.message.received), _dead_letter(refusal))
            return duplicates

        return work

    async def _trim_dead_letters(self, tenant: str, added: int) -> None:
        count = self._dead_since_trim.get(tenant, 0) + added
        if count < 100:
            self._dead_since_trim[tenant] = count
            return
        self._dead_since_trim[tenant] = 0
        try:
            await self.hub.store.trim_records(tenant, DEAD_LETTER, self.dead_letters_kept)
        except NgsiError as exc:
            log.warning("could not trim the dead-letter list of tenant %r: %s", tenant, exc.detail)


def _dead_letter(refusal: Refusal) -> dict[str, Any]:
    message = refusal.message
    payload = message.payload[:PAYLOAD_KEPT]
    try:
        text: str | None = payload.decode()
    except UnicodeDecodeError:
        text = None
    return {
        "at": iso_from_epoch(message.received),
        "transport": message.transport,
        "topic": message.topic,
        "apikey": message.apikey,
        "device_id": message.device_id,
        "reason": refusal.reason,
        "detail": refusal.detail,
        "payload": text if text is not None else payload.hex(),
        "payload_encoding": "text" if text is not None else "hex",
        "payload_bytes": len(message.payload),
    }


def _settle(message: Message, outcome: Outcome, detail: str | None) -> None:
    if message.on_done is not None:
        try:
            message.on_done(outcome, detail)
        except Exception:
            log.exception("settling a message from device %s failed", message.device_id)
