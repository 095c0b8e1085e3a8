"""What a query for entities asks: the selection every store must answer the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .context import TermMap
from .entity import Entity, check_name
from .errors import BadRequestData
from .geo import GeoQuery
from .query_language import Node, Path, path_of, values_at

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

    depth = 0

    def parse_factor() -> list[frozenset[str]]:
        nonlocal position, depth
        if position < len(text) and text[position] == "(":
            depth += 1
            if depth > 32:
                raise BadRequestData(f"type expression {text[:80]!r} nests parentheses too deeply")
            position += 1
            inner = parse_or()
            depth -= 1
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
    scope: tuple[tuple[str, ...], ...] | None = None  # any of these groups; every scope pattern of a group must match
    order_by: tuple[tuple[Path, bool], ...] | None = None  # (path, descending)

    def matches(self, entity: Entity) -> bool:
        """The full decision for one entity, as every store must make it."""
        if self.selectors is not None and not any(s.matches(entity) for s in self.selectors):
            return False
        if self.attrs is not None and not any(attr in entity["attrs"] for attr in self.attrs):
            return False
        if self.scope is not None and not any(all(matches_scope(entity.get("scope"), p) for p in group) for group in self.scope):
            return False
        if self.geo is not None:
            instances = entity["attrs"].get(self.geo.geoproperty, ())
            if not any(i.get("type") == "GeoProperty" and self.geo.matches_value(i.get("value")) for i in instances):
                return False
        if self.q is not None and not self.q.matches(entity):
            return False
        return True


class PageCollector:
    """A query's page (and count) from candidates offered in result order, each decided by
    ``EntityQuery.matches``. ``offer`` answers whether more candidates are still wanted."""

    def __init__(self, query: EntityQuery):
        self.query = query
        self.page: list[Entity] = []
        self.matched = 0

    def offer(self, entity: Entity) -> bool:
        query = self.query
        if query.matches(entity):
            self.matched += 1
            if query.offset < self.matched <= query.offset + query.limit:
                self.page.append(entity)
            elif self.matched > query.offset + query.limit and not query.count:
                return False
        return True

    @property
    def count(self) -> int | None:
        return self.matched if self.query.count else None


def matches_scope(scopes: list[str] | None, pattern: str) -> bool:
    """Whether any scope matches ``pattern``: ``+`` stands for one level, a final ``#`` for any
    number of levels (none included): ``/Anyang/+/Market``, ``/Anyang/#``, ``/#``."""
    if not scopes:
        return False
    wanted = pattern.strip("/").split("/") if pattern != "/#" else ["#"]
    for scope in scopes:
        levels = scope.strip("/").split("/")
        if _levels_match(levels, wanted):
            return True
    return False


def _levels_match(levels: list[str], wanted: list[str]) -> bool:
    for index, part in enumerate(wanted):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(levels) == len(wanted)


def parse_scope_query(text: str) -> tuple[tuple[str, ...], ...]:
    """``,`` separates alternatives, ``;`` joins patterns that must all match."""
    groups = []
    for alternative in text.split(","):
        patterns = tuple(p.strip() for p in alternative.split(";"))
        for pattern in patterns:
            if not _SCOPE_PATTERN.fullmatch(pattern):
                raise BadRequestData(f"scopeQ pattern {pattern!r} is not a scope path (levels, '+' for one, a final '#' for any)")
        groups.append(patterns)
    return tuple(groups)


_SCOPE_PATTERN = re.compile(r"/#|(/([^/#+\s]+|\+))+(/#)?")


def order_key(entity: Entity, path: Path) -> tuple[int, Any]:
    """A sort key for ``orderBy``: numbers, then text, then anything else; missing values last."""
    if path.attr == "@id":
        value: Any = entity["id"]
    elif path.attr == "@type":
        value = entity["type"][0]
    elif path.attr in ("@createdAt", "@modifiedAt"):
        value = entity.get(path.attr[1:])
    else:
        value = next(iter(values_at(entity, path)), None)
    if value is None:
        return (3, "")
    if isinstance(value, bool):
        return (2, str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def sort_entities(entities: list[Entity], order_by: tuple[tuple[Path, bool], ...]) -> list[Entity]:
    ordered = list(entities)
    for path, descending in reversed(order_by):
        present = [e for e in ordered if order_key(e, path)[0] != 3]
        missing = [e for e in ordered if order_key(e, path)[0] == 3]
        present.sort(key=lambda e: order_key(e, path), reverse=descending)
        ordered = present + missing
    return ordered


def parse_order_by(text: str, terms: TermMap) -> tuple[tuple[Path, bool], ...]:
    """``name;asc,address.city;desc,createdAt``: attribute paths (or id, type, createdAt, modifiedAt)."""
    keys = []
    for part in text.split(","):
        name, _, direction = part.strip().partition(";")
        direction = direction.strip() or "asc"
        if direction not in ("asc", "desc") or not name.strip():
            raise BadRequestData(f"orderBy entry {part!r} must be a path optionally followed by ;asc or ;desc")
        name = name.strip()
        if name in ("id", "type", "createdAt", "modifiedAt"):
            path = Path("@" + name, text=name)
        else:
            path = path_of(name, terms)
        keys.append((path, direction == "desc"))
    return tuple(keys)
