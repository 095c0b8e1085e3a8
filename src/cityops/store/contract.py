"""The storage contract of the hub. Every backend (SQLite, PostgreSQL) implements it and passes
the same test suite (``tests/store``). No SQL leaves a backend.

Entities cross this boundary in the hub's stored form (``cityops.hub.entity``). A backend keeps
them, answers ``EntityQuery`` selections exactly (using its indexes where it can and
``EntityQuery.matches`` where it cannot), and applies units of work (``cityops.hub.changes``)
atomically.

Beside the entities a backend keeps records: small JSON documents named by (kind, key) per tenant
(the IoT gateway's devices, dead letters, receipts...), which units of work read and write in
their transaction. Every put or deletion of one takes the tenant's next record version, and a
deletion leaves a tombstone carrying it, so other processes can follow them (``records_changed``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..hub.changes import Change, RecordKey, UnitOfWork
from ..hub.entity import Entity, Instance
from ..hub.errors import BadRequestData
from ..hub.query import EntityQuery, Selector
from ..hub.temporal import TemporalEntity, TemporalQuery
from ..leader import Leader

DEFAULT_TENANT = ""
TENANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
T = TypeVar("T")


def check_tenant_name(tenant: str) -> None:
    if tenant != DEFAULT_TENANT and not TENANT_NAME.match(tenant):
        raise BadRequestData(f"tenant {tenant!r} is not a valid tenant name (letters, digits, '_', '-', '.', up to 64 characters)")


def prefix_end(prefix: str) -> str | None:
    """The least text above every text starting with ``prefix``, so that a prefix is a key range an
    index reads (code-point order: how SQLite and PostgreSQL's "C" collation compare UTF-8, and
    Python too); None when no text is above them all (an empty prefix)."""
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored
        following = 0xE000
    return stem[:-1] + chr(following)


@dataclass
class QueryResult:
    entities: list[Entity]
    count: int | None = None  # total matches, when the query asked for a count


@dataclass
class TypeSummary:
    type: str
    entity_count: int
    attributes: dict[str, set[str]] = field(default_factory=dict)  # attribute IRI -> attribute kinds


@dataclass
class AttributeSummary:
    attribute: str
    entity_count: int
    types: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)


@dataclass
class SubscriptionRecord:
    """A subscription as kept: what the subscriber sent, the @context it came with and that
    context resolved (``TermMap.to_document``), so any process can use it without fetching."""

    id: str
    payload: dict[str, Any] | None  # None: the subscription was deleted
    context: Any
    terms: dict[str, Any] | None
    notify_terms: dict[str, Any] | None = None  # its jsonldContext resolved, when it has one
    created: float = 0.0
    modified: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)  # delivery status: timesSent, lastSuccess, ...


# Given the last subscription version a caller knows, the current version and every subscription
# changed (or deleted) since.
SubscriptionChanges = Callable[[int], tuple[int, list[SubscriptionRecord]]]


class HookReads(Protocol):
    """What a write hook may read inside the transaction it runs in."""

    def subscription_changes(self, since: int) -> tuple[int, list[SubscriptionRecord]]: ...

    def entities(self, entity_ids: list[str]) -> dict[str, Entity]:
        """The named entities that exist (as committed before this unit of work)."""


# Called inside the transaction of each unit of work with its changes; returns the notifications
# owed, (subscription id, body), which are committed with the changes.
WriteHook = Callable[[str, list[Change], HookReads], list[tuple[str, bytes]]]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def leader(self) -> Leader:
        """The lock that makes one process of several run the background duties."""

    async def tenant_exists(self, tenant: str) -> bool: ...

    async def write(
        self, tenant: str, entity_ids: list[str], work: UnitOfWork[T], records: Sequence[RecordKey] = ()
    ) -> tuple[T, list[Change]]:
        """Run a unit of work atomically: load the named entities (None where absent) and records
        (into ``WriteSet.records``), call ``work``, apply the writes it recorded (changes and record
        writes), commit. The named records cannot change under the unit: two units that both find
        one absent cannot both create it. Creates the tenant if needed. If ``work`` raises, nothing
        is written and the exception propagates. Returns what ``work`` returned and the committed
        changes, in order."""

    async def get(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    async def types(self, tenant: str, with_attributes: bool) -> list[TypeSummary]: ...

    async def attributes(self, tenant: str) -> list[AttributeSummary]: ...

    async def temporal_entity(self, tenant: str, entity_id: str, query: TemporalQuery) -> TemporalEntity | None:
        """The history of one entity (None when it has none), as ``query`` selects and aggregates it."""

    async def temporal_query(
        self, tenant: str, selectors: tuple[Selector, ...] | None, query: TemporalQuery, limit: int, offset: int, count: bool
    ) -> tuple[list[TemporalEntity], int | None]:
        """Histories of the entities ``selectors`` pick (by id, id pattern and type), a page of them."""

    # -- editing history (no change event: these correct the record, not the entity) -------------
    async def modify_instance(self, tenant: str, entity_id: str, attr: str, iid: int, instance: Instance, at: str) -> None:
        """Replace one attribute instance of the history; ResourceNotFound if there is none."""

    async def delete_instances(
        self, tenant: str, entity_id: str, attr: str, *, iid: int | None = None, dataset: str | None = None, every: bool = False
    ) -> None:
        """Remove one instance (``iid``), all (``every``) or one dataset's (None: the default); ResourceNotFound if none."""

    async def delete_history(self, tenant: str, entity_id: str) -> None: ...

    async def prune_history(self, tenant: str, type_iri: str | None, before: float, keep_types: list[str]) -> int:
        """Remove history observed before ``before`` of entities of ``type_iri`` (None: every type
        but ``keep_types``); how many instances were removed."""

    # -- subscriptions and the notifications they are owed -------------------------------------
    def add_write_hook(self, hook: WriteHook) -> None: ...

    async def tenants(self) -> list[str]: ...

    async def save_subscription(self, tenant: str, record: SubscriptionRecord, *, new: bool) -> None:
        """Create (``new``: AlreadyExists if it exists) or replace (ResourceNotFound if it does not)."""

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        """Delete it and every notification it is still owed; ResourceNotFound if there is none."""

    async def subscription(self, tenant: str, subscription_id: str) -> SubscriptionRecord | None: ...

    async def list_subscriptions(self, tenant: str, limit: int, offset: int) -> tuple[list[SubscriptionRecord], int]: ...

    async def subscription_changes(self, tenant: str, since: int) -> tuple[int, list[SubscriptionRecord]]: ...

    async def pending_notifications(self, tenant: str, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        """(sequence, subscription id, body) of notifications owed after sequence ``after``, oldest first."""

    async def notifications(self, tenant: str, subscription_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """One subscription's owed notifications after sequence ``after``, oldest first."""

    async def notifications_done(self, tenant: str, seqs: list[int], statuses: dict[str, dict[str, Any]]) -> None:
        """Forget delivered notifications and record subscriptions' delivery status, in one transaction."""

    # -- records (written by units of work; an unknown tenant has none) ------------------------------
    async def record(self, tenant: str, kind: str, key: str) -> dict[str, Any] | None: ...

    async def records(
        self, tenant: str, kind: str, *, limit: int | None = None, offset: int = 0, prefix: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(key, doc) of the records of ``kind`` (whose key starts with ``prefix``), in key order."""

    async def record_count(self, tenant: str, kind: str, prefix: str | None = None) -> int: ...

    async def records_changed(self, tenant: str, kind: str, since: int) -> tuple[int, list[tuple[str, dict[str, Any] | None]]]:
        """The tenant's current record version (over every kind) and (key, doc, None if deleted) of
        each record of ``kind`` put or deleted after version ``since``, oldest first."""

    async def trim_records(self, tenant: str, kind: str, keep: int) -> int:
        """Remove all but the ``keep`` most recently written records of ``kind`` (no tombstones: a
        capped list); how many were removed."""
