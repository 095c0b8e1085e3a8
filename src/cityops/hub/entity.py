"""Entities as the hub keeps them, and the parsing of NGSI-LD payloads into that form.

The stored form is the NGSI-LD normalized form with every name expanded to its IRI::

    {"id": "urn:ngsi-ld:Camera:1",
     "type": ["https://smartdatamodels.org/dataModel.Device/Camera"],
     "createdAt": "...", "modifiedAt": "...",
     "attrs": {"https://uri.etsi.org/ngsi-ld/location": [{"type": "GeoProperty", "value": {...}}],
               "https://.../status": [{"type": "Property", "value": "on", "observedAt": "..."}]}}

``attrs`` maps an attribute IRI to its instances (more than one only with distinct ``datasetId``s).
Inside an instance, the NGSI-LD member names (``value``, ``object``, ``observedAt``...) stay short;
every other key is a sub-attribute, keyed by its IRI and holding one instance. Keys inside a
Property's JSON value are data and are not expanded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .context import NGSI_LD, TermMap, looks_like_iri
from .errors import BadRequestData
from .geo import GEOMETRY_TYPES, validate_geometry
from .timestamps import is_datetime

Entity = dict[str, Any]
Instance = dict[str, Any]

NULL = "urn:ngsi-ld:null"
ATTRIBUTE_TYPES = (
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "ListProperty",
    "ListRelationship",
    "VocabProperty",
    "JsonProperty",
)
_TYPE_NAMES = {name: name for name in ATTRIBUTE_TYPES}
_TYPE_NAMES.update({f"ngsi-ld:{name}": name for name in ATTRIBUTE_TYPES})
_TYPE_NAMES.update({f"{NGSI_LD}{name}": name for name in ATTRIBUTE_TYPES})

# The member that holds an attribute's data, per attribute type.
DATA_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
}
_INFER_FROM_MEMBER = {
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
}
METADATA_MEMBERS = frozenset({"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "objectType", "lang"})
SYSTEM_MEMBERS = frozenset({"createdAt", "modifiedAt", "deletedAt", "instanceId"})
RESERVED_MEMBERS = frozenset(
    {"type", "value", "object", "languageMap", "valueList", "objectList", "vocab", "json", "@context"}
    | METADATA_MEMBERS
    | SYSTEM_MEMBERS
    | {"previousValue", "previousObject", "previousLanguageMap", "previousValueList", "previousObjectList"}
    | {"previousVocab", "previousJson", "entity", "@id", "@type"}
)
_DATA_MEMBERS = frozenset({"value", "object", "languageMap", "valueList", "objectList", "vocab", "json"})
_IGNORED_MEMBERS = SYSTEM_MEMBERS | {"type", "@context"}
_COPIED_MEMBERS = RESERVED_MEMBERS - _IGNORED_MEMBERS
ENTITY_MEMBERS = frozenset({"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt", "@id", "@type"})
GEO_ATTRIBUTES = frozenset({NGSI_LD + "location", NGSI_LD + "observationSpace", NGSI_LD + "operationSpace"})
_BAD_NAME = re.compile(r'[<>"\'=;()\[\]\\`{}|^\s\x00-\x1f\x7f]')
_BAD_ID = re.compile(r'[<>"{}|\\^`\x00-\x20\x7f]')


_GOOD_NAMES: set[str] = set()
# Members of an entity that are not attributes: they cannot be used as attribute or type names.
MEMBER_NAMES = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context", "@id", "@type"})


def check_attribute_name(name: Any, what: str = "attribute name") -> str:
    check_name(name, what)
    if name in MEMBER_NAMES:
        raise BadRequestData(f"{what} {name!r} is an entity member, not an attribute")
    return name


def check_name(name: Any, what: str) -> str:
    """A name of an attribute or type must be a non-empty string without characters the query language reserves."""
    if name.__class__ is not str or not name:
        raise BadRequestData(f"{what} must be a non-empty string")
    if name in _GOOD_NAMES:
        return name
    if _BAD_NAME.search(name) or name[0] == "@":
        raise BadRequestData(f"{what} {name!r} contains a character that is not allowed in NGSI-LD names")
    if len(_GOOD_NAMES) < 50_000:
        _GOOD_NAMES.add(name)
    return name


def check_entity_id(value: Any, what: str = "entity id") -> str:
    if not isinstance(value, str) or not value:
        raise BadRequestData(f"{what} must be a non-empty string")
    if not looks_like_iri(value) or _BAD_ID.search(value):
        raise BadRequestData(f"{what} {value!r} is not a URI (e.g. urn:ngsi-ld:Camera:001)")
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_numbers(value: Any, where: str) -> None:
    """Integers must fit in 64 bits (what stores and query literals can hold); larger ones go as text."""
    kind = type(value)
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadRequestData(f"{where}: the integer {value} does not fit in 64 bits; send it as a string")
    elif kind is list:
        for item in value:
            check_numbers(item, where)
    elif kind is dict:
        for item in value.values():
            check_numbers(item, where)


def parse_types(value: Any, terms: TermMap) -> list[str]:
    """The entity type(s): a string or a non-empty list of strings, expanded."""
    names = value if isinstance(value, list) else [value]
    if not names:
        raise BadRequestData("entity type must not be an empty list")
    expanded: list[str] = []
    for name in names:
        check_attribute_name(name, "entity type")
        iri = terms.expand(name)
        if iri not in expanded:
            expanded.append(iri)
    return expanded


def _check_metadata(instance: dict[str, Any], where: str) -> None:
    """observedAt, unitCode, datasetId and lang of an attribute instance, where present."""
    observed = instance.get("observedAt")
    if observed is not None and not (is_datetime(observed) and observed.endswith("Z")):
        raise BadRequestData(f"{where}: observedAt must be an ISO 8601 DateTime in UTC ending in 'Z', got {observed!r}")
    if "unitCode" in instance and not isinstance(instance["unitCode"], str):
        raise BadRequestData(f"{where}: unitCode must be a string (a UN/CEFACT code such as CEL)")
    if "datasetId" in instance:
        check_entity_id(instance["datasetId"], f"{where}: datasetId")
    if "lang" in instance and not isinstance(instance["lang"], str):
        raise BadRequestData(f"{where}: lang must be a language tag")


class AttributeParser:
    """Parses attributes of a payload into stored instances, expanding names with one term map.

    ``allow_null`` is for merge operations, where ``urn:ngsi-ld:null`` (or JSON null) marks
    something to delete; the marker is kept as the data member's value for the merge to act on.
    With ``now``, every instance (sub-attributes too) gets it as createdAt and modifiedAt.
    """

    def __init__(self, terms: TermMap, *, allow_null: bool = False, now: str | None = None, temporal: bool = False):
        self.terms = terms
        self.allow_null = allow_null
        self.now = now
        self.temporal = temporal  # a temporal payload: many instances of one dataset, at different times

    def attribute(self, iri: str, raw: Any, where: str) -> list[Instance]:
        """All instances of one attribute (a list of instances means a multi-attribute)."""
        if isinstance(raw, list) and raw and all(self._is_instance_object(item) for item in raw):
            instances = [self.instance(iri, item, where) for item in raw]
            if self.temporal:
                return instances
            seen: set[Any] = set()
            for instance in instances:
                dataset = instance.get("datasetId")
                if dataset in seen:
                    label = f"datasetId {dataset}" if dataset else "the default instance (no datasetId)"
                    raise BadRequestData(f"{where}: {label} appears more than once")
                seen.add(dataset)
            return instances
        return [self.instance(iri, raw, where)]

    @staticmethod
    def _is_instance_object(item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        kind = item.get("type")
        if isinstance(kind, str) and kind in _TYPE_NAMES:
            return True
        return "datasetId" in item or any(member in item for member in ("value", "object", "languageMap", "valueList", "objectList", "vocab", "json"))

    def instance(self, iri: str, raw: Any, where: str) -> Instance:
        if raw is None:
            raise BadRequestData(f"{where}: an attribute value must not be null (use urn:ngsi-ld:null to delete)")
        if raw.__class__ is str and raw == NULL:
            if self.allow_null:
                return {"type": "Property", "value": NULL}
            raise BadRequestData(f"{where}: urn:ngsi-ld:null deletes attributes; it cannot be a value here")
        if not isinstance(raw, dict):
            return self._finish({"type": "Property", "value": raw}, iri, where)
        declared = raw.get("type")
        kind = _TYPE_NAMES.get(declared) if isinstance(declared, str) else None
        if kind is None:
            if declared in GEOMETRY_TYPES and "coordinates" in raw:
                return self._finish({"type": "GeoProperty", "value": raw}, iri, where)
            if declared is not None:
                raise BadRequestData(
                    f"{where}: attribute type must be one of {', '.join(ATTRIBUTE_TYPES)}, got {declared!r} "
                    "(a JSON object value with a 'type' member must be sent in normalized form)"
                )
            kind = next((k for member, k in _INFER_FROM_MEMBER.items() if member in raw), None)
            if kind is None:
                if "value" not in raw:
                    return self._finish({"type": "Property", "value": raw}, iri, where)
                value = raw["value"]
                geo_shaped = isinstance(value, dict) and value.get("type") in GEOMETRY_TYPES
                kind = "GeoProperty" if geo_shaped and (iri in GEO_ATTRIBUTES or "coordinates" in value) else "Property"
        instance: Instance = {"type": kind}
        for member, member_value in raw.items():
            if member in _COPIED_MEMBERS:
                instance[member] = member_value
            elif member in _IGNORED_MEMBERS:
                continue
            else:
                check_attribute_name(member, f"{where}: sub-attribute name")
                sub_iri = self.terms.expand(member)
                sub = self.attribute(sub_iri, member_value, f"{where}.{member}")
                instance[sub_iri] = sub[0]
        return self._finish(instance, iri, where)

    def _finish(self, instance: Instance, iri: str, where: str) -> Instance:
        kind = instance["type"]
        if kind == "Property" and iri in GEO_ATTRIBUTES and isinstance(instance.get("value"), dict):
            if instance["value"].get("type") in GEOMETRY_TYPES:
                instance["type"] = kind = "GeoProperty"
        member = DATA_MEMBER[kind]
        if member not in instance:
            raise BadRequestData(f"{where}: a {kind} needs a '{member}' member")
        data = instance[member]
        present = instance.keys() & _DATA_MEMBERS
        if len(present) > 1:
            other = sorted(present - {member})[0]
            raise BadRequestData(f"{where}: a {kind} has '{member}', not '{other}'")
        if data is None:
            raise BadRequestData(f"{where}: the '{member}' of a {kind} must not be null (use urn:ngsi-ld:null to delete)")
        if (data.__class__ is str and data == NULL) or (kind == "LanguageProperty" and data == {"@none": NULL}):
            if self.allow_null:
                instance[member] = NULL
                return instance
            raise BadRequestData(f"{where}: urn:ngsi-ld:null deletes attributes; it cannot be a value here")
        if kind == "Property" or kind == "ListProperty":
            check_numbers(data, where)
        elif kind == "GeoProperty":
            validate_geometry(data, where)
        elif kind == "Relationship":
            objects = data if isinstance(data, list) else [data]
            if not objects:
                raise BadRequestData(f"{where}: a Relationship needs at least one object")
            for target in objects:
                check_entity_id(target, f"{where}: relationship object")
            if "objectType" in instance:
                object_types = instance["objectType"]
                names = object_types if isinstance(object_types, list) else [object_types]
                expanded = [self.terms.expand(check_name(name, f"{where}: objectType")) for name in names]
                instance["objectType"] = expanded if isinstance(object_types, list) else expanded[0]
        elif kind == "LanguageProperty":
            if not isinstance(data, dict) or not data:
                raise BadRequestData(f"{where}: languageMap must be a non-empty object of language tag to text")
            for tag, text in data.items():
                strings = text if isinstance(text, list) else [text]
                if not tag or not all(isinstance(s, str) for s in strings):
                    raise BadRequestData(f"{where}: languageMap entries must map a language tag to text")
        elif kind == "ListProperty":
            if not isinstance(data, list):
                raise BadRequestData(f"{where}: valueList must be an array")
        elif kind == "ListRelationship":
            if not isinstance(data, list):
                raise BadRequestData(f"{where}: objectList must be an array")
            normalized = []
            for item in data:
                target = item.get("object") if isinstance(item, dict) else item
                normalized.append({"object": check_entity_id(target, f"{where}: objectList entry")})
            instance["objectList"] = normalized
        elif kind == "VocabProperty":
            words = data if isinstance(data, list) else [data]
            if not words or not all(isinstance(word, str) and word for word in words):
                raise BadRequestData(f"{where}: vocab must be a term or a list of terms")
            expanded_words = [self.terms.expand(word) for word in words]
            instance["vocab"] = expanded_words if isinstance(data, list) else expanded_words[0]
        elif kind == "JsonProperty":
            if not isinstance(data, (dict, list)):
                raise BadRequestData(f"{where}: json must be a JSON object or array")
        if len(instance) > 2:
            _check_metadata(instance, where)
        if self.now is not None:
            instance["createdAt"] = instance["modifiedAt"] = self.now
        return instance

    def fragment(self, iri: str, raw: Any, where: str) -> Instance:
        """A partial attribute (PATCH /entities/{id}/attrs/{attr}): the members to change.

        With a data member (or a type) it is parsed as a whole attribute; otherwise it holds only
        metadata and sub-attributes, and takes its type from the attribute it updates.
        """
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "@context"}
            if not raw:
                raise BadRequestData(f"{where}: the fragment is empty; send the members to update")
            if "type" in raw or raw.keys() & _DATA_MEMBERS:
                return self.instance(iri, raw, where)
            partial: Instance = {}
            for member, member_value in raw.items():
                if member in _COPIED_MEMBERS:
                    partial[member] = member_value
                elif member not in _IGNORED_MEMBERS:
                    check_attribute_name(member, f"{where}: sub-attribute name")
                    partial[self.terms.expand(member)] = self.attribute(self.terms.expand(member), member_value, f"{where}.{member}")[0]
            _check_metadata(partial, where)
            return partial
        return self.instance(iri, raw, where)

    def attributes(self, body: dict[str, Any], *, skip: Iterable[str] = ENTITY_MEMBERS) -> dict[str, list[Instance]]:
        """Every attribute of an entity fragment, keyed by IRI."""
        skip = frozenset(skip)
        attrs: dict[str, list[Instance]] = {}
        for name, raw in body.items():
            if name in skip:
                continue
            check_name(name, "attribute name")
            iri = self.terms.expand(name)
            if iri in attrs:
                raise BadRequestData(f"attribute {name} appears twice (two names for one IRI)")
            attrs[iri] = self.attribute(iri, raw, name)
        return attrs


def parse_entity(body: Any, terms: TermMap, *, now: str, id_required: bool = True, temporal: bool = False) -> Entity:
    """Validate an entity payload and return it in stored form with fresh system timestamps.
    ``temporal``: a temporal representation, whose attributes list instances over time."""
    if not isinstance(body, dict):
        raise BadRequestData("an entity must be a JSON object")
    entity_id = body.get("id", body.get("@id"))
    if entity_id is None:
        if id_required:
            raise BadRequestData("the entity has no 'id'")
    else:
        check_entity_id(entity_id)
    raw_type = body.get("type", body.get("@type"))
    if raw_type is None:
        raise BadRequestData("the entity has no 'type'")
    entity: Entity = {"id": entity_id, "type": parse_types(raw_type, terms), "createdAt": now, "modifiedAt": now}
    if "scope" in body:
        entity["scope"] = parse_scope(body["scope"])
    entity["attrs"] = AttributeParser(terms, now=now, temporal=temporal).attributes(body)
    return entity


_SCOPE = re.compile(r"(/[^/#+\s]+)+")


def parse_scope(value: Any) -> list[str]:
    """Scopes are paths of non-empty levels: ``/Anyang/Manan-gu``; a string or a list of them."""
    scopes = value if isinstance(value, list) else [value]
    if not scopes:
        raise BadRequestData("scope must not be an empty list")
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise BadRequestData(f"scope must be a path like /Anyang/Manan-gu (levels without '/', '+', '#'), got {scope!r}")
    return scopes


def _stamp(instance: Instance, now: str, created: str | None) -> None:
    instance["createdAt"] = created or now
    instance["modifiedAt"] = now
    for key, sub in instance.items():
        if key not in RESERVED_MEMBERS and isinstance(sub, dict):
            _stamp(sub, now, sub.get("createdAt") if created else None)


def stamp_replacing(new: Instance, old: Instance | None, now: str) -> Instance:
    """System timestamps for ``new`` taking the place of ``old``: creation time carries over."""
    _stamp(new, now, old.get("createdAt") if old else None)
    return new


def find_instance(instances: list[Instance], dataset_id: str | None) -> int | None:
    for index, instance in enumerate(instances):
        if instance.get("datasetId") == dataset_id:
            return index
    return None

