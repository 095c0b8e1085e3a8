"""The NGSI-LD core API (ETSI GS CIM 009 V1.9.1) at /ngsi-ld/v1: entities, attributes, batch
operations, queries and discovery. Handlers parse and negotiate; the hub decides; the renderer
shapes the answer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..hub.context import CORE_CONTEXT_URL, LINK_REL, ContextResolver, TermMap, link_header
from ..hub.entity import (
    MEMBER_NAMES,
    AttributeParser,
    Entity,
    check_attribute_name,
    check_entity_id,
    check_name,
    parse_entity,
    parse_scope,
    parse_types,
)
from ..hub.errors import (
    BadRequestData,
    InvalidRequest,
    NgsiError,
    NotAcceptable,
    ResourceNotFound,
    TooManyResults,
    UnsupportedMediaType,
)
from ..hub.geo import GeoQuery
from ..hub.hub import BatchResult, Hub, UpdateResult
from ..hub.projection import Projection, parse_members
from ..hub.query import EntityQuery, Selector, parse_order_by, parse_scope_query, parse_type_selection
from ..hub.query_language import parse_q
from ..hub.render import FORMATS, JOINS, Renderer
from ..hub.timestamps import now_iso
from ..settings import Settings
from ..store.contract import DEFAULT_TENANT
from .http import (
    GEO_JSON,
    JSON,
    JSON_LD,
    MERGE_PATCH,
    json_response,
    location,
    media_type_of,
    parse_bool,
    parse_int,
    parse_json,
    read_body,
)

BASE = "/ngsi-ld/v1"
_LINK_RE = re.compile(r"<([^>]*)>\s*(;[^,]*)?")
_ACCEPTABLE = (JSON, JSON_LD, GEO_JSON)
_FORMAT_OPTIONS = {"keyValues", "simplified", "concise", "normalized"}

# Query parameters each kind of request takes; anything else is an InvalidRequest.
_RENDER_PARAMS = {"options", "format", "lang", "attrs", "pick", "omit", "datasetId", "join", "joinLevel", "containedBy",
                  "geometryProperty", "local", "via", "csf"}
_QUERY_PARAMS = _RENDER_PARAMS | {"id", "type", "idPattern", "q", "georel", "geometry", "coordinates", "geoproperty",
                                  "geometryProperty", "limit", "offset", "count", "scopeQ", "orderBy", "collect"}
_PAGING_PARAMS = {"limit", "offset", "count", "options", "format", "lang", "orderBy", "local", "geometryProperty",
                  "join", "joinLevel", "pick", "omit", "datasetId", "attrs", "csf"}


class MaybeEmptyConvertor(Convertor[str]):
    """A path segment that may be empty, so ``/entities//attrs`` reaches a handler that says why it is wrong."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("maybe", MaybeEmptyConvertor())


class Negotiated:
    """What one request brings and wants: tenant, @context (as terms and as sent), response media type."""

    __slots__ = ("tenant", "terms", "context", "accept")

    def __init__(self, tenant: str, terms: TermMap, context: Any, accept: str):
        self.tenant = tenant
        self.terms = terms
        self.context = context
        self.accept = accept

    def link_header(self) -> dict[str, str]:
        url = self.context if isinstance(self.context, str) else CORE_CONTEXT_URL
        return {"Link": link_header(url)}

    def context_member(self) -> Any:
        return self.context if self.context is not None else CORE_CONTEXT_URL


def link_context(request: Request) -> str | None:
    """The @context URL of a ``Link`` header with the JSON-LD context relation, if any."""
    header = request.headers.get("link")
    if not header:
        return None
    found = [m.group(1).strip() for m in _LINK_RE.finditer(header) if LINK_REL in (m.group(2) or "")]
    if len(found) > 1:
        raise BadRequestData("more than one JSON-LD @context Link header")
    return found[0] if found else None


def negotiate_accept(request: Request, allowed: tuple[str, ...] = (JSON, JSON_LD)) -> str:
    header = request.headers.get("accept")
    if not header:
        return JSON
    best, best_q = None, -1.0
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        quality = 1.0
        for piece in pieces[1:]:
            if piece.startswith("q="):
                try:
                    quality = float(piece[2:])
                except ValueError:
                    quality = 0.0
        if media in ("*/*", "application/*"):
            candidate = JSON
        elif media in allowed:
            candidate = media
        else:
            continue
        if quality > best_q:
            best, best_q = candidate, quality
    if best is None or best_q <= 0:
        raise NotAcceptable(f"cannot produce any of: {header} (available: {', '.join(allowed)})")
    return best


def check_params(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")


class NgsiLdApi:
    def __init__(self, hub: Hub, resolver: ContextResolver, settings: Settings):
        self.hub = hub
        self.resolver = resolver
        self.settings = settings

    # -- request plumbing ----------------------------------------------------------------------
    @staticmethod
    def tenant_of(request: Request) -> str:
        return request.headers.get("ngsild-tenant", DEFAULT_TENANT).strip()

    async def negotiate(self, request: Request, *, allowed: tuple[str, ...] = (JSON, JSON_LD)) -> Negotiated:
        accept = negotiate_accept(request, allowed)
        context = link_context(request)
        terms = await self.resolver.resolve(context)
        return Negotiated(self.tenant_of(request), terms, context, accept)

    async def read_payload(self, request: Request, *, patch: bool = False) -> tuple[Any, str]:
        """The parsed JSON body and its media type (JSON or JSON-LD); 415 for anything else."""
        media = media_type_of(request.headers.get("content-type"))
        allowed = (JSON, JSON_LD, MERGE_PATCH) if patch else (JSON, JSON_LD)
        if media not in allowed:
            raise UnsupportedMediaType(f"Content-Type {media or '(none)'} is not supported here; send {' or '.join(allowed)}")
        body = parse_json(await read_body(request, self.settings.max_body_bytes))
        if media == JSON_LD and link_context(request) is not None:
            raise BadRequestData("@context was sent both in a JSON-LD body and in a Link header")
        return body, (JSON if media == MERGE_PATCH else media)

    async def payload_terms(self, request: Request, item: Any, media: str) -> tuple[TermMap, Any]:
        """The term map for one payload object: its own @context (JSON-LD) or the Link header's (JSON)."""
        if media == JSON_LD:
            if not isinstance(item, dict) or "@context" not in item:
                raise BadRequestData("a request with Content-Type application/ld+json must carry @context in its body")
            context = item["@context"]
            return await self.resolver.resolve(context), context
        if isinstance(item, dict) and "@context" in item:
            raise BadRequestData("@context in the body needs Content-Type application/ld+json (use a Link header with JSON)")
        context = link_context(request)
        return await self.resolver.resolve(context), context

    def respond(self, negotiated: Negotiated, body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        media = negotiated.accept
        all_headers = {} if media == JSON_LD else negotiated.link_header()
        if headers:
            all_headers.update(headers)
        if media in (JSON_LD, GEO_JSON):
            context = negotiated.context_member()
            if isinstance(body, dict):
                body = {**body, "@context": context}
            elif isinstance(body, list):
                body = [{**item, "@context": context} if isinstance(item, dict) else item for item in body]
        return json_response(body, status, all_headers, media)

    @staticmethod
    def entity_id_of(request: Request) -> str:
        entity_id = request.path_params["entity_id"]
        if not entity_id:
            raise BadRequestData("the path has no entity id")
        return check_entity_id(entity_id)

    # -- rendering options ---------------------------------------------------------------------
    def renderer(self, request: Request, negotiated: Negotiated, *, attrs: tuple[str, ...] | None = None) -> Renderer:
        params = request.query_params
        options = {o.strip() for o in params.get("options", "").split(",") if o.strip()}
        unknown = options - _FORMAT_OPTIONS - {"sysAttrs", "noOverwrite", "replace", "update"}
        if unknown:
            raise InvalidRequest(f"unknown options: {', '.join(sorted(unknown))}")
        formats = {"keyValues" if o == "simplified" else o for o in options & _FORMAT_OPTIONS}
        fmt = params.get("format")
        if fmt is not None:
            fmt = "keyValues" if fmt == "simplified" else fmt
            if fmt not in FORMATS:
                raise InvalidRequest(f"format must be normalized, concise, keyValues or simplified, got {fmt!r}")
        elif len(formats) > 1:
            raise InvalidRequest("options may name only one of keyValues, concise and normalized")
        else:
            fmt = next(iter(formats), "normalized")
        return Renderer(
            negotiated.terms,
            fmt=fmt,
            sys_attrs="sysAttrs" in options,
            lang=params.get("lang"),
            projection=self.projection(request, negotiated.terms, attrs),
        )

    @staticmethod
    def _names(text: str | None, what: str) -> list[str] | None:
        if text is None:
            return None
        names = [name.strip() for name in text.split(",")]
        if not all(names):
            raise BadRequestData(f"{what} has an empty name")
        return names

    def attrs_param(self, text: str | None, terms: TermMap) -> tuple[str, ...] | None:
        names = self._names(text, "attrs")
        if names is None:
            return None
        return tuple(terms.expand(check_attribute_name(name, "attrs entry")) for name in names)

    def projection(self, request: Request, terms: TermMap, attrs: tuple[str, ...] | None) -> Projection:
        params = request.query_params
        if attrs is None:
            attrs = self.attrs_param(params.get("attrs"), terms)
        pick = parse_members(params["pick"], "pick") if "pick" in params else None
        omit = parse_members(params["omit"], "omit") if "omit" in params else None
        if pick is not None and omit is not None:
            raise BadRequestData("pick and omit cannot be used together")
        if attrs is not None and (pick is not None or omit is not None):
            raise BadRequestData("attrs cannot be combined with pick or omit (pick is the newer attrs)")
        datasets = None
        if "datasetId" in params:
            ids = self._names(params["datasetId"], "datasetId") or []
            datasets = frozenset(None if i == "@none" else check_entity_id(i, "datasetId") for i in ids)
        return Projection(attrs=frozenset(attrs) if attrs is not None else None, pick=pick, omit=omit, datasets=datasets)

    @staticmethod
    def join_of(join: Any, level: Any) -> tuple[str, int]:
        """The linked-entity retrieval asked for: ``join`` (inline, flat, @none) and ``joinLevel``."""
        join = "@none" if join is None else join
        if join not in JOINS:
            raise BadRequestData(f"join must be inline, flat or @none, got {join!r}")
        depth = parse_int(None if level is None else str(level), "joinLevel", 1, minimum=1)
        if depth > 8:
            raise BadRequestData("joinLevel may be at most 8")
        return join, depth

    def geometry_property(self, request: Request, terms: TermMap) -> str:
        name = request.query_params.get("geometryProperty", "location")
        return terms.expand(check_attribute_name(name, "geometryProperty"))

    async def fetcher(self, tenant: str) -> Callable[[list[str]], Any]:
        async def fetch(ids: list[str]) -> dict[str, Entity]:
            found = {}
            for entity_id in ids:
                entity = await self.hub.store.get(tenant, entity_id)
                if entity is not None:
                    found[entity_id] = entity
            return found

        return fetch

    async def render_entities(
        self, negotiated: Negotiated, renderer: Renderer, entities: list[Entity], join: tuple[str, int]
    ) -> list[dict[str, Any]]:
        join_mode, level = join
        if join_mode == "@none":
            return [renderer.entity(e) for e in entities]
        return await renderer.joined(entities, await self.fetcher(negotiated.tenant), join=join_mode, level=level)

    # -- entities ------------------------------------------------------------------------------
    async def create_entity(self, request: Request) -> Response:
        check_params(request, {"local"})
        body, media = await self.read_payload(request)
        terms, _ = await self.payload_terms(request, body, media)
        entity = parse_entity(body, terms, now=now_iso())
        await self.hub.create(self.tenant_of(request), entity)
        return Response(status_code=201, headers=location(f"{BASE}/entities/{entity['id']}"))

    async def retrieve_entity(self, request: Request) -> Response:
        check_params(request, _RENDER_PARAMS | {"type"})
        negotiated = await self.negotiate(request, allowed=_ACCEPTABLE)
        renderer = self.renderer(request, negotiated)
        join = self.join_of(request.query_params.get("join"), request.query_params.get("joinLevel"))
        entity_id = self.entity_id_of(request)
        entity = await self.hub.retrieve(negotiated.tenant, entity_id)
        projection = renderer.projection
        if projection.attrs is not None and not any(a in entity["attrs"] for a in projection.attrs):
            raise ResourceNotFound(f"entity {entity_id} has none of the attributes asked for", instance=entity_id)
        if negotiated.accept == GEO_JSON:
            feature = renderer.geojson_feature(entity, self.geometry_property(request, negotiated.terms))
            return self.respond(negotiated, feature)
        rendered = await self.render_entities(negotiated, renderer, [entity], join)
        if not rendered[0]:
            raise ResourceNotFound(f"nothing of entity {entity_id} is left after pick/omit", instance=entity_id)
        return self.respond(negotiated, rendered if join[0] == "flat" and len(rendered) > 1 else rendered[0])

    async def delete_entity(self, request: Request) -> Response:
        check_params(request, {"local", "type"})
        await self.hub.delete(self.tenant_of(request), self.entity_id_of(request))
        return Response(status_code=204)

    async def replace_entity(self, request: Request) -> Response:
        check_params(request, {"local"})
        entity_id = self.entity_id_of(request)
        body, media = await self.read_payload(request)
        terms, _ = await self.payload_terms(request, body, media)
        if not isinstance(body, dict):
            raise BadRequestData("an entity must be a JSON object")
        if body.get("id", entity_id) != entity_id:
            raise BadRequestData(f"the body's id {body.get('id')} differs from the id in the path {entity_id}")
        entity = parse_entity({**body, "id": entity_id}, terms, now=now_iso())
        await self.hub.replace(self.tenant_of(request), entity)
        return Response(status_code=204)

    async def merge_entity(self, request: Request) -> Response:
        check_params(request, {"local", "options", "format"})
        entity_id = self.entity_id_of(request)
        body, media = await self.read_payload(request, patch=True)
        terms, _ = await self.payload_terms(request, body, media)
        fragment = self.fragment(body, terms, entity_id, allow_null=True)
        await self.hub.merge(self.tenant_of(request), entity_id, fragment)
        return Response(status_code=204)

    def fragment(self, body: Any, terms: TermMap, entity_id: str | None, *, allow_null: bool, now: str | None = None) -> Entity:
        """An entity fragment: attributes, and optionally type and scope."""
        if not isinstance(body, dict):
            raise BadRequestData("the body must be a JSON object of attributes")
        if entity_id is not None and body.get("id", entity_id) != entity_id:
            raise BadRequestData(f"the body's id {body.get('id')} differs from the id in the path {entity_id}")
        fragment: Entity = {"id": entity_id if entity_id is not None else check_entity_id(body.get("id")), "type": []}
        if "type" in body:
            fragment["type"] = parse_types(body["type"], terms)
        if "scope" in body:
            fragment["scope"] = parse_scope(body["scope"])
        fragment["attrs"] = AttributeParser(terms, allow_null=allow_null, now=now).attributes(body)
        return fragment

    async def append_attributes(self, request: Request) -> Response:
        check_params(request, {"options", "local"})
        options = {o.strip() for o in request.query_params.get("options", "").split(",") if o.strip()}
        if options - {"noOverwrite"}:
            raise InvalidRequest(f"unknown options: {', '.join(sorted(options - {'noOverwrite'}))}")
        entity_id = self.entity_id_of(request)
        body, media = await self.read_payload(request)
        terms, _ = await self.payload_terms(request, body, media)
        fragment = self.fragment(body, terms, entity_id, allow_null=False)
        result = await self.hub.append_attributes(self.tenant_of(request), entity_id, fragment, overwrite="noOverwrite" not in options)
        return self.update_response(result)

    async def update_attributes(self, request: Request) -> Response:
        check_params(request, {"local"})
        entity_id = self.entity_id_of(request)
        body, media = await self.read_payload(request, patch=True)
        terms, _ = await self.payload_terms(request, body, media)
        fragment = self.fragment(body, terms, entity_id, allow_null=True)
        result = await self.hub.update_attributes(self.tenant_of(request), entity_id, fragment)
        return self.update_response(result)

    @staticmethod
    def update_response(result: UpdateResult) -> Response:
        """204, or 207 with the UpdateResult; attribute names are given as IRIs, as the spec's examples do."""
        if not result.not_updated:
            return Response(status_code=204)
        body = {
            "updated": result.updated,
            "notUpdated": [{"attributeName": name, "reason": reason} for name, reason in result.not_updated],
        }
        return json_response(body, 207)

    async def attribute_request(self, request: Request, *, patch: bool) -> tuple[str, Any, TermMap, str]:
        entity_id = self.entity_id_of(request)
        body, media = await self.read_payload(request, patch=patch)
        terms, _ = await self.payload_terms(request, body, media)
        raw_name = request.path_params["attr"]
        if raw_name in MEMBER_NAMES:
            raise BadRequestData(f"{raw_name} is an entity member, not an attribute; update it through the entity")
        name = terms.expand(check_attribute_name(raw_name))
        return entity_id, body, terms, name

    async def partial_update_attribute(self, request: Request) -> Response:
        check_params(request, {"local"})
        entity_id, body, terms, name = await self.attribute_request(request, patch=True)
        fragment = AttributeParser(terms, allow_null=True).fragment(name, body, request.path_params["attr"])
        await self.hub.update_attribute(self.tenant_of(request), entity_id, name, fragment, partial=True)
        return Response(status_code=204)

    async def replace_attribute(self, request: Request) -> Response:
        check_params(request, {"local"})
        entity_id, body, terms, name = await self.attribute_request(request, patch=False)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "@context"}
        instances = AttributeParser(terms, now=now_iso()).attribute(name, body, request.path_params["attr"])
        if len(instances) != 1:
            raise BadRequestData("send one attribute instance at a time to this endpoint")
        await self.hub.update_attribute(self.tenant_of(request), entity_id, name, instances[0], partial=False)
        return Response(status_code=204)

    async def delete_attribute(self, request: Request) -> Response:
        check_params(request, {"datasetId", "deleteAll", "local"})
        entity_id = self.entity_id_of(request)
        terms = await self.resolver.resolve(link_context(request))
        params = request.query_params
        delete_all = parse_bool(params.get("deleteAll"), "deleteAll")
        dataset_id = params.get("datasetId")
        if dataset_id is not None:
            check_entity_id(dataset_id, "datasetId")
        raw_name = request.path_params["attr"]
        if raw_name == "scope":
            await self.hub.delete_scope(self.tenant_of(request), entity_id)
            return Response(status_code=204)
        name = terms.expand(check_attribute_name(raw_name))
        await self.hub.delete_attribute(self.tenant_of(request), entity_id, name, dataset_id=dataset_id, delete_all=delete_all)
        return Response(status_code=204)

    # -- queries -------------------------------------------------------------------------------
    async def query_entities(self, request: Request) -> Response:
        check_params(request, _QUERY_PARAMS)
        negotiated = await self.negotiate(request, allowed=_ACCEPTABLE)
        params = request.query_params
        terms = negotiated.terms
        renderer = self.renderer(request, negotiated)
        query = self.entity_query(request, terms)
        self.paging(request, query, terms)
        join = self.join_of(params.get("join"), params.get("joinLevel"))
        return await self.run_query(negotiated, query, renderer, request, join)

    def entity_query(self, request: Request, terms: TermMap) -> EntityQuery:
        """The entities a GET query's parameters select: id, type, idPattern, attrs, q, geo-query, scopeQ."""
        params = request.query_params
        selector = self.selector(params.get("id"), params.get("type"), params.get("idPattern"), terms)
        query = EntityQuery(selectors=(selector,) if selector is not None else None)
        query.attrs = self.attrs_param(params.get("attrs"), terms)
        if params.get("q") is not None:
            query.q = parse_q(params["q"], terms)
        query.geo = self.geo_query(params.get("georel"), params.get("geometry"), params.get("coordinates"), params.get("geoproperty"), terms)
        if params.get("scopeQ") is not None:
            query.scope = parse_scope_query(params["scopeQ"])
        local = parse_bool(params.get("local"), "local")
        if not (params.get("type") or query.attrs or query.q or query.geo or query.scope or local):
            raise BadRequestData("a query needs at least one of type, attrs, q, a geo-query, scopeQ or local=true")
        return query

    async def purge_entities(self, request: Request) -> Response:
        """DELETE /entities?type=…&q=…: delete every entity the query selects (NGSI-LD purge)."""
        check_params(request, {"id", "type", "idPattern", "q", "scopeQ", "local"})
        terms = await self.resolver.resolve(link_context(request))
        params = request.query_params
        selector = self.selector(params.get("id"), params.get("type"), params.get("idPattern"), terms)
        query = EntityQuery(selectors=(selector,) if selector is not None else None, limit=self.settings.max_batch_size, count=True)
        if params.get("q") is not None:
            query.q = parse_q(params["q"], terms)
        if params.get("scopeQ") is not None:
            query.scope = parse_scope_query(params["scopeQ"])
        if not (params.get("type") or params.get("idPattern") or query.q or query.scope):
            raise BadRequestData("purging needs type, idPattern, q or scopeQ, so that a typo cannot delete the whole hub")
        await self.hub.purge(self.tenant_of(request), query)
        return Response(status_code=204)

    def selector(self, ids: Any, types: Any, id_pattern: Any, terms: TermMap) -> Selector | None:
        if ids is None and types is None and id_pattern is None:
            return None
        id_list = None
        if ids is not None:
            id_list = ids if isinstance(ids, list) else [i.strip() for i in str(ids).split(",")]
            id_list = tuple(check_entity_id(i) for i in id_list)
        type_selection = None
        if types is not None:
            if not isinstance(types, str):
                raise BadRequestData("type must be a string")
            type_selection = parse_type_selection(types, terms)
        pattern = None
        if id_pattern is not None:
            if not isinstance(id_pattern, str):
                raise BadRequestData("idPattern must be a string")
            try:
                pattern = re.compile(id_pattern)
            except re.error as exc:
                raise BadRequestData(f"idPattern is not a valid regular expression: {exc}") from None
        return Selector(types=type_selection, ids=id_list, id_pattern=pattern)

    def geo_query(self, georel: Any, geometry: Any, coordinates: Any, geoproperty: Any, terms: TermMap) -> GeoQuery | None:
        if georel is None and geometry is None and coordinates is None:
            return None
        if georel is None or geometry is None or coordinates is None:
            raise BadRequestData("a geo-query needs georel, geometry and coordinates together")
        if isinstance(coordinates, str):
            try:
                coordinates = orjson.loads(coordinates)
            except orjson.JSONDecodeError:
                raise BadRequestData(f"coordinates must be a JSON array, got {coordinates!r}") from None
        if not isinstance(geometry, str) or not isinstance(georel, str):
            raise BadRequestData("georel and geometry must be strings")
        name = geoproperty if geoproperty is not None else "location"
        if not isinstance(name, str):
            raise BadRequestData("geoproperty must be a string")
        return GeoQuery(georel, {"type": geometry, "coordinates": coordinates}, terms.expand(check_attribute_name(name, "geoproperty")))

    def paging(self, request: Request, query: EntityQuery, terms: TermMap) -> None:
        params = request.query_params
        query.count = parse_bool(params.get("count"), "count")
        query.limit = parse_int(params.get("limit"), "limit", self.settings.default_page_size)
        query.offset = parse_int(params.get("offset"), "offset", 0)
        if query.limit > self.settings.max_page_size:
            raise TooManyResults(f"limit {query.limit} is above the maximum page size {self.settings.max_page_size}; page with offset")
        if query.limit == 0 and not query.count:
            raise BadRequestData("limit=0 is only meaningful with count=true")
        if params.get("orderBy"):
            query.order_by = parse_order_by(params["orderBy"], terms)

    async def run_query(
        self, negotiated: Negotiated, query: EntityQuery, renderer: Renderer, request: Request, join: tuple[str, int]
    ) -> Response:
        result = await self.hub.query(negotiated.tenant, query)
        headers: dict[str, str] = {}
        if result.count is not None:
            headers["NGSILD-Results-Count"] = str(result.count)
        if negotiated.accept == GEO_JSON:
            geometry_property = self.geometry_property(request, negotiated.terms)
            collection = {"type": "FeatureCollection", "features": [renderer.geojson_feature(e, geometry_property) for e in result.entities]}
            return self.respond(negotiated, collection, headers=headers)
        rendered = [r for r in await self.render_entities(negotiated, renderer, result.entities, join) if r]
        return self.respond(negotiated, rendered, headers=headers)

    async def query_post(self, request: Request) -> Response:
        """POST /entityOperations/query: the query in the body, paging and format in the URL."""
        check_params(request, _PAGING_PARAMS)
        body, media = await self.read_payload(request)
        terms, context = await self.payload_terms(request, body, media)
        negotiated = Negotiated(self.tenant_of(request), terms, context, negotiate_accept(request, _ACCEPTABLE))
        if not isinstance(body, dict):
            raise BadRequestData("the query must be a JSON object")
        if body.get("type") != "Query":
            raise BadRequestData('the query object must have "type": "Query"')
        query = EntityQuery()
        entities = body.get("entities")
        if entities is not None:
            if not isinstance(entities, list) or not entities:
                raise BadRequestData("entities must be a non-empty array of entity selectors")
            selectors = []
            for item in entities:
                if not isinstance(item, dict):
                    raise BadRequestData("each entity selector must be an object")
                selector = self.selector(item.get("id"), item.get("type"), item.get("idPattern"), terms)
                if selector is not None:
                    selectors.append(selector)
            query.selectors = tuple(selectors) if selectors else None
        attrs = body.get("attrs")
        if attrs is not None:
            if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
                raise BadRequestData("attrs must be an array of attribute names")
            query.attrs = tuple(terms.expand(check_attribute_name(a, "attrs entry")) for a in attrs)
        if body.get("q") is not None:
            if not isinstance(body["q"], str):
                raise BadRequestData("q must be a string")
            query.q = parse_q(body["q"], terms)
        geo_q = body.get("geoQ")
        if geo_q is not None:
            if not isinstance(geo_q, dict):
                raise BadRequestData("geoQ must be an object")
            query.geo = self.geo_query(geo_q.get("georel"), geo_q.get("geometry"), geo_q.get("coordinates"), geo_q.get("geoproperty"), terms)
        if body.get("scopeQ") is not None:
            query.scope = parse_scope_query(str(body["scopeQ"]))
        self.paging(request, query, terms)
        renderer = self.renderer(request, negotiated, attrs=query.attrs)
        if body.get("lang") is not None:
            renderer = Renderer(terms, fmt=renderer.fmt, sys_attrs=renderer.sys_attrs, lang=str(body["lang"]), projection=renderer.projection)
        params = request.query_params
        join = self.join_of(body.get("join", params.get("join")), body.get("joinLevel", params.get("joinLevel")))
        return await self.run_query(negotiated, query, renderer, request, join)

    # -- batch operations ----------------------------------------------------------------------
    async def batch_items(self, request: Request) -> tuple[list[Any], str]:
        body, media = await self.read_payload(request)
        if not isinstance(body, list):
            raise BadRequestData("a batch operation takes a JSON array")
        if not body:
            raise BadRequestData("the batch is empty")
        if len(body) > self.settings.max_batch_size:
            raise BadRequestData(f"a batch may hold at most {self.settings.max_batch_size} items, got {len(body)}")
        return body, media

    async def parse_batch_entities(
        self, request: Request, items: list[Any], media: str, parse: Callable[[Any, TermMap], Entity]
    ) -> tuple[list[Entity], list[tuple[str, NgsiError]]]:
        entities, errors = [], []
        for item in items:
            try:
                terms, _ = await self.payload_terms(request, item, media)
                entities.append(parse(item, terms))
            except NgsiError as error:
                entity_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else ""
                errors.append((entity_id, error))
        return entities, errors

    @staticmethod
    def batch_response(result: BatchResult, parse_errors: list[tuple[str, NgsiError]], success_status: int, success_body: Any) -> Response:
        errors = parse_errors + result.errors
        if not errors:
            if success_status == 204:
                return Response(status_code=204)
            return json_response(success_body, success_status)
        body = {"success": result.success, "errors": [{"entityId": entity_id, "error": error.problem()} for entity_id, error in errors]}
        return json_response(body, 207)

    async def batch_create(self, request: Request) -> Response:
        check_params(request, {"local"})
        items, media = await self.batch_items(request)
        now = now_iso()
        entities, errors = await self.parse_batch_entities(request, items, media, lambda item, terms: parse_entity(item, terms, now=now))
        result = await self.hub.batch_create(self.tenant_of(request), entities)
        return self.batch_response(result, errors, 201, result.success)

    async def batch_upsert(self, request: Request) -> Response:
        check_params(request, {"options", "local"})
        items, media = await self.batch_items(request)
        options = {o for o in request.query_params.get("options", "").split(",") if o}
        if options - {"replace", "update"}:
            raise InvalidRequest(f"upsert takes options=replace or options=update, got {','.join(sorted(options))}")
        if {"replace", "update"} <= options:
            raise BadRequestData("options may be replace or update, not both")
        now = now_iso()
        entities, errors = await self.parse_batch_entities(request, items, media, lambda item, terms: parse_entity(item, terms, now=now))
        result = await self.hub.batch_upsert(self.tenant_of(request), entities, replace="update" not in options)
        if not errors and not result.errors and not result.created:
            return Response(status_code=204)
        return self.batch_response(result, errors, 201, result.created)

    async def batch_update(self, request: Request) -> Response:
        check_params(request, {"options", "local"})
        items, media = await self.batch_items(request)
        options = {o for o in request.query_params.get("options", "").split(",") if o}
        if options - {"noOverwrite"}:
            raise InvalidRequest(f"update takes options=noOverwrite, got {','.join(sorted(options))}")
        now = now_iso()

        def parse(item: Any, terms: TermMap) -> Entity:
            fragment = self.fragment(item, terms, None, allow_null=False, now=now)
            fragment["modifiedAt"] = now
            return fragment

        entities, errors = await self.parse_batch_entities(request, items, media, parse)
        result = await self.hub.batch_update(self.tenant_of(request), entities, overwrite="noOverwrite" not in options)
        return self.batch_response(result, errors, 204, None)

    async def batch_merge(self, request: Request) -> Response:
        check_params(request, {"local"})
        items, media = await self.batch_items(request)
        entities, errors = await self.parse_batch_entities(
            request, items, media, lambda item, terms: self.fragment(item, terms, None, allow_null=True)
        )
        result = await self.hub.batch_merge(self.tenant_of(request), entities)
        return self.batch_response(result, errors, 204, None)

    async def batch_delete(self, request: Request) -> Response:
        check_params(request, {"local"})
        items, _ = await self.batch_items(request)
        ids, errors = [], []
        for item in items:
            try:
                ids.append(check_entity_id(item))
            except NgsiError as error:
                errors.append((item if isinstance(item, str) else "", error))
        result = await self.hub.batch_delete(self.tenant_of(request), ids)
        return self.batch_response(result, errors, 204, None)

    # -- discovery -----------------------------------------------------------------------------
    async def list_types(self, request: Request) -> Response:
        check_params(request, {"details", "local"})
        negotiated = await self.negotiate(request)
        terms = negotiated.terms
        details = parse_bool(request.query_params.get("details"), "details")
        summaries = await self.hub.types(negotiated.tenant, with_attributes=details)
        if details:
            body: Any = [
                {"id": s.type, "type": "EntityType", "typeName": terms.compact(s.type), "attributeNames": sorted(terms.compact(a) for a in s.attributes)}
                for s in summaries
            ]
        else:
            body = {"id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}", "type": "EntityTypeList", "typeList": [terms.compact(s.type) for s in summaries]}
        return self.respond(negotiated, body)

    async def type_info(self, request: Request) -> Response:
        check_params(request, {"local"})
        negotiated = await self.negotiate(request)
        terms = negotiated.terms
        wanted = terms.expand(check_name(request.path_params["type"], "entity type"))
        summaries = await self.hub.types(negotiated.tenant, with_attributes=True)
        summary = next((s for s in summaries if s.type == wanted), None)
        if summary is None:
            raise ResourceNotFound(f"no entity of type {request.path_params['type']} exists")
        body = {
            "id": summary.type,
            "type": "EntityTypeInfo",
            "typeName": terms.compact(summary.type),
            "entityCount": summary.entity_count,
            "attributeDetails": [
                {"id": attr, "type": "Attribute", "attributeName": terms.compact(attr), "attributeTypes": sorted(kinds)}
                for attr, kinds in sorted(summary.attributes.items())
            ],
        }
        return self.respond(negotiated, body)

    async def list_attributes(self, request: Request) -> Response:
        check_params(request, {"details", "local"})
        negotiated = await self.negotiate(request)
        terms = negotiated.terms
        details = parse_bool(request.query_params.get("details"), "details")
        summaries = await self.hub.attributes(negotiated.tenant)
        if details:
            body: Any = [
                {
                    "id": s.attribute,
                    "type": "Attribute",
                    "attributeName": terms.compact(s.attribute),
                    "typeNames": sorted(terms.compact(t) for t in s.types),
                }
                for s in summaries
            ]
        else:
            body = {
                "id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}",
                "type": "AttributeList",
                "attributeList": [terms.compact(s.attribute) for s in summaries],
            }
        return self.respond(negotiated, body)

    async def attribute_info(self, request: Request) -> Response:
        check_params(request, {"local"})
        negotiated = await self.negotiate(request)
        terms = negotiated.terms
        wanted = terms.expand(check_name(request.path_params["attr"], "attribute name"))
        summaries = await self.hub.attributes(negotiated.tenant)
        summary = next((s for s in summaries if s.attribute == wanted), None)
        if summary is None:
            raise ResourceNotFound(f"no entity has an attribute {request.path_params['attr']}")
        body = {
            "id": summary.attribute,
            "type": "Attribute",
            "attributeName": terms.compact(summary.attribute),
            "attributeCount": summary.entity_count,
            "attributeTypes": sorted(summary.kinds),
            "typeNames": sorted(terms.compact(t) for t in summary.types),
        }
        return self.respond(negotiated, body)

    # -- routes --------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        e = BASE + "/entities"
        one = e + "/{entity_id:maybe}"
        routes = []
        for collection in (e, e + "/"):
            routes += [
                Route(collection, self.query_entities, methods=["GET"]),
                Route(collection, self.create_entity, methods=["POST"]),
                Route(collection, self.purge_entities, methods=["DELETE"]),
            ]
        routes += [
            Route(one, self.retrieve_entity, methods=["GET"]),
            Route(one, self.delete_entity, methods=["DELETE"]),
            Route(one, self.merge_entity, methods=["PATCH"]),
            Route(one, self.replace_entity, methods=["PUT"]),
        ]
        for attrs in (one + "/attrs", one + "/attrs/"):
            routes += [Route(attrs, self.append_attributes, methods=["POST"]), Route(attrs, self.update_attributes, methods=["PATCH"])]
        routes += [
            Route(one + "/attrs/{attr}", self.partial_update_attribute, methods=["PATCH"]),
            Route(one + "/attrs/{attr}", self.replace_attribute, methods=["PUT"]),
            Route(one + "/attrs/{attr}", self.delete_attribute, methods=["DELETE"]),
        ]
        for operation, handler in (
            ("create", self.batch_create),
            ("upsert", self.batch_upsert),
            ("update", self.batch_update),
            ("delete", self.batch_delete),
            ("merge", self.batch_merge),
            ("query", self.query_post),
        ):
            routes += [Route(f"{BASE}/entityOperations/{operation}", handler, methods=["POST"])]
        for listing, handler in ((BASE + "/types", self.list_types), (BASE + "/attributes", self.list_attributes)):
            routes += [Route(listing, handler, methods=["GET"]), Route(listing + "/", handler, methods=["GET"])]
        routes += [
            Route(BASE + "/types/{type:path}", self.type_info, methods=["GET"]),
            Route(BASE + "/attributes/{attr:path}", self.attribute_info, methods=["GET"]),
        ]
        return routes

