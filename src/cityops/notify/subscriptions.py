"""Keeping subscriptions: create, read, update and delete them in the store, checked and with
their @context resolved once, so every process can match changes against them."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..hub.context import ContextResolver, TermMap
from ..hub.errors import ResourceNotFound
from ..hub.subscription import Subscription, parse_subscription
from ..store.contract import Store, SubscriptionRecord
from .registry import subscription_of
from .status import DeliveryStatus

log = logging.getLogger("cityops.notify")


class Subscriptions:
    def __init__(self, store: Store, resolver: ContextResolver):
        self.store = store
        self.resolver = resolver

    async def create(self, tenant: str, body: Any, terms: TermMap, context: Any) -> str:
        subscription = parse_subscription(body, terms, context)
        now = time.time()
        record = SubscriptionRecord(subscription.id, subscription.payload, context, terms.to_document(), now, now)
        await self.store.save_subscription(tenant, record, new=True)
        log.info("notify: subscription %s created, notifying %s", subscription.id, subscription.endpoint.uri)
        return subscription.id

    async def _stored(self, tenant: str, subscription_id: str) -> tuple[SubscriptionRecord, Subscription]:
        record = await self.store.subscription(tenant, subscription_id)
        subscription = subscription_of(record) if record is not None else None
        if record is None or subscription is None:
            raise ResourceNotFound(f"no subscription {subscription_id}", instance=subscription_id)
        return record, subscription

    async def retrieve(self, tenant: str, subscription_id: str) -> dict[str, Any]:
        record, subscription = await self._stored(tenant, subscription_id)
        return subscription.render(DeliveryStatus.from_json(record.status).to_json())

    async def query(self, tenant: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        records, count = await self.store.list_subscriptions(tenant, limit, offset)
        rendered = []
        for record in records:
            subscription = subscription_of(record)
            if subscription is not None:
                rendered.append(subscription.render(DeliveryStatus.from_json(record.status).to_json()))
        return rendered, count

    async def update(self, tenant: str, subscription_id: str, fragment: Any, terms: TermMap | None, context: Any) -> None:
        """Merge ``fragment`` over the subscription; names in it use ``context`` (or the one the
        subscription was made with, when the request brings none)."""
        record, existing = await self._stored(tenant, subscription_id)
        if terms is None:
            terms, context = existing.terms, record.context
        updated = parse_subscription(fragment, terms, context, existing=existing)
        record = SubscriptionRecord(updated.id, updated.payload, context, terms.to_document(), record.created, time.time())
        await self.store.save_subscription(tenant, record, new=False)
        log.info("notify: subscription %s updated", subscription_id)

    async def delete(self, tenant: str, subscription_id: str) -> None:
        await self.store.delete_subscription(tenant, subscription_id)
        log.info("notify: subscription %s deleted, with any notifications it was still owed", subscription_id)
