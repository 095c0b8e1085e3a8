"""From a device's measures to NGSI-LD attribute instances.

Each measure is found by its ``object_id`` among the device's attribute mappings, converted to the
mapping's type (UltraLight sends text; ``Number`` makes it a number), passed through the mapping's
expression if it has one, and becomes an instance with ``observedAt`` (the payload's timestamp,
else the time the gateway received it) and ``unitCode``. A latitude and a longitude measure
together become the ``location`` GeoProperty. Measures without a mapping keep their name and value,
unless the device (or its group) has ``explicitAttrs``: then the whole reading is refused, so that
a reading is stored entirely or not at all.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from ..hub.context import TermMap
from ..hub.entity import Instance, check_numbers
from ..hub.errors import BadRequestData
from ..hub.geo import validate_geometry
from .expression import ExpressionError
from .payload import MeasureGroup, PayloadError, parse_timestamp
from .provisioning import AttributeMapping, DeviceProfile

NUMBER_TYPES = frozenset({"Number", "Float", "Integer", "Percentage", "number", "float", "integer"})
BOOLEAN_TYPES = frozenset({"Boolean", "boolean", "bool"})
TEXT_TYPES = frozenset({"Text", "String", "string", "text"})
DATE_TYPES = frozenset({"DateTime", "ISO8601", "Date"})
GEO_TYPES = frozenset({"geo:json", "GeoProperty", "geo:point"})
LATITUDE_NAMES = ("latitude", "lat")
LONGITUDE_NAMES = ("longitude", "lon", "lng")
_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})


def convert(value: Any, kind: str, where: str) -> Any:
    """``value`` as the mapping's type says; PayloadError when it is not one."""
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            raise PayloadError(f"{where}: {value!r} is not a number")
        if isinstance(value, int | float):
            number = value
        else:
            try:
                number = float(value) if not isinstance(value, str) or not value.lstrip("-").isdigit() else int(value)
            except (TypeError, ValueError):
                raise PayloadError(f"{where}: {value!r} is not a number") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise PayloadError(f"{where}: {value!r} is not a finite number")
        return int(number) if kind in ("Integer", "integer") else number
    if kind in BOOLEAN_TYPES:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise PayloadError(f"{where}: {value!r} is not a boolean (true/false, 1/0, on/off)")
    if kind in TEXT_TYPES:
        return value if isinstance(value, str) else orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    if kind in DATE_TYPES:
        return {"@type": "DateTime", "@value": parse_timestamp(str(value))}
    return value


def _geometry(value: Any, kind: str, where: str) -> dict[str, Any]:
    if kind == "geo:point" or isinstance(value, str) and "," in value and not value.lstrip().startswith("{"):
        try:
            lat_text, lon_text = str(value).split(",")
            return _point(float(lat_text), float(lon_text), where)
        except ValueError:
            raise PayloadError(f"{where}: {value!r} is not a 'latitude,longitude' point") from None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise PayloadError(f"{where}: {value!r} is not a GeoJSON geometry") from None
    try:
        validate_geometry(value, where)
    except BadRequestData as exc:
        raise PayloadError(exc.detail) from None
    return value


def _point(lat: float, lon: float, where: str) -> dict[str, Any]:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PayloadError(f"{where}: latitude {lat} and longitude {lon} are not on the Earth")
    return {"type": "Point", "coordinates": [lon, lat]}


class Mapper:
    """Turns readings into instances, for one @context (attribute names become IRIs with it)."""

    def __init__(self, terms: TermMap):
        self.terms = terms

    def instances(self, profile: DeviceProfile, group: MeasureGroup, received_at: str) -> dict[str, Instance]:
        """Attribute IRI -> instance for one reading; PayloadError when any measure is refused."""
        observed = parse_timestamp(group.timestamp) if group.timestamp and profile.timestamp else received_at
        mappings = profile.by_object_id
        typed: dict[str, tuple[AttributeMapping | None, Any]] = {}
        for object_id, raw in group.values.items():
            mapping = mappings.get(object_id)
            if mapping is None:
                if profile.explicit_attrs:
                    raise PayloadError(
                        f"measure {object_id!r} is not provisioned for device {profile.device.device_id} and its "
                        "group has explicitAttrs"
                    )
                typed[object_id] = (None, raw)
            elif mapping.type in GEO_TYPES:
                typed[object_id] = (mapping, _geometry(raw, mapping.type, f"measure {object_id!r}"))
            else:
                typed[object_id] = (mapping, convert(raw, mapping.type, f"measure {object_id!r}"))
        if profile.expressions:
            variables = self._variables(profile, typed)
            for object_id, expression in profile.expressions.items():
                if object_id not in typed:
                    continue
                try:
                    result = expression.evaluate(variables)
                except ExpressionError as exc:
                    raise PayloadError(f"measure {object_id!r}: its expression failed: {exc}") from None
                mapping = mappings[object_id]
                if result is None:
                    del typed[object_id]  # an expression over absent measures gives no attribute
                else:
                    typed[object_id] = (mapping, convert(result, mapping.type, f"measure {object_id!r} (after its expression)"))
        named: dict[str, tuple[AttributeMapping | None, Any]] = {}
        for object_id, (mapping, value) in typed.items():
            named[mapping.name if mapping else object_id] = (mapping, value)
        self._merge_location(named)
        result: dict[str, Instance] = {}
        for name, (mapping, value) in named.items():
            result[self.terms.expand(name)] = self._instance(name, mapping, value, observed)
        return result

    @staticmethod
    def _variables(profile: DeviceProfile, typed: dict[str, tuple[AttributeMapping | None, Any]]) -> dict[str, Any]:
        variables: dict[str, Any] = {s["name"]: s.get("value") for s in profile.static_attributes}
        variables.update({"id": profile.device.device_id, "type": profile.device.entity_type})
        for object_id, (mapping, value) in typed.items():
            variables[object_id] = value
            if mapping is not None:
                variables.setdefault(mapping.name, value)
        return variables

    @staticmethod
    def _merge_location(named: dict[str, tuple[AttributeMapping | None, Any]]) -> None:
        if named.keys().isdisjoint(LATITUDE_NAMES):
            return
        lat_name = next((n for n in LATITUDE_NAMES if n in named), None)
        lon_name = next((n for n in LONGITUDE_NAMES if n in named), None)
        if lat_name is None or lon_name is None or "location" in named:
            return
        try:
            lat, lon = float(named[lat_name][1]), float(named[lon_name][1])
        except (TypeError, ValueError):
            raise PayloadError(f"measures {lat_name!r} and {lon_name!r} must be numbers to make a location") from None
        del named[lat_name], named[lon_name]
        named["location"] = (AttributeMapping("location", "location", "geo:json"), _point(lat, lon, "location"))

    @staticmethod
    def _instance(name: str, mapping: AttributeMapping | None, value: Any, observed: str | None) -> Instance:
        kind = mapping.type if mapping else "Property"
        if kind in GEO_TYPES:
            instance: Instance = {"type": "GeoProperty", "value": value}
        elif kind == "Relationship":
            if not isinstance(value, str) or ":" not in value:
                raise PayloadError(f"measure for {name!r}: a Relationship needs an entity URI, got {value!r}")
            instance = {"type": "Relationship", "object": value}
        else:
            if value is None:
                raise PayloadError(f"measure for {name!r}: a value must not be null")
            try:
                check_numbers(value, f"measure for {name!r}")
            except BadRequestData as exc:
                raise PayloadError(exc.detail) from None
            instance = {"type": "Property", "value": value}
        if observed is not None:  # static attributes are not observations
            instance["observedAt"] = observed
        if mapping is not None and mapping.unit_code:
            instance["unitCode"] = mapping.unit_code
        return instance

    def static_instances(self, profile: DeviceProfile) -> dict[str, Instance]:
        """The device's static attributes as instances (written when its entity is made)."""
        result: dict[str, Instance] = {}
        for item in profile.static_attributes:
            kind = item.get("type") or "Property"
            mapping = AttributeMapping(item["name"], item["name"], kind, None, None)
            value = item["value"]
            if kind in GEO_TYPES:
                value = _geometry(value, kind, f"static attribute {item['name']!r}")
            elif kind not in ("Relationship",):
                value = convert(value, kind, f"static attribute {item['name']!r}")
            result[self.terms.expand(item["name"])] = self._instance(item["name"], mapping, value, None)
        return result
