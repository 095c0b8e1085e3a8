"""NGSI-LD subscriptions: what a subscriber asked for, whether a change concerns it, and the
notification it is owed (ETSI GS CIM 009 clause 5.2.12, 5.8).

A ``Subscription`` is parsed once from its payload with the subscriber's @context; matching and
rendering are plain functions the store's write hook runs inside the change's transaction, so a
notification owed is recorded before the change is acknowledged.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from .changes import Change
from .context import TermMap, looks_like_iri
from .entity import DATA_MEMBER, NULL, Entity, Instance, check_attribute_name, check_entity_id
from .errors import BadRequestData
from .geo import GeoQuery
from .projection import MemberTree, Projection, parse_members
from .query import EntityQuery, Selector, parse_scope_query, parse_type_selection
from .query_language import parse_q
from .render import FORMATS, Renderer
from .temporal import deletion_instance
from .timestamps import is_datetime, parse_datetime

TRIGGERS = ("entityCreated", "entityUpdated", "entityDeleted", "attributeCreated", "attributeUpdated", "attributeDeleted")
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
ENDPOINT_SCHEMES = ("http", "https", "mqtt", "mqtts")
_MEMBERS = {
    "id", "type", "subscriptionName", "description", "entities", "watchedAttributes", "notificationTrigger", "timeInterval",
    "q", "geoQ", "scopeQ", "csf", "isActive", "notification", "expiresAt", "throttling", "lang", "@context", "status",
    "jsonldContext", "temporalQ", "localOnly", "createdAt", "modifiedAt", "datasetId",
}  # fmt: skip
_STATUS_MEMBERS = {"status", "timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess", "consecutiveErrors", "lastErrorReason"}
_NOTIFICATION_MEMBERS = {
    "attributes", "format", "sysAttrs", "showChanges", "endpoint", "status", "timesSent", "timesFailed",
    "lastNotification", "lastFailure", "lastSuccess", "consecutiveErrors", "lastErrorReason", "pick", "omit", "join", "joinLevel",
}  # fmt: skip


@dataclass
class Endpoint:
    uri: str
    accept: str = "application/json"
    receiver_info: list[dict[str, str]] = field(default_factory=list)
    notifier_info: list[dict[str, str]] = field(default_factory=list)

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme


@dataclass
class Subscription:
    id: str
    payload: dict[str, Any]  # what the subscriber sent (minus status), rendered back on GET
    context: Any  # the @context it was sent with: names in the payload use it
    terms: TermMap
    filter: EntityQuery  # which entities it concerns: selectors, q, geoQ, scopeQ
    watched: frozenset[str] | None
    triggers: frozenset[str]
    attributes: frozenset[str] | None
    format: str
    sys_attrs: bool
    show_changes: bool
    endpoint: Endpoint
    active: bool = True
    expires_at: float | None = None
    throttling: float = 0.0
    time_interval: float | None = None
    lang: str | None = None
    datasets: frozenset[str | None] | None = None  # only instances of these datasetIds (None: the default one)
    pick: MemberTree | None = None
    omit: MemberTree | None = None
    join: str = "@none"  # linked entities in notifications: inline, flat or @none
    join_level: int = 1
    jsonld_context: str | None = None  # compact notifications with this @context instead of ``context``
    notify_terms: TermMap | None = None  # jsonldContext resolved

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active" if self.active else "paused"

    @property
    def notification_context(self) -> Any:
        """The @context notifications are compacted with (and sent with)."""
        return self.jsonld_context if self.jsonld_context is not None else self.context

    def entity_ids(self) -> set[str] | None:
        """The entity ids this subscription is limited to (None: not limited to named ids)."""
        if self.filter.selectors is None:
            return None
        ids: set[str] = set()
        for selector in self.filter.selectors:
            if selector.ids is None:
                return None
            ids.update(selector.ids)
        return ids

    def type_keys(self) -> set[str] | None:
        """The entity types this subscription can concern (None: any), for indexing."""
        if self.filter.selectors is None:
            return None
        keys: set[str] = set()
        for selector in self.filter.selectors:
            if selector.types is None:
                return None
            for wanted in selector.types:
                keys |= wanted
        return keys

    # -- does a change concern it? --------------------------------------------------------------
    def reason(self, change: Change, now: float) -> str | None:
        """The trigger a change fires for this subscription, or None."""
        if self.time_interval is not None or self.status(now) != "active":
            return None
        reason = self._trigger(change)
        if reason is None or not self.filter.matches(entity_of(change)):
            return None
        return reason

    def _trigger(self, change: Change) -> str | None:
        triggers = self.triggers
        if change.before is None:
            if "entityCreated" in triggers:
                return "entityCreated"
            if "attributeCreated" in triggers and self._watched_in(change.after["attrs"]):  # type: ignore[index]
                return "attributeCreated"
            return None
        if change.after is None:
            if "entityDeleted" in triggers:
                return "entityDeleted"
            if "attributeDeleted" in triggers and self._watched_in(change.before["attrs"]):
                return "attributeDeleted"
            return None
        before, after = change.before["attrs"], change.after["attrs"]
        names = before.keys() | after.keys()
        if self.watched is not None:
            names &= self.watched
        created = any(n not in before for n in names)
        deleted = any(_datasets(before.get(n)) - _datasets(after.get(n)) for n in names)
        updated = any(n in before and n in after and _changed_kept(before[n], after[n]) for n in names)
        if "attributeCreated" in triggers and created:
            return "attributeCreated"
        if "attributeDeleted" in triggers and deleted:
            return "attributeDeleted"
        if "attributeUpdated" in triggers and updated:
            return "attributeUpdated"
        if "entityUpdated" in triggers and (created or updated or deleted):
            return "entityUpdated"
        return None

    def _watched_in(self, attrs: dict[str, Any]) -> bool:
        return self.watched is None or bool(self.watched & attrs.keys())

    # -- the notification ----------------------------------------------------------------------
    def renderer(self) -> Renderer:
        projection = Projection(pick=self.pick, omit=self.omit, datasets=self.datasets)
        return Renderer(self.notify_terms or self.terms, fmt=self.format, sys_attrs=self.sys_attrs, lang=self.lang, projection=projection)

    def notification(self, changes: list[tuple[Change, str]], fetch: Callable[[list[str]], dict[str, Entity]] | None = None) -> dict[str, Any]:
        """The Notification body for changes this subscription matched (in order); ``fetch`` finds
        linked entities for ``join``. ``notifiedAt`` is added when it is sent."""
        renderer = self.renderer()
        rendered = [self.render_entity(renderer, change, reason) for change, reason in changes]
        roots = [self._picked(change.after) for change, _ in changes if change.after is not None]
        if self.join != "@none" and fetch is not None and len(roots) == len(rendered):
            rendered = _run_sync(renderer.joined(roots, _async(fetch), join=self.join, level=self.join_level, rendered=rendered))
        body = notification_body(self.id, rendered)
        if changes:
            body["triggerReason"] = changes[-1][1]
        return body

    def periodic_notification(self, entities: list[Entity]) -> dict[str, Any]:
        """The Notification of a ``timeInterval`` subscription: the entities it selects now."""
        renderer = self.renderer()
        return notification_body(self.id, [renderer.entity(self._picked(entity)) for entity in entities])

    def _picked(self, entity: Entity) -> Entity:
        if self.attributes is None:
            return entity
        return dict(entity, attrs={k: v for k, v in entity["attrs"].items() if k in self.attributes})  # type: ignore[return-value]

    def render_entity(self, renderer: Renderer, change: Change, reason: str = "") -> dict[str, Any]:
        """One entity of a notification: its state after the change, with the attributes (or
        datasets) the change deleted shown as NGSI-LD null, and with ``showChanges`` the previous values."""
        before, after = change.before, change.after
        if after is None:
            assert before is not None
            out: dict[str, Any] = {"id": before["id"], "type": renderer.compact_types(before["type"])}
            if self.sys_attrs:
                out.update(createdAt=before["createdAt"], modifiedAt=before["modifiedAt"])
            out["deletedAt"] = change.at
            if reason == "attributeDeleted" or self.show_changes:
                names = before["attrs"].keys() if self.watched is None else before["attrs"].keys() & self.watched
                ghost = dict(before, attrs={n: [_deleted(_first(before["attrs"][n]), change.at, self.sys_attrs, whole_entity=True)] for n in names})
                out.update({k: v for k, v in renderer.entity(self._picked(ghost)).items() if k not in ("id", "type", "createdAt", "modifiedAt")})
                if self.show_changes:
                    self._show_previous(renderer, out, before["attrs"], ghost["attrs"])
            return out
        entity = after
        if before is not None:
            attrs = dict(after["attrs"])
            for name, instances in before["attrs"].items():
                if name not in attrs:  # the whole attribute went: one null stands for it
                    attrs[name] = [_deleted(_first(instances), change.at, self.sys_attrs)]
                    continue
                gone = [i for i in instances if i.get("datasetId") not in _datasets(attrs[name])]
                if gone:
                    attrs[name] = [*attrs[name], *(_deleted(i, change.at, self.sys_attrs) for i in gone)]
            entity = dict(after, attrs=attrs)
        entity = self._picked(entity)
        out = renderer.entity(entity)
        if self.show_changes and before is not None:
            self._show_previous(renderer, out, before["attrs"], entity["attrs"])
        return out

    def _show_previous(self, renderer: Renderer, out: dict[str, Any], before: dict[str, Any], now: dict[str, Any]) -> None:
        for iri, instances in now.items():
            previous = before.get(iri)
            name = renderer.terms.compact(iri)
            target = out.get(name)
            if not previous or _values(previous) == _values(instances) or not isinstance(target, dict):
                continue
            old = previous[0]
            member = DATA_MEMBER.get(old.get("type", "Property"), "value")
            if member in old:
                target["previous" + member[0].upper() + member[1:]] = renderer.key_value(old) if member == "vocab" else old[member]

    def render(self, status: dict[str, Any], terms: TermMap | None = None) -> dict[str, Any]:
        """The subscription as GET /subscriptions shows it: what was sent, names compacted with the
        reader's @context (``terms``), and the live status fields."""
        body = {k: v for k, v in self.payload.items() if k != "@context"}
        if terms is not None and terms is not self.terms:
            body = _recompacted(body, self.terms, terms)
        body["id"] = self.id
        body["type"] = "Subscription"
        body.setdefault("notificationTrigger", list(DEFAULT_TRIGGERS))
        body["status"] = self.status()
        notification = dict(body.get("notification", {}))
        notification.update({k: v for k, v in status.items() if v is not None})
        body["notification"] = notification
        return body


def _recompacted(body: dict[str, Any], source: TermMap, target: TermMap) -> dict[str, Any]:
    def names(values: Any) -> Any:
        return [target.compact(source.expand(v)) for v in values] if isinstance(values, list) else values

    body = dict(body)
    if isinstance(body.get("entities"), list):
        body["entities"] = [
            {**e, "type": target.compact(source.expand(e["type"]))} if isinstance(e, dict) and isinstance(e.get("type"), str) and not
            any(c in e["type"] for c in ",;|()") else e for e in body["entities"]
        ]  # fmt: skip
    if "watchedAttributes" in body:
        body["watchedAttributes"] = names(body["watchedAttributes"])
    if isinstance(body.get("notification"), dict) and "attributes" in body["notification"]:
        body["notification"] = {**body["notification"], "attributes": names(body["notification"]["attributes"])}
    return body


def _first(instances: list[Instance]) -> Instance:
    """The default instance of an attribute (the first when all have a datasetId), without its datasetId."""
    chosen = next((i for i in instances if "datasetId" not in i), instances[0])
    return {k: v for k, v in chosen.items() if k != "datasetId"}


def _datasets(instances: list[Instance] | None) -> set[str | None]:
    return {i.get("datasetId") for i in instances or ()}


def _changed_kept(before: list[Instance], after: list[Instance]) -> bool:
    """Whether an attribute that stayed changed: an instance's value, or a dataset added (a
    dataset only going away is a deletion, not an update)."""
    previous = {i.get("datasetId"): i for i in before}
    for instance in after:
        old = previous.get(instance.get("datasetId"))
        if old is None or _values([old]) != _values([instance]):
            return True
    return False


def _deleted(instance: Instance, at: str, sys_attrs: bool, *, whole_entity: bool = False) -> Instance:
    """How a notification shows a deleted attribute instance: NGSI-LD null, with (for sysAttrs)
    the instance's system times and deletedAt."""
    deleted = {k: v for k, v in deletion_instance(instance, at).items() if k != "deletedAt"}
    if whole_entity and deleted.get("type") == "LanguageProperty":
        deleted["languageMap"] = NULL  # the whole entity went: no language is left to map
    if sys_attrs:
        deleted.update({k: instance[k] for k in ("createdAt", "modifiedAt") if k in instance}, deletedAt=at)
    return deleted


def _async(fetch: Callable[[list[str]], dict[str, Entity]]) -> Callable[[list[str]], Any]:
    async def fetched(ids: list[str]) -> dict[str, Entity]:
        return fetch(ids)

    return fetched


def _run_sync(coroutine: Any) -> Any:
    """Run a coroutine that never waits (its awaits all complete at once) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine waited; it cannot run synchronously")


_NOTIFICATION_IDS = itertools.count(1)
_NOTIFICATION_PREFIX = f"urn:ngsi-ld:Notification:{uuid.uuid4().hex}-"  # unique to this process: ids cost a counter step


def notification_body(subscription_id: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    notification_id = f"{_NOTIFICATION_PREFIX}{next(_NOTIFICATION_IDS)}"
    return {"id": notification_id, "type": "Notification", "subscriptionId": subscription_id, "data": data}


def _values(instances: list[dict[str, Any]]) -> list[Any]:
    return [{k: v for k, v in i.items() if k not in ("createdAt", "modifiedAt", "observedAt")} for i in instances]


def parse_subscription(
    body: Any,
    terms: TermMap,
    context: Any,
    *,
    subscription_id: str | None = None,
    existing: Subscription | None = None,
    notify_terms: TermMap | None = None,
) -> Subscription:
    """Validate a subscription payload (or, with ``existing``, a fragment merged over it).
    ``notify_terms``: its jsonldContext, resolved."""
    if not isinstance(body, dict):
        raise BadRequestData("a subscription must be a JSON object")
    changed = set(body) if subscription_id is None or existing is not None else set()  # members the client sends now
    if existing is not None:
        merged = dict(existing.payload)
        for key, value in body.items():
            if key == "notification" and isinstance(value, dict) and isinstance(merged.get("notification"), dict):
                merged["notification"] = {**merged["notification"], **value}
            elif key != "@context":
                merged[key] = value
        body, subscription_id = merged, existing.id
    unknown = set(body) - _MEMBERS
    if unknown:
        raise BadRequestData(f"unknown subscription members: {', '.join(sorted(unknown))}")
    if body.get("type", "Subscription") != "Subscription":
        raise BadRequestData('a subscription has "type": "Subscription"')
    sid = subscription_id or (body["id"] if "id" in body else f"urn:ngsi-ld:Subscription:{uuid.uuid4()}")
    check_entity_id(sid, "subscription id")
    selectors = _selectors(body.get("entities"), terms)
    watched = _names(body.get("watchedAttributes"), "watchedAttributes", terms)
    time_interval = _positive(body.get("timeInterval"), "timeInterval")
    if time_interval is not None and watched is not None:
        raise BadRequestData("a subscription has either timeInterval (periodic) or watchedAttributes, not both")
    if selectors is None and watched is None and body.get("q") is None and body.get("geoQ") is None and time_interval is None:
        raise BadRequestData("a subscription needs entities, watchedAttributes, q or geoQ")
    triggers = body.get("notificationTrigger", list(DEFAULT_TRIGGERS))
    if not isinstance(triggers, list) or not triggers or any(t not in TRIGGERS for t in triggers):
        raise BadRequestData(f"notificationTrigger must be a non-empty list of {', '.join(TRIGGERS)}")
    q = None
    if body.get("q") is not None:
        if not isinstance(body["q"], str):
            raise BadRequestData("q must be a string")
        q = parse_q(unquote(body["q"]), terms)  # as in a URL: some clients send it percent-encoded
    scope = None
    if body.get("scopeQ") is not None:
        if not isinstance(body["scopeQ"], str):
            raise BadRequestData("scopeQ must be a string")
        scope = parse_scope_query(body["scopeQ"])
    entity_filter = EntityQuery(selectors=selectors, q=q, geo=_geo(body.get("geoQ"), terms), scope=scope)
    notification = body.get("notification")
    if not isinstance(notification, dict):
        raise BadRequestData("a subscription needs a notification object with an endpoint")
    unknown = set(notification) - _NOTIFICATION_MEMBERS
    if unknown:
        raise BadRequestData(f"unknown notification members: {', '.join(sorted(unknown))}")
    attributes = _names(notification.get("attributes"), "notification.attributes", terms)
    fmt = notification.get("format", "normalized")
    fmt = "keyValues" if fmt == "simplified" else fmt
    if fmt not in FORMATS:
        raise BadRequestData(f"notification.format must be normalized, concise or keyValues, got {fmt!r}")
    if notification.get("showChanges") and fmt != "normalized":
        raise BadRequestData("showChanges needs the normalized format: the other formats have no place for previous values")
    pick, omit = _members(notification.get("pick"), "pick"), _members(notification.get("omit"), "omit")
    if pick is not None and omit is not None and pick.keys() & omit.keys():
        raise BadRequestData("notification.pick and notification.omit name the same member")
    if attributes is not None and (pick is not None or omit is not None):
        raise BadRequestData("notification.attributes cannot be combined with pick or omit")
    join = notification.get("join", "@none")
    if join not in ("inline", "flat", "@none"):
        raise BadRequestData(f"notification.join must be inline, flat or @none, got {join!r}")
    join_level = notification.get("joinLevel", 1)
    if isinstance(join_level, bool) or not isinstance(join_level, int) or not 1 <= join_level <= 8:
        raise BadRequestData("notification.joinLevel must be an integer from 1 to 8")
    datasets = None
    if body.get("datasetId") is not None:
        ids = body["datasetId"] if isinstance(body["datasetId"], list) else [body["datasetId"]]
        if not ids:
            raise BadRequestData("datasetId must name at least one dataset")
        datasets = frozenset(None if i == "@none" else check_entity_id(i, "datasetId") for i in ids)
    jsonld_context = body.get("jsonldContext")
    if jsonld_context is not None and (not isinstance(jsonld_context, str) or not looks_like_iri(jsonld_context)):
        raise BadRequestData(f"jsonldContext must be the URL of an @context, got {jsonld_context!r}")
    endpoint = _endpoint(notification.get("endpoint"))
    expires_at = body.get("expiresAt")
    if expires_at is not None and not is_datetime(expires_at):
        raise BadRequestData(f"expiresAt must be an ISO 8601 DateTime, got {expires_at!r}")
    if expires_at is not None and "expiresAt" in changed and parse_datetime(expires_at).timestamp() <= time.time():
        raise BadRequestData(f"expiresAt {expires_at} is in the past")
    active = body.get("isActive", True)
    if not isinstance(active, bool):
        raise BadRequestData("isActive must be true or false")
    payload = {k: v for k, v in body.items() if k not in ("status", "createdAt", "modifiedAt")}
    payload["notification"] = {k: v for k, v in notification.items() if k not in _STATUS_MEMBERS}
    return Subscription(
        id=sid,
        payload=payload,
        context=context,
        terms=terms,
        filter=entity_filter,
        watched=watched,
        triggers=frozenset(triggers),
        attributes=attributes,
        format=fmt,
        sys_attrs=bool(notification.get("sysAttrs", False)),
        show_changes=bool(notification.get("showChanges", False)),
        endpoint=endpoint,
        active=active,
        expires_at=parse_datetime(expires_at).timestamp() if expires_at else None,
        throttling=_positive(body.get("throttling"), "throttling") or 0.0,
        time_interval=time_interval,
        lang=body.get("lang") if isinstance(body.get("lang"), str) else None,
        datasets=datasets,
        pick=pick,
        omit=omit,
        join=join,
        join_level=join_level,
        jsonld_context=jsonld_context,
        notify_terms=notify_terms,
    )


def _members(value: Any, what: str) -> MemberTree | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str) or not value.strip():
        raise BadRequestData(f"notification.{what} must name at least one member")
    return parse_members(value, f"notification.{what}")


def _selectors(entities: Any, terms: TermMap) -> tuple[Selector, ...] | None:
    if entities is None:
        return None
    if not isinstance(entities, list) or not entities:
        raise BadRequestData("entities must be a non-empty array of entity selectors")
    selectors = []
    for item in entities:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise BadRequestData("each entity selector needs a type")
        ids = item.get("id")
        if ids is not None:
            ids = tuple(check_entity_id(i) for i in (ids if isinstance(ids, list) else [ids]))
        pattern = item.get("idPattern")
        compiled = None
        if pattern is not None:
            try:
                compiled = re.compile(str(pattern))
            except re.error as exc:
                raise BadRequestData(f"idPattern is not a valid regular expression: {exc}") from None
        selectors.append(Selector(types=parse_type_selection(item["type"], terms), ids=ids, id_pattern=compiled))
    return tuple(selectors)


def _names(value: Any, what: str, terms: TermMap) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise BadRequestData(f"{what} must be a non-empty array of attribute names")
    return frozenset(terms.expand(check_attribute_name(name, f"{what} entry")) for name in value)


def _positive(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BadRequestData(f"{what} must be a positive number of seconds")
    return float(value)


def _geo(value: Any, terms: TermMap) -> GeoQuery | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequestData("geoQ must be an object")
    coordinates = value.get("coordinates")
    if isinstance(coordinates, str):
        try:
            coordinates = orjson.loads(coordinates)
        except orjson.JSONDecodeError:
            raise BadRequestData("geoQ.coordinates must be a JSON array") from None
    if not isinstance(value.get("georel"), str) or not isinstance(value.get("geometry"), str):
        raise BadRequestData("geoQ needs georel, geometry and coordinates")
    name = value.get("geoproperty", "location")
    return GeoQuery(value["georel"], {"type": value["geometry"], "coordinates": coordinates}, terms.expand(check_attribute_name(name, "geoproperty")))


def _endpoint(value: Any) -> Endpoint:
    if not isinstance(value, dict) or not isinstance(value.get("uri"), str):
        raise BadRequestData("notification.endpoint needs a uri")
    uri = value["uri"]
    parts = urlsplit(uri)
    if parts.scheme not in ENDPOINT_SCHEMES or not parts.netloc:
        raise BadRequestData(f"notification.endpoint.uri must be an http(s):// or mqtt(s):// URL, got {uri!r}")
    accept = value.get("accept", "application/json")
    if accept not in ("application/json", "application/ld+json"):
        raise BadRequestData(f"notification.endpoint.accept must be application/json or application/ld+json, got {accept!r}")
    info = []
    for key in ("receiverInfo", "notifierInfo"):
        items = value.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("key"), str) and isinstance(i.get("value"), str) for i in items):
            raise BadRequestData(f"notification.endpoint.{key} must be a list of {{key, value}} strings")
        info.append(items)
    return Endpoint(uri, accept, info[0], info[1])


def entity_of(change: Change) -> Entity:
    entity = change.after if change.after is not None else change.before
    assert entity is not None
    return entity
