"""NGSI-LD subscriptions: what a subscriber asked for, whether a change concerns it, and the
notification it is owed (ETSI GS CIM 009 clause 5.2.12, 5.8).

A ``Subscription`` is parsed once from its payload with the subscriber's @context; matching and
rendering are plain functions the store's write hook runs inside the change's transaction, so a
notification owed is recorded before the change is acknowledged.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from .changes import Change
from .context import TermMap
from .entity import Entity, check_attribute_name, check_entity_id
from .errors import BadRequestData
from .geo import GeoQuery
from .query import EntityQuery, Selector, parse_scope_query, parse_type_selection
from .query_language import parse_q
from .render import FORMATS, Renderer
from .timestamps import is_datetime, parse_datetime

TRIGGERS = ("entityCreated", "entityUpdated", "entityDeleted", "attributeCreated", "attributeUpdated", "attributeDeleted")
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
ENDPOINT_SCHEMES = ("http", "https", "mqtt", "mqtts")
_MEMBERS = {
    "id", "type", "subscriptionName", "description", "entities", "watchedAttributes", "notificationTrigger", "timeInterval",
    "q", "geoQ", "scopeQ", "csf", "isActive", "notification", "expiresAt", "throttling", "lang", "@context", "status",
    "jsonldContext", "temporalQ", "localOnly", "createdAt", "modifiedAt",
}  # fmt: skip
_NOTIFICATION_MEMBERS = {
    "attributes", "format", "sysAttrs", "showChanges", "endpoint", "status", "timesSent", "timesFailed",
    "lastNotification", "lastFailure", "lastSuccess", "consecutiveErrors", "lastErrorReason",
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
    context: Any  # the @context it was sent with: names in notifications are compacted with it
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

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active" if self.active else "paused"

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
        deleted = any(n not in after for n in names)
        updated = any(n in before and n in after and _values(before[n]) != _values(after[n]) for n in names)
        if "attributeCreated" in triggers and created:
            return "attributeCreated"
        if "attributeUpdated" in triggers and updated:
            return "attributeUpdated"
        if "attributeDeleted" in triggers and deleted:
            return "attributeDeleted"
        if "entityUpdated" in triggers and (created or updated or deleted):
            return "entityUpdated"
        return None

    def _watched_in(self, attrs: dict[str, Any]) -> bool:
        return self.watched is None or bool(self.watched & attrs.keys())

    # -- the notification ----------------------------------------------------------------------
    def renderer(self) -> Renderer:
        return Renderer(self.terms, fmt=self.format, sys_attrs=self.sys_attrs, lang=self.lang)

    def notification(self, changes: list[tuple[Change, str]]) -> dict[str, Any]:
        """The Notification body for changes this subscription matched (in order). ``notifiedAt``
        is added when it is sent."""
        renderer = self.renderer()
        body = notification_body(self.id, [self.render_entity(renderer, change) for change, _ in changes])
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

    def render_entity(self, renderer: Renderer, change: Change) -> dict[str, Any]:
        if change.after is None:
            assert change.before is not None
            return {"id": change.before["id"], "type": renderer.compact_types(change.before["type"]), "deletedAt": change.at}
        entity = self._picked(change.after)
        out = renderer.entity(entity)
        if self.show_changes and change.before is not None and self.format == "normalized":
            for iri, instances in entity["attrs"].items():
                previous = change.before["attrs"].get(iri)
                name = self.terms.compact(iri)
                if previous and _values(previous) != _values(instances) and isinstance(out.get(name), dict):
                    old = previous[0]
                    if "value" in old:
                        out[name]["previousValue"] = old["value"]
                    elif "object" in old:
                        out[name]["previousObject"] = old["object"]
        return out

    def render(self, status: dict[str, Any]) -> dict[str, Any]:
        """The subscription as GET /subscriptions shows it: the payload with live status fields."""
        body = {k: v for k, v in self.payload.items() if k != "@context"}
        body["id"] = self.id
        body["type"] = "Subscription"
        body["isActive"] = self.active
        body["status"] = self.status()
        notification = dict(body.get("notification", {}))
        notification.update({k: v for k, v in status.items() if v is not None})
        body["notification"] = notification
        return body


def notification_body(subscription_id: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}", "type": "Notification", "subscriptionId": subscription_id, "data": data}


def _values(instances: list[dict[str, Any]]) -> list[Any]:
    return [{k: v for k, v in i.items() if k not in ("createdAt", "modifiedAt", "observedAt")} for i in instances]


def parse_subscription(
    body: Any, terms: TermMap, context: Any, *, subscription_id: str | None = None, existing: Subscription | None = None
) -> Subscription:
    """Validate a subscription payload (or, with ``existing``, a fragment merged over it)."""
    if not isinstance(body, dict):
        raise BadRequestData("a subscription must be a JSON object")
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
    sid = subscription_id or body.get("id") or f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
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
        q = parse_q(body["q"], terms)
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
    endpoint = _endpoint(notification.get("endpoint"))
    expires_at = body.get("expiresAt")
    if expires_at is not None and not is_datetime(expires_at):
        raise BadRequestData(f"expiresAt must be an ISO 8601 DateTime, got {expires_at!r}")
    active = body.get("isActive", True)
    if not isinstance(active, bool):
        raise BadRequestData("isActive must be true or false")
    payload = {k: v for k, v in body.items() if k not in ("status", "createdAt", "modifiedAt")}
    payload["notification"] = {k: v for k, v in notification.items() if k in ("attributes", "format", "sysAttrs", "showChanges", "endpoint")}
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
    )


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
