"""Service groups and devices as FIWARE IoT Agents provision them (``/iot/services``,
``/iot/devices``), validated into small typed records.

A service group says how the devices of one API key are mapped (entity type, attribute mappings,
static attributes, whether unknown devices are provisioned on their first message, how long a
device may stay silent). A device may refine all of it. ``DeviceProfile`` is the two merged: what
the gateway needs to turn one device's measures into NGSI-LD attributes.

Tenancy: ``fiware-service`` is the NGSI-LD tenant; ``fiware-servicepath`` becomes the entity's
``scope`` (the root path ``/`` gives no scope), as both name a part of one service's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..hub.errors import BadRequestData
from .expression import Expression, ExpressionError, compile_expression

SERVICE_NAME = re.compile(r"^[a-z0-9_]{1,50}$")
SERVICE_PATH = re.compile(r"^/([A-Za-z0-9_]{1,50}(/[A-Za-z0-9_]{1,50}){0,9})?$")
DEVICE_ID = re.compile(r"^[^\s/#+&?=<>\"'\\]{1,256}$")
API_KEY = re.compile(r"^[^\s/#+&?=<>\"'\\]{1,128}$")
OBJECT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TRANSPORTS = ("MQTT", "HTTP")
PROTOCOLS = {"PDI-IoTA-UltraLight": "ul", "IoTA-UL": "ul", "UL": "ul", "IoTA-JSON": "json", "PDI-IoTA-JSON": "json", "JSON": "json"}
DEFAULT_RESOURCES = {"/iot/d": "ul", "/iot/json": "json"}
LOCATION_NAMES = frozenset({"location"})


class ProvisioningError(BadRequestData):
    """A service group or device that cannot be provisioned; the message names the field."""


def tenant_of(service: str | None) -> str:
    """The NGSI-LD tenant of a ``fiware-service`` header (none or empty: the default tenant)."""
    service = (service or "").strip()
    if service and not SERVICE_NAME.match(service):
        raise ProvisioningError(
            f"fiware-service {service!r} is not valid: lower-case letters, digits and '_', up to 50 characters"
        )
    return service


def check_service_path(path: str | None) -> str:
    path = (path or "/").strip() or "/"
    if not SERVICE_PATH.match(path):
        raise ProvisioningError(f"fiware-servicepath {path!r} is not valid: '/' or '/a/b' with letters, digits and '_'")
    return path


def _text(body: dict[str, Any], name: str, where: str, *, required: bool = False, pattern: re.Pattern[str] | None = None) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ProvisioningError(f"{where}: '{name}' is required")
        return None
    if not isinstance(value, str):
        raise ProvisioningError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    if pattern is not None and not pattern.match(value):
        raise ProvisioningError(f"{where}: '{name}' {value!r} has characters that are not allowed")
    return value


def _number(body: dict[str, Any], name: str, where: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ProvisioningError(f"{where}: '{name}' must be a positive number of seconds, got {value!r}")
    return float(value)


def _flag(body: dict[str, Any], name: str, where: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ProvisioningError(f"{where}: '{name}' must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class AttributeMapping:
    """One measure of a device (``object_id``) and the attribute it becomes (``name``, ``type``)."""

    object_id: str
    name: str
    type: str = "Property"
    expression: str | None = None
    unit_code: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def compiled(self) -> Expression | None:
        return compile_expression(self.expression) if self.expression else None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"object_id": self.object_id, "name": self.name, "type": self.type}
        if self.expression:
            body["expression"] = self.expression
        if self.metadata:
            body["metadata"] = self.metadata
        return body


def _unit_code(metadata: dict[str, Any]) -> str | None:
    unit = metadata.get("unitCode")
    if isinstance(unit, dict):
        unit = unit.get("value")
    return unit if isinstance(unit, str) and unit else None


def _mappings(raw: Any, where: str) -> tuple[AttributeMapping, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProvisioningError(f"{where}: 'attributes' must be a list")
    result: list[AttributeMapping] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        here = f"{where}.attributes[{index}]"
        if not isinstance(item, dict):
            raise ProvisioningError(f"{here}: must be an object with object_id, name and type")
        name = _text(item, "name", here, required=True)
        object_id = _text(item, "object_id", here, pattern=OBJECT_ID) or name
        assert name is not None and object_id is not None
        if object_id in seen:
            raise ProvisioningError(f"{here}: object_id {object_id!r} is mapped twice")
        seen.add(object_id)
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ProvisioningError(f"{here}: 'metadata' must be an object")
        expression = _text(item, "expression", here)
        if expression is not None:
            try:
                compile_expression(expression)
            except ExpressionError as exc:
                raise ProvisioningError(f"{here}.expression: {exc}") from None
        result.append(
            AttributeMapping(object_id, name, _text(item, "type", here) or "Property", expression, _unit_code(metadata), metadata)
        )
    return tuple(result)


def _static(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProvisioningError(f"{where}: 'static_attributes' must be a list")
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "value" not in item:
            raise ProvisioningError(f"{where}.static_attributes[{index}]: needs 'name', 'type' and 'value'")
    return tuple(raw)


def _commands(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProvisioningError(f"{where}: 'commands' must be a list")
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not OBJECT_ID.match(item["name"]):
            raise ProvisioningError(f"{where}.commands[{index}]: needs a 'name' of letters, digits, '_', '-', '.' or ':'")
    return tuple(raw)


@dataclass(frozen=True, slots=True)
class ServiceGroup:
    apikey: str
    resource: str
    entity_type: str
    service_path: str = "/"
    attributes: tuple[AttributeMapping, ...] = ()
    static_attributes: tuple[dict[str, Any], ...] = ()
    commands: tuple[dict[str, Any], ...] = ()
    autoprovision: bool = True
    explicit_attrs: bool = False
    timeout: float | None = None
    timestamp: bool = True
    description: str | None = None

    @property
    def key(self) -> str:
        return f"{self.resource}|{self.apikey}"

    @classmethod
    def parse(cls, body: Any, service_path: str, where: str = "service") -> ServiceGroup:
        if not isinstance(body, dict):
            raise ProvisioningError(f"{where}: must be a JSON object")
        resource = _text(body, "resource", where, required=True)
        assert resource is not None
        if not resource.startswith("/"):
            raise ProvisioningError(f"{where}: 'resource' must be a path such as /iot/d or /iot/json")
        return cls(
            apikey=_text(body, "apikey", where, required=True, pattern=API_KEY),  # type: ignore[arg-type]
            resource=resource,
            entity_type=_text(body, "entity_type", where, required=True),  # type: ignore[arg-type]
            service_path=check_service_path(body.get("subservice") or service_path),
            attributes=_mappings(body.get("attributes"), where),
            static_attributes=_static(body.get("static_attributes"), where),
            commands=_commands(body.get("commands"), where),
            autoprovision=_flag(body, "autoprovision", where) is not False,
            explicit_attrs=bool(_flag(body, "explicitAttrs", where)),
            timeout=_number(body, "timeout", where),
            timestamp=_flag(body, "timestamp", where) is not False,
            description=_text(body, "description", where),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apikey": self.apikey,
            "resource": self.resource,
            "entity_type": self.entity_type,
            "subservice": self.service_path,
            "attributes": [a.to_json() for a in self.attributes],
            "static_attributes": list(self.static_attributes),
            "commands": list(self.commands),
            "autoprovision": self.autoprovision,
            "explicitAttrs": self.explicit_attrs,
            "timestamp": self.timestamp,
        }
        if self.timeout is not None:
            body["timeout"] = self.timeout
        if self.description:
            body["description"] = self.description
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ServiceGroup:
        return cls.parse(body, body.get("subservice", "/"))

    def updated(self, changes: Any) -> ServiceGroup:
        if not isinstance(changes, dict):
            raise ProvisioningError("service update: must be a JSON object")
        for name in ("apikey", "resource"):
            if name in changes and changes[name] != getattr(self, name):
                raise ProvisioningError(f"service update: '{name}' identifies the group and cannot be changed")
        return ServiceGroup.parse({**self.to_json(), **changes}, self.service_path)


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    entity_name: str
    entity_type: str
    apikey: str | None = None
    service_path: str = "/"
    protocol: str | None = None
    transport: str = "MQTT"
    endpoint: str | None = None
    attributes: tuple[AttributeMapping, ...] = ()
    static_attributes: tuple[dict[str, Any], ...] = ()
    commands: tuple[dict[str, Any], ...] = ()
    explicit_attrs: bool | None = None
    timeout: float | None = None
    timestamp: bool | None = None

    @classmethod
    def parse(cls, body: Any, service_path: str, group: ServiceGroup | None = None, where: str = "device") -> Device:
        if not isinstance(body, dict):
            raise ProvisioningError(f"{where}: must be a JSON object")
        device_id = _text(body, "device_id", where, required=True, pattern=DEVICE_ID)
        entity_type = _text(body, "entity_type", where) or (group.entity_type if group else None)
        if entity_type is None:
            raise ProvisioningError(f"{where}: 'entity_type' is required when no service group gives one")
        protocol = _text(body, "protocol", where)
        if protocol is not None and protocol not in PROTOCOLS:
            raise ProvisioningError(f"{where}: 'protocol' must be one of {', '.join(sorted(PROTOCOLS))}, got {protocol!r}")
        transport = (_text(body, "transport", where) or "MQTT").upper()
        if transport not in TRANSPORTS:
            raise ProvisioningError(f"{where}: 'transport' must be MQTT or HTTP, got {transport!r}")
        endpoint = _text(body, "endpoint", where)
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ProvisioningError(f"{where}: 'endpoint' must be an http(s) URL where the device takes commands")
        entity_name = _text(body, "entity_name", where) or f"urn:ngsi-ld:{entity_type}:{device_id}"
        if ":" not in entity_name:
            raise ProvisioningError(f"{where}: 'entity_name' {entity_name!r} must be a URI (urn:ngsi-ld:Type:id)")
        return cls(
            device_id=device_id,  # type: ignore[arg-type]
            entity_name=entity_name,
            entity_type=entity_type,
            apikey=_text(body, "apikey", where, pattern=API_KEY) or (group.apikey if group else None),
            service_path=check_service_path(body.get("service_path") or service_path),
            protocol=protocol,
            transport=transport,
            endpoint=endpoint,
            attributes=_mappings(body.get("attributes"), where),
            static_attributes=_static(body.get("static_attributes"), where),
            commands=_commands(body.get("commands"), where),
            explicit_attrs=_flag(body, "explicitAttrs", where),
            timeout=_number(body, "timeout", where),
            timestamp=_flag(body, "timestamp", where),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None:
                continue
            if spec.name == "attributes":
                value = [a.to_json() for a in value]
            elif isinstance(value, tuple):
                value = list(value)
            body[{"explicit_attrs": "explicitAttrs"}.get(spec.name, spec.name)] = value
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Device:
        return cls.parse(body, body.get("service_path", "/"))

    def updated(self, changes: Any) -> Device:
        if not isinstance(changes, dict):
            raise ProvisioningError("device update: must be a JSON object")
        if "device_id" in changes and changes["device_id"] != self.device_id:
            raise ProvisioningError("device update: 'device_id' identifies the device and cannot be changed")
        return Device.parse({**self.to_json(), **changes}, self.service_path)

    @property
    def payload_format(self) -> str | None:
        return PROTOCOLS.get(self.protocol) if self.protocol else None


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A device with its group's settings merged in: what mapping its measures needs."""

    tenant: str
    device: Device
    group: ServiceGroup | None
    by_object_id: dict[str, AttributeMapping]
    expressions: dict[str, Expression]
    static_attributes: tuple[dict[str, Any], ...]
    explicit_attrs: bool
    timeout: float | None
    timestamp: bool

    @classmethod
    def of(cls, tenant: str, device: Device, group: ServiceGroup | None) -> DeviceProfile:
        mappings: dict[str, AttributeMapping] = {}
        for mapping in (*(group.attributes if group else ()), *device.attributes):
            mappings[mapping.object_id] = mapping  # the device's own mapping wins
        expressions = {oid: m.compiled() for oid, m in mappings.items() if m.expression}
        static = {s["name"]: s for s in (*(group.static_attributes if group else ()), *device.static_attributes)}
        explicit = device.explicit_attrs if device.explicit_attrs is not None else bool(group and group.explicit_attrs)
        timestamp = device.timestamp if device.timestamp is not None else (group.timestamp if group else True)
        return cls(
            tenant=tenant,
            device=device,
            group=group,
            by_object_id=mappings,
            expressions={k: v for k, v in expressions.items() if v is not None},
            static_attributes=tuple(static.values()),
            explicit_attrs=explicit,
            timeout=device.timeout if device.timeout is not None else (group.timeout if group else None),
            timestamp=timestamp,
        )

    @property
    def commands(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in (*(self.group.commands if self.group else ()), *self.device.commands)}

