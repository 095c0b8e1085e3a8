"""History retention: how long the history of each entity type is kept, and the duty that removes
what is older. A person's location is personal data; a city keeps it only as long as its rules
say, so retention is enforced by the hub, not left to operators."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..periodic import Periodic
from ..settings import parse_retention
from ..store.contract import Store
from .context import TermMap

log = logging.getLogger("cityops.retention")

EVERY_TYPE = "*"
CHECK_EVERY_SECONDS = 600.0


@dataclass(frozen=True)
class RetentionPolicy:
    """Seconds of history to keep per entity type IRI, and for every other type (None: forever)."""

    by_type: dict[str, float]
    default: float | None = None

    @classmethod
    def parse(cls, text: str, terms: TermMap) -> RetentionPolicy:
        """``Vehicle=P30D,*=P365D`` (see ``settings.parse_retention``); type names expand with ``terms``."""
        periods = parse_retention(text)
        default = periods.pop(EVERY_TYPE, None)
        return cls({terms.expand(name): seconds for name, seconds in periods.items()}, default)

    def __bool__(self) -> bool:
        return bool(self.by_type) or self.default is not None


class HistoryRetention:
    """Removes history older than the policy allows, in every tenant, now and then."""

    def __init__(self, store: Store, policy: RetentionPolicy):
        self.store = store
        self.policy = policy
        # a failed round is retried at the next: history is only ever kept too long, never lost early
        self._periodic = Periodic("history-retention", CHECK_EVERY_SECONDS, self.enforce, "retention: removing old history failed")

    async def start(self) -> None:
        if self.policy:
            await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def enforce(self, now: float | None = None) -> int:
        """Remove what is due in every tenant; how many attribute instances were removed."""
        now = time.time() if now is None else now
        removed = 0
        for tenant in await self.store.tenants():
            for type_iri, seconds in self.policy.by_type.items():
                count = await self.store.prune_history(tenant, type_iri, now - seconds, [])
                removed += count
                if count:
                    log.info("retention: removed %d instance(s) of %s history older than %s (tenant %r)", count, type_iri, _days(seconds), tenant)
            if self.policy.default is not None:
                count = await self.store.prune_history(tenant, None, now - self.policy.default, list(self.policy.by_type))
                removed += count
                if count:
                    log.info("retention: removed %d instance(s) of history older than %s (tenant %r)", count, _days(self.policy.default), tenant)
        return removed


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} day(s)"
