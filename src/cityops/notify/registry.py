"""The subscriptions of every tenant, indexed by entity type, and the write hook that records the
notifications a change owes in the same transaction as the change.

The store is the one source of truth: every subscription change raises a version, and the hook
(in the writer's transaction, so under the database's write lock) first catches up with the
versions it has not seen. A subscription created through one server process therefore applies to
the very next change any process writes. Catching up swaps whole per-tenant indexes, so readers
on other threads never see half an update.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import orjson

from ..hub.changes import Change
from ..hub.context import TermMap
from ..hub.errors import NgsiError
from ..hub.subscription import Subscription, parse_subscription
from ..store.contract import HookReads, SubscriptionChanges, SubscriptionRecord

log = logging.getLogger("cityops.notify")

ANY_TYPE = ""


@dataclass(frozen=True)
class TenantIndex:
    """A tenant's subscriptions, indexed so that a change is checked only against those that may
    concern it: by entity id (subscriptions naming ids), else by entity type, else for every type."""

    version: int = 0
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    by_id: dict[str, tuple[Subscription, ...]] = field(default_factory=dict)
    by_type: dict[str, tuple[Subscription, ...]] = field(default_factory=dict)  # ANY_TYPE: subscriptions for every type

    @classmethod
    def of(cls, version: int, subscriptions: dict[str, Subscription]) -> TenantIndex:
        by_id: dict[str, list[Subscription]] = {}
        by_type: dict[str, list[Subscription]] = {}
        for subscription in subscriptions.values():
            ids = subscription.entity_ids()
            if ids is not None:
                for entity_id in ids:
                    by_id.setdefault(entity_id, []).append(subscription)
                continue
            for key in subscription.type_keys() or {ANY_TYPE}:
                by_type.setdefault(key, []).append(subscription)
        return cls(version, subscriptions, {k: tuple(v) for k, v in by_id.items()}, {k: tuple(v) for k, v in by_type.items()})

    def candidates(self, entity_id: str, types: list[str]) -> list[Subscription]:
        named = self.by_id.get(entity_id, ())
        anytype = self.by_type.get(ANY_TYPE, ())
        if len(types) == 1 and not anytype and not named:
            return list(self.by_type.get(types[0], ()))
        found: dict[str, Subscription] = {s.id: s for s in (*named, *anytype)}
        for entity_type in types:
            for subscription in self.by_type.get(entity_type, ()):
                found[subscription.id] = subscription
        return list(found.values())


def subscription_of(record: SubscriptionRecord) -> Subscription | None:
    """The live subscription a stored record describes (None: deleted or no longer valid)."""
    if record.payload is None or record.terms is None:
        return None
    try:
        notify_terms = TermMap.from_document(record.notify_terms) if record.notify_terms else None
        return parse_subscription(
            record.payload, TermMap.from_document(record.terms), record.context, subscription_id=record.id, notify_terms=notify_terms
        )
    except NgsiError as error:  # stored by an older version with other rules: it cannot match anything
        log.error("notify: stored subscription %s is no longer valid and is ignored: %s", record.id, error.detail)
        return None


class SubscriptionRegistry:
    def __init__(self) -> None:
        self._tenants: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()
        self._last_sent: dict[tuple[str, str], float] = {}  # throttling, per (tenant, subscription)

    def index(self, tenant: str) -> TenantIndex:
        return self._tenants.get(tenant) or TenantIndex()

    def get(self, tenant: str, subscription_id: str) -> Subscription | None:
        return self.index(tenant).subscriptions.get(subscription_id)

    def catch_up(self, tenant: str, version: int, records: list[SubscriptionRecord]) -> TenantIndex:
        """Apply subscription changes up to ``version`` (records newer than the index holds)."""
        with self._lock:
            index = self.index(tenant)
            if version <= index.version:
                return index
            subscriptions = dict(index.subscriptions)
            for record in records:
                subscription = subscription_of(record)
                if subscription is None:
                    subscriptions.pop(record.id, None)
                    self._last_sent.pop((tenant, record.id), None)
                else:
                    subscriptions[record.id] = subscription
            index = self._tenants[tenant] = TenantIndex.of(version, subscriptions)
            return index

    def refresh(self, tenant: str, changes: SubscriptionChanges) -> TenantIndex:
        version, records = changes(self.index(tenant).version)
        return self.catch_up(tenant, version, records)

    def owed(self, tenant: str, changes: list[Change], reads: HookReads) -> list[tuple[str, bytes]]:
        """The write hook: (subscription id, notification body) for every subscription these changes
        concern, one notification per subscription holding its changes in order."""
        if not changes:
            return []
        index = self.refresh(tenant, reads.subscription_changes)
        if not index.subscriptions:
            return []
        now = time.time()
        matched: dict[str, list[tuple[Change, str]]] = {}
        for change in changes:
            entity = change.after if change.after is not None else change.before
            assert entity is not None
            for subscription in index.candidates(entity["id"], entity["type"]):
                reason = subscription.reason(change, now)
                if reason is not None:
                    matched.setdefault(subscription.id, []).append((change, reason))
        rows = []
        for subscription_id, found in matched.items():
            subscription = index.subscriptions[subscription_id]
            if subscription.throttling:
                key = (tenant, subscription_id)
                if now - self._last_sent.get(key, 0.0) < subscription.throttling:
                    continue
                self._last_sent[key] = now
            try:
                body = subscription.notification(found, reads.entities)
            except Exception:  # a subscription that cannot render must not stop the change it watches
                log.exception("notify: subscription %s could not render a notification", subscription_id)
                continue
            rows.append((subscription_id, orjson.dumps(body)))
        return rows
