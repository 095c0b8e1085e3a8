"""@context handling through cached term maps.

A JSON-LD processor per request costs about half a millisecond an entity; NGSI-LD payloads only
need their keys (attribute names), entity types and a few values expanded to IRIs and compacted
back. So a resolved @context becomes a ``TermMap``: term -> IRI with a cached reverse map, built
once per distinct @context and kept in an LRU cache.

Precedence follows the NGSI-LD core context being protected: user contexts may add terms and
set ``@vocab``, but cannot redefine a core term.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from .errors import BadRequestData, InvalidRequest, LdContextNotAvailable

NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_VOCAB = NGSI_LD + "default-context/"
CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LINK_REL = "http://www.w3.org/ns/json-ld#context"


def link_header(url: str) -> str:
    """The value of a ``Link`` header pointing at the @context ``url``."""
    return f'<{url}>; rel="{LINK_REL}"; type="application/ld+json"'
_CORE_URL_RE = re.compile(r"^https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(-v1\.\d+)?\.jsonld$")
_MAX_CONTEXT_DEPTH = 8

ContextValue = str | dict[str, Any] | list[Any]
Fetcher = Callable[[str], Awaitable[bytes]]


def is_core_context_url(url: str) -> bool:
    return bool(_CORE_URL_RE.match(url))


_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+")


def looks_like_iri(text: str) -> bool:
    """An absolute IRI: a scheme, a colon, something after it, and no whitespace."""
    return _IRI.fullmatch(text) is not None


def _load_core_definitions() -> dict[str, Any]:
    text = resources.files("cityops.hub").joinpath("contexts/ngsi-ld-core-context.jsonld").read_text("utf-8")
    return json.loads(text)["@context"]


class TermMap:
    """Expansion and compaction of names for one resolved @context."""

    __slots__ = ("terms", "vocab", "prefixes", "_reverse", "_expand_cache", "_compact_cache")

    def __init__(self, terms: dict[str, str], vocab: str | None, prefixes: dict[str, str], reverse: dict[str, str]):
        self.terms = terms
        self.vocab = vocab
        self.prefixes = prefixes
        self._reverse = reverse
        self._expand_cache: dict[str, str] = {}
        self._compact_cache: dict[str, str] = {}

    def to_document(self) -> dict[str, Any]:
        """The term map as plain JSON, so another process can use it without resolving the @context again."""
        return {"terms": self.terms, "vocab": self.vocab, "prefixes": self.prefixes, "reverse": self._reverse}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> TermMap:
        return cls(document["terms"], document["vocab"], document["prefixes"], document["reverse"])

    def expand(self, term: str) -> str:
        """The IRI a short name, compact IRI or IRI stands for."""
        cached = self._expand_cache.get(term)
        if cached is not None:
            return cached
        iri = self.terms.get(term)
        if iri is None:
            prefix, sep, suffix = term.partition(":")
            if sep and prefix in self.prefixes and not suffix.startswith("//"):
                iri = self.prefixes[prefix] + suffix
            elif sep and looks_like_iri(term):
                iri = term
            else:
                iri = (self.vocab or DEFAULT_VOCAB) + term
        if len(self._expand_cache) < 100_000:
            self._expand_cache[term] = iri
        return iri

    def compact(self, iri: str) -> str:
        """The shortest name for ``iri`` that expands back to it with this context."""
        cached = self._compact_cache.get(iri)
        if cached is not None:
            return cached
        term = self._reverse.get(iri)
        if term is None:
            term = iri
            vocab = self.vocab or DEFAULT_VOCAB
            if iri.startswith(vocab) and len(iri) > len(vocab):
                candidate = iri[len(vocab):]
                if self.expand(candidate) == iri:
                    term = candidate
            if term == iri:
                best = None
                for prefix, prefix_iri in self.prefixes.items():
                    if iri.startswith(prefix_iri) and len(iri) > len(prefix_iri):
                        candidate = f"{prefix}:{iri[len(prefix_iri):]}"
                        if best is None or len(candidate) < len(best):
                            best = candidate
                if best is not None and self.expand(best) == iri:
                    term = best
        if len(self._compact_cache) < 100_000:
            self._compact_cache[iri] = term
        return term


class _TermMapBuilder:
    """Accumulates term definitions from the core context and then user contexts, in order."""

    def __init__(self) -> None:
        self.terms: dict[str, str] = {}
        self.prefixes: dict[str, str] = {}
        self.vocab: str | None = None
        self.protected: set[str] = set()

    def add(self, definitions: dict[str, Any], *, protected: bool = False) -> None:
        if not isinstance(definitions, dict):
            raise InvalidRequest("an @context entry must be a URL string or a JSON object")
        raw: dict[str, Any] = {}
        for key, value in definitions.items():
            if key == "@vocab":
                if value is None:
                    self.vocab = None
                elif isinstance(value, str):
                    self.vocab = self._resolve_iri(value, raw, set()) if ":" in value else value
                else:
                    raise InvalidRequest("@vocab in an @context must be a string")
            elif key.startswith("@"):
                continue
            else:
                raw[key] = value
        for key, value in raw.items():
            if key in self.protected and not protected:
                continue
            if value is None:
                self.terms.pop(key, None)
                self.prefixes.pop(key, None)
                continue
            if isinstance(value, str):
                target, explicit_prefix = value, None
            elif isinstance(value, dict):
                target = value.get("@id", key if ":" in key else None)
                explicit_prefix = value.get("@prefix")
                if target is None and self.vocab:
                    target = self.vocab + key
                if target is None:
                    continue
                if not isinstance(target, str):
                    raise InvalidRequest(f"the @id of term {key!r} in an @context must be a string")
            else:
                raise InvalidRequest(f"the definition of term {key!r} in an @context must be a string or an object")
            if target.startswith("@"):
                continue
            iri = self._resolve_iri(target, raw, {key})
            self.terms[key] = iri
            if protected:
                self.protected.add(key)
            usable_as_prefix = explicit_prefix is True or (
                explicit_prefix is None and isinstance(value, str) and iri[-1:] in "/#:?[]@"
            )
            if usable_as_prefix and ":" not in key:
                self.prefixes[key] = iri

    def _resolve_iri(self, value: str, raw: dict[str, Any], seen: set[str]) -> str:
        prefix, sep, suffix = value.partition(":")
        if not sep:
            if value in raw and value not in seen:
                target = raw[value]
                target = target.get("@id") if isinstance(target, dict) else target
                if isinstance(target, str):
                    return self._resolve_iri(target, raw, seen | {value})
            if value in self.terms:
                return self.terms[value]
            return (self.vocab or DEFAULT_VOCAB) + value
        if suffix.startswith("//"):
            return value
        if prefix in raw and prefix not in seen:
            target = raw[prefix]
            target = target.get("@id") if isinstance(target, dict) else target
            if isinstance(target, str):
                return self._resolve_iri(target, raw, seen | {prefix}) + suffix
        if prefix in self.prefixes:
            return self.prefixes[prefix] + suffix
        if prefix in self.terms:
            return self.terms[prefix] + suffix
        return value

    def build(self) -> TermMap:
        reverse: dict[str, str] = {}
        for term, iri in self.terms.items():
            if iri in reverse and term in self.protected:
                continue
            if iri not in reverse or term not in self.protected:
                existing = reverse.get(iri)
                if existing is None or existing in self.protected or len(term) < len(existing):
                    reverse[iri] = term
        return TermMap(dict(self.terms), self.vocab, dict(self.prefixes), reverse)


class ContextResolver:
    """Turns the @context of a request into a ``TermMap``, fetching remote documents once.

    Remote documents come from preloaded files first, then from the network through ``fetcher``;
    a document that cannot be had raises ``LdContextNotAvailable`` (503).
    """

    def __init__(
        self,
        *,
        preloaded: dict[str, Path] | None = None,
        fetcher: Fetcher | None = None,
        cache_size: int = 256,
    ) -> None:
        self._core_definitions = _load_core_definitions()
        core = _TermMapBuilder()
        core.add(self._core_definitions, protected=True)
        self.core = core.build()
        self._preloaded: dict[str, Any] = {}
        for url, path in (preloaded or {}).items():
            self._preloaded[url] = self._parse_document(url, Path(path).read_bytes())
        self._fetched: OrderedDict[str, Any] = OrderedDict()
        self._fetcher = fetcher
        self._maps: OrderedDict[str, TermMap] = OrderedDict()
        self._cache_size = cache_size

    def preload(self, url: str, document: bytes | dict[str, Any]) -> None:
        self._preloaded[url] = document if isinstance(document, dict) else self._parse_document(url, document)

    async def resolve(self, context: ContextValue | None) -> TermMap:
        """The term map for ``context`` (a URL, an inline object, or a list of both); ``None`` is the core context."""
        if context is None or (isinstance(context, str) and is_core_context_url(context)):
            return self.core
        key = context if isinstance(context, str) else orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
        cached = self._maps.get(key)
        if cached is not None:
            self._maps.move_to_end(key)
            return cached
        builder = _TermMapBuilder()
        builder.add(self._core_definitions, protected=True)
        await self._apply(builder, context, depth=0, seen=set())
        term_map = builder.build()
        self._maps[key] = term_map
        if len(self._maps) > self._cache_size:
            self._maps.popitem(last=False)
        return term_map

    async def _apply(self, builder: _TermMapBuilder, context: Any, depth: int, seen: set[str]) -> None:
        if depth > _MAX_CONTEXT_DEPTH:
            raise InvalidRequest("@context nests remote contexts too deeply (or in a loop)")
        if context is None:
            return
        if isinstance(context, list):
            for item in context:
                await self._apply(builder, item, depth, seen)
        elif isinstance(context, str):
            if is_core_context_url(context):
                return
            if context in seen:
                return
            document = await self._document(context)
            await self._apply(builder, document.get("@context"), depth + 1, seen | {context})
        elif isinstance(context, dict):
            imported = context.get("@import")
            if isinstance(imported, str):
                await self._apply(builder, imported, depth + 1, seen)
            builder.add(context)
        else:
            raise InvalidRequest("@context must be a URL, an object, or a list of them")

    async def _document(self, url: str) -> dict[str, Any]:
        document = self._preloaded.get(url) or self._fetched.get(url)
        if document is not None:
            return document
        if not looks_like_iri(url):
            raise BadRequestData(f"@context entry {url!r} is not a URL")
        if self._fetcher is None:
            raise LdContextNotAvailable(f"@context {url} is not preloaded and remote fetching is off")
        try:
            payload = await self._fetcher(url)
        except LdContextNotAvailable:
            raise
        except Exception as exc:  # any network failure means the context is not available
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: {exc}") from None
        document = self._parse_document(url, payload)
        self._fetched[url] = document
        if len(self._fetched) > self._cache_size:
            self._fetched.popitem(last=False)
        return document

    @staticmethod
    def _parse_document(url: str, payload: bytes) -> dict[str, Any]:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise LdContextNotAvailable(f"@context {url} is not valid JSON") from None
        if not isinstance(document, dict) or "@context" not in document:
            raise LdContextNotAvailable(f"@context {url} is not a JSON-LD context document (no @context member)")
        return document


class HttpContextFetcher:
    """GETs @context documents over HTTP(S) with a timeout and a size limit."""

    MAX_BYTES = 1024 * 1024

    def __init__(self, timeout: float):
        import httpx

        self._httpx = httpx
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=True, headers={"Accept": "application/ld+json, application/json"})

    async def __call__(self, url: str) -> bytes:
        httpx = self._httpx
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: {exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: HTTP {response.status_code}")
        if len(response.content) > self.MAX_BYTES:
            raise LdContextNotAvailable(f"@context {url} is larger than {self.MAX_BYTES} bytes")
        return response.content

    async def close(self) -> None:
        await self._client.aclose()


def make_http_fetcher(timeout: float) -> HttpContextFetcher:
    return HttpContextFetcher(timeout)
