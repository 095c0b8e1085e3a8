"""The NGSI-LD query language (``q``, ETSI GS CIM 009 clause 4.9): parser and evaluator.

Grammar, as implemented::

    query    = or
    or       = and *("|" and)
    and      = factor *(";" factor)
    factor   = "(" or ")" / term
    term     = ["!"] path / path op value
    path     = name *("." name) *("[" key "]")     ; dots: sub-attributes (or observedAt, unitCode...)
                                                   ; brackets: members inside a JSON value
    op       = "==" / "!=" / ">=" / ">" / "<=" / "<" / "~=" / "!~="
    value    = literal / literal 1*("," literal) / literal ".." literal
    literal  = number / "quoted string" / true / false / DateTime / URI or other text

``;`` binds tighter than ``|``. A term matches when any value at the path matches (multi-attributes,
arrays, lists); ``!=`` and ``!~=`` match when the attribute is present and no value equals (or
matches). Comparisons between different kinds of values (a number and a string) never match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .context import TermMap
from .entity import DATA_MEMBER, Entity, Instance
from .errors import BadRequestData
from .timestamps import parse_datetime

METADATA_PATH_MEMBERS = frozenset({"observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId", "objectType", "lang"})
COMPARISONS = ("==", "!=", ">=", ">", "<=", "<", "~=", "!~=")
_NUMBER_RE = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_MAX_QUERY_LENGTH = 4096
_MAX_DEPTH = 32


@dataclass(frozen=True)
class DateTimeLiteral:
    text: str
    moment: datetime


Literal = int | float | str | bool | DateTimeLiteral


@dataclass(frozen=True)
class Path:
    attr: str  # expanded attribute IRI
    sub: tuple[str, ...] = ()  # expanded sub-attribute IRIs, or a metadata member name last
    keys: tuple[str, ...] = ()  # members inside the JSON value
    text: str = ""

    @property
    def is_plain(self) -> bool:
        return not self.sub and not self.keys


@dataclass(frozen=True)
class Term:
    path: Path
    op: str  # "exists", "!exists", or one of COMPARISONS
    values: tuple[Literal, ...] = ()  # one literal, or a value list for == / !=
    low: Literal | None = None  # a range low..high for == / !=
    high: Literal | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, entity: Entity) -> bool:
        if self.op == "exists":
            return path_exists(entity, self.path)
        if self.op == "!exists":
            return not path_exists(entity, self.path)
        if self.op in ("!=", "!~="):
            if not path_exists(entity, self.path):
                return False
            positive = self.op[1:] if self.op == "!~=" else "=="
            return not any(self._compare(value, positive) for value in values_at(entity, self.path))
        return any(self._compare(value, self.op) for value in values_at(entity, self.path))

    def _compare(self, value: Any, op: str) -> bool:
        if op == "~=":
            return isinstance(value, str) and self.pattern is not None and self.pattern.search(value) is not None
        if self.low is not None:
            return compare(value, ">=", self.low) and compare(value, "<=", self.high)  # type: ignore[arg-type]
        return any(compare(value, op, literal) for literal in self.values)


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]

    def matches(self, entity: Entity) -> bool:
        return all(child.matches(entity) for child in self.children)


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]

    def matches(self, entity: Entity) -> bool:
        return any(child.matches(entity) for child in self.children)


Node = Term | And | Or


def compare(value: Any, op: str, literal: Literal) -> bool:
    """Compare a stored value with a query literal; values of different kinds never match."""
    if isinstance(value, dict) and "@value" in value:
        value = value["@value"]
    if isinstance(literal, DateTimeLiteral):
        if not isinstance(value, str):
            return False
        try:
            left: Any = parse_datetime(value)
        except ValueError:
            return False
        right: Any = literal.moment
    elif isinstance(literal, bool) or isinstance(value, bool):
        if not (isinstance(literal, bool) and isinstance(value, bool)):
            return False
        if op not in ("==",):
            return False
        return value is literal
    elif isinstance(literal, (int, float)):
        if not isinstance(value, (int, float)):
            return False
        left, right = value, literal
    else:
        if not isinstance(value, str):
            return False
        left, right = value, literal
    if op == "==":
        return left == right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    return False


def _instance_values(instance: Instance) -> Iterator[Any]:
    kind = instance.get("type", "Property")
    data = instance.get(DATA_MEMBER.get(kind, "value"))
    if kind == "LanguageProperty" and isinstance(data, dict):
        for text in data.values():
            yield from (text if isinstance(text, list) else [text])
    elif kind == "ListRelationship" and isinstance(data, list):
        for item in data:
            yield item.get("object") if isinstance(item, dict) else item
    else:
        yield data


def _descend(value: Any, keys: tuple[str, ...]) -> Iterator[Any]:
    if not keys:
        if isinstance(value, list):
            yield from value
        else:
            yield value
        return
    if isinstance(value, list):
        for item in value:
            yield from _descend(item, keys)
    elif isinstance(value, dict) and keys[0] in value:
        yield from _descend(value[keys[0]], keys[1:])


def _instances_at(entity: Entity, path: Path) -> Iterator[tuple[Any, str | None]]:
    """The instances (or sub-attribute instances) a path names, with the metadata member it ends in."""
    for instance in entity["attrs"].get(path.attr, ()):
        current: Any = instance
        metadata: str | None = None
        for step in path.sub:
            if step in METADATA_PATH_MEMBERS:
                metadata = step
                break
            current = current.get(step) if isinstance(current, dict) else None
            if current is None:
                break
        if current is not None:
            yield current, metadata


def _has_keys(value: Any, keys: tuple[str, ...]) -> bool:
    if not keys:
        return True
    if isinstance(value, list):
        return any(_has_keys(item, keys) for item in value)
    return isinstance(value, dict) and keys[0] in value and _has_keys(value[keys[0]], keys[1:])


def path_exists(entity: Entity, path: Path) -> bool:
    """Whether the attribute (sub-attribute, metadata member, or member inside the value) is there."""
    if path.is_plain:
        return bool(entity["attrs"].get(path.attr))
    for instance, metadata in _instances_at(entity, path):
        if metadata is not None:
            if instance.get(metadata) is not None:
                return True
        elif any(_has_keys(value, path.keys) for value in _instance_values(instance)):
            return True
    return False


def values_at(entity: Entity, path: Path) -> Iterator[Any]:
    """Every value found at ``path`` in ``entity`` (none when the path does not exist)."""
    for instance, metadata in _instances_at(entity, path):
        if metadata is not None:
            member = instance.get(metadata)
            if member is not None:
                yield member
            continue
        for value in _instance_values(instance):
            if value is not None:
                yield from _descend(value, path.keys)


class _Parser:
    def __init__(self, text: str, terms: TermMap):
        self.text = text
        self.pos = 0
        self.terms = terms
        self.depth = 0

    def error(self, message: str) -> BadRequestData:
        return BadRequestData(f"invalid q at position {self.pos}: {message} (q={self.text!r})")

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def parse(self) -> Node:
        node = self.parse_or()
        if self.pos != len(self.text):
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while self.peek("|"):
            self.pos += 1
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self) -> Node:
        children = [self.parse_factor()]
        while self.peek(";"):
            self.pos += 1
            children.append(self.parse_factor())
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_factor(self) -> Node:
        if self.peek("("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error("too many nested parentheses")
            self.pos += 1
            node = self.parse_or()
            if not self.peek(")"):
                raise self.error("missing ')'")
            self.pos += 1
            self.depth -= 1
            return node
        return self.parse_term()

    def parse_term(self) -> Term:
        negated = False
        if self.peek("!") and not self.peek("!=") and not self.peek("!~="):
            negated = True
            self.pos += 1
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in "=!<>~;|()":
            self.pos += 1
        path = self.parse_path(self.text[start : self.pos].strip())
        op = next((candidate for candidate in COMPARISONS if self.peek(candidate)), None)
        if op is None:
            return Term(path, "!exists" if negated else "exists")
        if negated:
            raise self.error("'!' (attribute absent) cannot be combined with a comparison")
        self.pos += len(op)
        raw = self.take_value()
        if raw == "":
            raise self.error(f"missing value after {op}")
        if op in ("~=", "!~="):
            pattern_text = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
            try:
                pattern = re.compile(pattern_text)
            except re.error as exc:
                raise self.error(f"invalid regular expression: {exc}") from None
            return Term(path, op, pattern=pattern)
        if op in ("==", "!="):
            range_parts = self.split_range(raw)
            if range_parts is not None:
                low, high = (self.literal(part) for part in range_parts)
                return Term(path, op, low=low, high=high)
            items = self.split_list(raw)
            return Term(path, op, values=tuple(self.literal(item) for item in items))
        return Term(path, op, values=(self.literal(raw),))

    def take_value(self) -> str:
        start = self.pos
        in_string = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if in_string:
                if char == "\\":
                    self.pos += 1
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in ";|)":
                break
            self.pos += 1
        if in_string:
            raise self.error("unterminated string")
        return self.text[start : self.pos]

    @staticmethod
    def split_list(raw: str) -> list[str]:
        items, current, in_string = [], [], False
        for char in raw:
            if char == '"':
                in_string = not in_string
            if char == "," and not in_string:
                items.append("".join(current))
                current = []
            else:
                current.append(char)
        items.append("".join(current))
        return items

    @staticmethod
    def split_range(raw: str) -> tuple[str, str] | None:
        """``low..high`` split at the ``..`` outside quotes, or None when ``raw`` is not a range."""
        in_string = False
        for index, char in enumerate(raw):
            if char == '"':
                in_string = not in_string
            elif not in_string and raw.startswith("..", index):
                low, high = raw[:index], raw[index + 2 :]
                return (low, high) if low and high else None
        return None

    def literal(self, raw: str) -> Literal:
        raw = raw.strip()
        if not raw:
            raise self.error("empty value")
        if raw[0] == '"':
            if len(raw) < 2 or raw[-1] != '"':
                raise self.error(f"unterminated string {raw!r}")
            return raw[1:-1].replace('\\"', '"')
        if raw == "true":
            return True
        if raw == "false":
            return False
        if _NUMBER_RE.match(raw):
            number = float(raw)
            if not math.isfinite(number):
                raise self.error(f"number {raw} is out of range")
            if re.fullmatch(r"-?\d+", raw):
                integer = int(raw)
                if not -(2**63) <= integer < 2**63:
                    raise self.error(f"integer {raw} does not fit in 64 bits")
                return integer
            return number
        if any(c in raw for c in '<>=!~"\'()'):
            raise self.error(f"unexpected characters in value {raw!r} (quote text values)")
        if "T" in raw and raw[:1].isdigit():
            try:
                return DateTimeLiteral(raw, parse_datetime(raw))
            except ValueError:
                pass
        return raw

    def parse_path(self, text: str) -> Path:
        if not text:
            raise self.error("missing attribute name")
        keys: list[str] = []
        base = text
        if "[" in text:
            bracket = text.index("[")
            base, rest = text[:bracket], text[bracket:]
            for match in re.finditer(r"\[([^\[\]]*)\]", rest):
                keys.append(match.group(1))
            if "".join(f"[{k}]" for k in keys) != rest or any(not key for key in keys):
                raise self.error(f"malformed path {text!r}")
        if not base:
            raise self.error(f"malformed path {text!r}")
        parts = base.split(".") if not _is_iri_like(base) else [base]
        if any(not part or any(c.isspace() for c in part) for part in parts):
            raise self.error(f"malformed attribute path {text!r}")
        attr = self.terms.expand(parts[0])
        sub = tuple(part if part in METADATA_PATH_MEMBERS else self.terms.expand(part) for part in parts[1:])
        return Path(attr, sub, tuple(keys), text)


def _is_iri_like(text: str) -> bool:
    return "://" in text


def path_of(text: str, terms: TermMap) -> Path:
    """An attribute path as the query language writes it (``name.sub[key]``), expanded."""
    return _Parser(text, terms).parse_path(text)


def parse_q(text: str, terms: TermMap) -> Node:
    """Parse a ``q`` expression, expanding attribute names with ``terms``."""
    if len(text) > _MAX_QUERY_LENGTH:
        raise BadRequestData(f"q is longer than {_MAX_QUERY_LENGTH} characters")
    if not text.strip():
        raise BadRequestData("q must not be empty")
    return _Parser(text, terms).parse()
