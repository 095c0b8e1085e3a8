"""The notifier: delivers what the outbox holds, at least once, in change order per subscription.

Notifications owed are rows in the store's outbox, committed with the changes that caused them
(see ``registry``). The notifier reads new rows in sequence order and hands each to its
subscription's ``Channel``, which delivers one at a time and retries a failed one with growing
waits until it is delivered (or its subscription deleted), so a receiver that is down only delays
its own subscriptions. Delivered rows are removed, and delivery statuses saved, in small batches:
after a crash a notification may be delivered twice, never lost.

Periodic (``timeInterval``) subscriptions are served by a timer each, through the same channels.

In a server with several worker processes exactly one notifier delivers (see ``cityops.leader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any

import orjson

from ..hub.changes import Change
from ..hub.timestamps import iso_from_epoch
from ..settings import Settings
from ..store.contract import Store
from .delivery import DeliveryFailed, HttpSender, MqttSender, merged, message_for, same_reason
from .registry import SubscriptionRegistry, TenantIndex
from .status import DeliveryStatus

log = logging.getLogger("cityops.notify")

CHANNEL_MEMORY = 256  # notifications a channel holds in memory; later ones wait in the outbox
MERGE_AT_MOST = 64  # notifications waiting for one subscription that are sent as one
DISPATCH_BATCH = 5000
POLL_SECONDS = 0.05  # how often the outbox is looked at when no local change wakes the notifier
FLUSH_DELAY = 0.02  # delivered notifications are removed from the outbox in batches gathered over this long
STATUS_EVERY = 1.0  # seconds between saves of delivery statuses (GET shows the live ones meanwhile)


class Channel:
    """One subscription's notifications, delivered one at a time, in order."""

    def __init__(self, notifier: Notifier, tenant: str, subscription_id: str, status: DeliveryStatus):
        self.notifier = notifier
        self.tenant = tenant
        self.subscription_id = subscription_id
        self.status = status
        self.queue: deque[tuple[int | None, bytes]] = deque()  # (outbox sequence, None for periodic; body)
        self.last_seq = 0  # highest sequence ever queued: nothing at or below it is queued twice
        self.waiting_after: int | None = None  # when set, notifications after it wait in the outbox
        self.wakeup = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"notify-{subscription_id}")

    def offer(self, seq: int | None, body: bytes) -> None:
        if seq is not None:
            if seq <= self.last_seq or self.waiting_after is not None:
                return
            if len(self.queue) >= CHANNEL_MEMORY:
                self.waiting_after = self.last_seq
                return
            self.last_seq = seq
        self.queue.append((seq, body))
        self.wakeup.set()

    async def _refill(self) -> None:
        assert self.waiting_after is not None
        rows = await self.notifier.store.notifications(self.tenant, self.subscription_id, self.waiting_after, CHANNEL_MEMORY)
        for seq, body in rows:
            self.queue.append((seq, body))
            self.last_seq = seq
        self.waiting_after = self.last_seq if len(rows) == CHANNEL_MEMORY else None

    async def _run(self) -> None:
        while True:
            if not self.queue:
                if self.waiting_after is not None:
                    await self._refill()
                    continue
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            # Notifications waiting together for the same reason go out as one (their data in
            # order): a receiver that fell behind catches up in few requests.
            waiting = [self.queue[0]]
            if len(self.queue) > 1:
                waiting = same_reason(list(itertools.islice(self.queue, MERGE_AT_MOST)))
            body = waiting[0][1] if len(waiting) == 1 else merged([b for _, b in waiting])
            if not await self._deliver([seq for seq, _ in waiting if seq is not None], body):
                self.notifier.close_channel(self)
                return
            for _ in waiting:
                self.queue.popleft()

    async def _deliver(self, seqs: list[int], body: bytes) -> bool:
        """Send until the receiver takes it; False when the subscription no longer exists."""
        attempt = 0
        while True:
            subscription = self.notifier.registry.get(self.tenant, self.subscription_id)
            if subscription is None:
                return False
            now = iso_from_epoch(time.time())
            message = message_for(subscription, self.tenant, body, now)
            sender = self.notifier.mqtt if subscription.endpoint.scheme in ("mqtt", "mqtts") else self.notifier.http
            self.status.last_notification = now
            try:
                await sender.send(subscription.endpoint, message)
            except DeliveryFailed as failure:
                self._failed(now, failure.reason, subscription.endpoint.uri, attempt)
                await asyncio.sleep(min(2.0**attempt, self.notifier.settings.notify_backoff_max))
                attempt += 1
                continue
            if self.status.consecutive_errors:
                log.info("notify: subscription %s: %s accepts notifications again", self.subscription_id, subscription.endpoint.uri)
            self.status.times_sent += 1
            self.status.last_success = now
            self.status.consecutive_errors = 0
            self.notifier.record(self, seqs)
            return True

    def _failed(self, now: str, reason: str, uri: str, attempt: int) -> None:
        self.status.times_sent += 1
        self.status.times_failed += 1
        self.status.last_failure = now
        self.status.consecutive_errors += 1
        self.status.last_error_reason = reason
        self.notifier.record(self, [])
        if attempt & (attempt - 1) == 0:  # the 1st, 2nd, 4th, 8th... failure in a row, not every retry
            log.warning(
                "notify: subscription %s: notification to %s failed (%s); %d failure(s) in a row, it is kept and retried",
                self.subscription_id, uri, reason, self.status.consecutive_errors,
            )  # fmt: skip


class Notifier:
    def __init__(self, store: Store, registry: SubscriptionRegistry, settings: Settings):
        self.store = store
        self.registry = registry
        self.settings = settings
        self.http = HttpSender(settings.notify_timeout)
        self.mqtt = MqttSender(settings.notify_timeout)
        self.channels: dict[tuple[str, str], Channel] = {}
        self._cursor: dict[str, int] = {}
        self._done: dict[str, list[int]] = {}
        self._dirty: dict[str, set[str]] = {}
        self._periodic: dict[tuple[str, str], tuple[float, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._flush_due = asyncio.Event()
        self._statuses_saved = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start delivering (in the process that leads; see ``cityops.leader``)."""
        self._tasks.append(asyncio.create_task(self._serve(), name="notifier"))

    async def stop(self) -> None:
        for task in [*self._tasks, *(c.task for c in self.channels.values()), *(t for _, t in self._periodic.values())]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._flush(with_statuses=True)
        await self.http.close()
        await self.mqtt.close()
        # ready to start again from the outbox (when this process leads again)
        self._tasks.clear()
        self.channels.clear()
        self._periodic.clear()
        self._cursor.clear()

    def live_status(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        """The delivery status this process holds (newer than the stored one), if it delivers to that subscription."""
        channel = self.channels.get((tenant, subscription_id))
        return channel.status.to_json() if channel is not None else None

    def wake(self) -> None:
        self._wake.set()

    async def on_changes(self, changes: list[Change]) -> None:
        """Bus consumer: committed changes may have left notifications in the outbox."""
        self._wake.set()

    async def _serve(self) -> None:
        self._tasks.append(asyncio.create_task(self._flusher(), name="notifier-flush"))
        while True:
            try:
                await self._round()
            except Exception:  # a bad round must not end delivery: log it, breathe, go on
                log.exception("notify: reading the outbox failed; retrying")
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    # -- dispatching -----------------------------------------------------------------------------
    async def _round(self) -> None:
        for tenant in await self.store.tenants():
            version, records = await self.store.subscription_changes(tenant, self.registry.index(tenant).version)
            index = self.registry.catch_up(tenant, version, records)
            self._schedule_periodic(tenant, index)
            while True:
                rows = await self.store.pending_notifications(tenant, self._cursor.get(tenant, 0), DISPATCH_BATCH)
                for seq, subscription_id, body in rows:
                    (await self.channel(tenant, subscription_id)).offer(seq, body)
                if rows:
                    self._cursor[tenant] = rows[-1][0]
                if len(rows) < DISPATCH_BATCH:
                    break

    async def channel(self, tenant: str, subscription_id: str) -> Channel:
        channel = self.channels.get((tenant, subscription_id))
        if channel is None:
            record = await self.store.subscription(tenant, subscription_id)
            status = DeliveryStatus.from_json(record.status if record else {})
            channel = self.channels.get((tenant, subscription_id))  # another task may have made it meanwhile
            if channel is None:
                channel = self.channels[(tenant, subscription_id)] = Channel(self, tenant, subscription_id, status)
        return channel

    def close_channel(self, channel: Channel) -> None:
        if self.channels.get((channel.tenant, channel.subscription_id)) is channel:
            del self.channels[(channel.tenant, channel.subscription_id)]

    def record(self, channel: Channel, seqs: list[int]) -> None:
        """Remember a delivery attempt: its status, and the outbox rows (``seqs``) it delivered."""
        if seqs:
            self._done.setdefault(channel.tenant, []).extend(seqs)
        self._dirty.setdefault(channel.tenant, set()).add(channel.subscription_id)
        self._flush_due.set()

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # statuses still unsaved are saved within STATUS_EVERY
                await asyncio.wait_for(self._flush_due.wait(), STATUS_EVERY if self._dirty else None)
            await asyncio.sleep(FLUSH_DELAY)
            self._flush_due.clear()
            try:
                await self._flush()
            except Exception:  # kept in memory and tried again with the next batch
                log.exception("notify: recording deliveries failed; will retry")
                self._flush_due.set()
                await asyncio.sleep(1.0)

    async def _flush(self, *, with_statuses: bool | None = None) -> None:
        if with_statuses is None:
            with_statuses = time.monotonic() - self._statuses_saved >= STATUS_EVERY
        if with_statuses:
            self._statuses_saved = time.monotonic()
        for tenant in list(self._done.keys() | self._dirty.keys()):
            seqs = self._done.pop(tenant, [])
            dirty = self._dirty.pop(tenant, set()) if with_statuses else set()
            statuses = {sid: self.channels[(tenant, sid)].status.to_json() for sid in dirty if (tenant, sid) in self.channels}
            try:
                await self.store.notifications_done(tenant, seqs, statuses)
            except Exception:
                self._done.setdefault(tenant, []).extend(seqs)
                self._dirty.setdefault(tenant, set()).update(dirty)
                raise

    # -- periodic subscriptions ------------------------------------------------------------------
    def _schedule_periodic(self, tenant: str, index: TenantIndex) -> None:
        wanted = {
            (tenant, s.id): s.time_interval for s in index.subscriptions.values() if s.time_interval is not None
        }
        for key, (interval, task) in list(self._periodic.items()):
            if key[0] == tenant and wanted.get(key) != interval:
                task.cancel()
                del self._periodic[key]
        for key, interval in wanted.items():
            if key not in self._periodic and interval is not None:
                task = asyncio.create_task(self._every(tenant, key[1], interval), name=f"notify-every-{key[1]}")
                self._periodic[key] = (interval, task)

    async def _every(self, tenant: str, subscription_id: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            subscription = self.registry.get(tenant, subscription_id)
            if subscription is None:
                return
            if subscription.status() != "active":
                continue
            try:
                query = replace(subscription.filter, limit=self.settings.max_page_size, offset=0)
                entities = (await self.store.query(tenant, query)).entities
                if not entities:
                    continue
                body = orjson.dumps(subscription.periodic_notification(entities))
            except Exception:
                log.exception("notify: periodic subscription %s could not be evaluated", subscription_id)
                continue
            (await self.channel(tenant, subscription_id)).offer(None, body)
