"""What a query for entities asks: the selection every store must answer the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .context import TermMap
from .entity import Entity, check_name
from .errors import BadRequestData
from .geo import GeoQuery
from .query_language import Node

TypeSelection = tuple[frozenset[str], ...]  # any of these sets; an entity matches a set when it has all its types


def parse_type_selection(text: str, terms: TermMap) -> TypeSelection:
    """Parse a type expression: ``A,B`` or ``A|B`` (either), ``A;B`` (both), parentheses to group."""
    text = text.strip()
    if not text:
        raise BadRequestData("type must not be empty")
    position = 0

    def parse_or() -> list[frozenset[str]]:
        nonlocal position
        result = parse_and()
        while position < len(text) and text[position] in ",|":
            position += 1
            result = result + parse_and()
        return result

    def parse_and() -> list[frozenset[str]]:
        nonlocal position
        result = parse_factor()
        while position < len(text) and text[position] == ";":
            position += 1
            right = parse_factor()
            result = [a | b for a in result for b in right]
        return result

    def parse_factor() -> list[frozenset[str]]:
        nonlocal position
        if position < len(text) and text[position] == "(":
            position += 1
            inner = parse_or()
            if position >= len(text) or text[position] != ")":
                raise BadRequestData(f"type expression {text!r} misses ')'")
            position += 1
            return inner
        start = position
        while position < len(text) and text[position] not in ",|;()":
            position += 1
        name = text[start:position].strip()
        check_name(name, "entity type")
        return [frozenset({terms.expand(name)})]

    selection = parse_or()
    if position != len(text):
        raise BadRequestData(f"type expression {text!r} has an unexpected {text[position]!r}")
    if len(selection) > 64:
        raise BadRequestData(f"type expression {text!r} is too complex")
    return tuple(selection)


@dataclass(frozen=True)
class Selector:
    """Which entities by identity: ids, an id pattern and a type selection, all of which must hold."""

    types: TypeSelection | None = None
    ids: tuple[str, ...] | None = None
    id_pattern: re.Pattern[str] | None = None

    def matches(self, entity: Entity) -> bool:
        if self.ids is not None and entity["id"] not in self.ids:
            return False
        if self.id_pattern is not None and not self.id_pattern.search(entity["id"]):
            return False
        if self.types is not None:
            have = set(entity["type"])
            if not any(wanted <= have for wanted in self.types):
                return False
        return True


@dataclass
class EntityQuery:
    """A selection of entities with paging. Empty fields select everything.

    ``selectors``: an entity must match at least one of them (NGSI-LD EntitySelector list).
    """

    selectors: tuple[Selector, ...] | None = None
    attrs: tuple[str, ...] | None = None  # the entity must have at least one of these attributes
    q: Node | None = None
    geo: GeoQuery | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False
    scope: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, entity: Entity) -> bool:
        """The full decision for one entity, as every store must make it."""
        if self.selectors is not None and not any(s.matches(entity) for s in self.selectors):
            return False
        if self.attrs is not None and not any(attr in entity["attrs"] for attr in self.attrs):
            return False
        if self.scope is not None and not matches_scope(entity.get("scope"), self.scope):
            return False
        if self.geo is not None:
            instances = entity["attrs"].get(self.geo.geoproperty, ())
            if not any(i.get("type") == "GeoProperty" and self.geo.matches_value(i.get("value")) for i in instances):
                return False
        if self.q is not None and not self.q.matches(entity):
            return False
        return True


def matches_scope(scopes: list[str] | None, wanted: tuple[str, ...]) -> bool:
    """Scope query: ``/a/b`` matches that scope exactly, ``/a/#`` matches ``/a`` and everything under it, ``/#`` any."""
    if not scopes:
        return False
    for pattern in wanted:
        if pattern == "/#":
            return True
        if pattern.endswith("/#"):
            base = pattern[:-2]
            if any(scope == base or scope.startswith(base + "/") for scope in scopes):
                return True
        elif pattern.endswith("/+"):
            base = pattern[:-2]
            if any(scope.startswith(base + "/") and "/" not in scope[len(base) + 1 :] for scope in scopes):
                return True
        elif pattern in scopes:
            return True
    return False
