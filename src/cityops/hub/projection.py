"""Which parts of an entity a client asked for: ``attrs``, ``pick``/``omit`` (with nested
projections of linked entities, ``locatedAt{id,name}``) and ``datasetId``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .entity import check_name
from .errors import BadRequestData

MemberTree = dict[str, Optional["MemberTree"]]


@dataclass
class Projection:
    """``attrs`` holds attribute IRIs; ``pick``/``omit`` compact member names (``id`` and ``type``
    included), each with the projection of the entities a relationship of that name links to;
    ``datasets`` the datasetIds of the instances to keep (None stands for the default instance)."""

    attrs: frozenset[str] | None = None
    pick: MemberTree | None = None
    omit: MemberTree | None = None
    datasets: frozenset[str | None] | None = None

    def linked(self, member: str) -> Projection:
        """The projection of the entities linked through ``member``."""
        if self.pick is not None and self.pick.get(member):
            return Projection(pick=self.pick[member])
        if self.omit is not None and self.omit.get(member):
            return Projection(omit=self.omit[member])
        return Projection()

    def keeps(self, member: str) -> bool:
        if self.pick is not None and member not in self.pick:
            return False
        if self.omit is not None and member in self.omit and self.omit[member] is None:
            return False
        return True


def parse_members(text: str, what: str) -> MemberTree:
    """Parse ``id,name,locatedAt{id,name,isInCountry{description}}``."""
    position = 0

    def error(reason: str) -> BadRequestData:
        return BadRequestData(f"{what} {text!r}: {reason}")

    def parse_list(depth: int) -> MemberTree:
        nonlocal position
        if depth > 8:
            raise error("nested too deeply")
        members: MemberTree = {}
        while True:
            start = position
            while position < len(text) and text[position] not in ",{}":
                position += 1
            name = text[start:position].strip()
            if not name:
                raise error("an empty member name")
            check_name(name, f"{what} member")
            subtree = None
            if position < len(text) and text[position] == "{":
                position += 1
                subtree = parse_list(depth + 1)
                if position >= len(text) or text[position] != "}":
                    raise error("a '{' is not closed")
                position += 1
            members[name] = subtree
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            return members

    tree = parse_list(0)
    if position != len(text):
        raise error(f"unexpected {text[position]!r}")
    return tree
