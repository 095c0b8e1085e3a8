"""Keeping subscriptions: create, read, update and delete them in the store, checked and with
their @context resolved once, so every process can match changes against them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..hub.context import ContextResolver, TermMap, looks_like_iri
from ..hub.errors import ResourceNotFound
from ..hub.subscription import Subscription, parse_subscription
from ..store.contract import Store, SubscriptionRecord
from .registry import subscription_of
from .status import DeliveryStatus

log = logging.getLogger("cityops.notify")


LiveStatus = Callable[[str, str], "dict[str, Any] | None"]


class Subscriptions:
    def __init__(self, store: Store, resolver: ContextResolver, live_status: LiveStatus | None = None):
        self.store = store
        self.resolver = resolver
        self.live_status = live_status  # the notifier's status, newer than the stored one in the process that delivers

    async def _notify_terms(self, body: Any) -> TermMap | None:
        """The jsonldContext of a subscription resolved now: one that cannot be had is refused (503)."""
        url = body.get("jsonldContext") if isinstance(body, dict) else None
        if not isinstance(url, str) or not looks_like_iri(url):
            return None  # absent, or invalid: parse_subscription says why
        return await self.resolver.resolve(url)

    async def create(self, tenant: str, body: Any, terms: TermMap, context: Any) -> str:
        notify_terms = await self._notify_terms(body)
        subscription = parse_subscription(body, terms, context, notify_terms=notify_terms)
        now = time.time()
        record = SubscriptionRecord(
            subscription.id, subscription.payload, context, terms.to_document(), notify_terms.to_document() if notify_terms else None, now, now
        )
        await self.store.save_subscription(tenant, record, new=True)
        log.info("notify: subscription %s created, notifying %s", subscription.id, subscription.endpoint.uri)
        return subscription.id

    async def _stored(self, tenant: str, subscription_id: str) -> tuple[SubscriptionRecord, Subscription]:
        record = await self.store.subscription(tenant, subscription_id)
        subscription = subscription_of(record) if record is not None else None
        if record is None or subscription is None:
            raise ResourceNotFound(f"no subscription {subscription_id}", instance=subscription_id)
        return record, subscription

    def _status(self, tenant: str, record: SubscriptionRecord) -> dict[str, Any]:
        live = self.live_status(tenant, record.id) if self.live_status is not None else None
        return live if live is not None else DeliveryStatus.from_json(record.status).to_json()

    async def retrieve(self, tenant: str, subscription_id: str, terms: TermMap | None = None) -> dict[str, Any]:
        record, subscription = await self._stored(tenant, subscription_id)
        return subscription.render(self._status(tenant, record), terms)

    async def query(self, tenant: str, limit: int, offset: int, terms: TermMap | None = None) -> tuple[list[dict[str, Any]], int]:
        records, count = await self.store.list_subscriptions(tenant, limit, offset)
        rendered = []
        for record in records:
            subscription = subscription_of(record)
            if subscription is not None:
                rendered.append(subscription.render(self._status(tenant, record), terms))
        return rendered, count

    async def update(self, tenant: str, subscription_id: str, fragment: Any, terms: TermMap | None, context: Any) -> None:
        """Merge ``fragment`` over the subscription; names in it use ``context`` (or the one the
        subscription was made with, when the request brings none)."""
        record, existing = await self._stored(tenant, subscription_id)
        if terms is None:
            terms, context = existing.terms, record.context
        notify_terms = await self._notify_terms({**existing.payload, **fragment} if isinstance(fragment, dict) else fragment)
        updated = parse_subscription(fragment, terms, context, existing=existing, notify_terms=notify_terms)
        record = SubscriptionRecord(
            updated.id, updated.payload, context, terms.to_document(), notify_terms.to_document() if notify_terms else None,
            record.created, time.time(),
        )  # fmt: skip
        await self.store.save_subscription(tenant, record, new=False)
        log.info("notify: subscription %s updated", subscription_id)

    async def delete(self, tenant: str, subscription_id: str) -> None:
        await self.store.delete_subscription(tenant, subscription_id)
        log.info("notify: subscription %s deleted, with any notifications it was still owed", subscription_id)
