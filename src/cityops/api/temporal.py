"""The NGSI-LD temporal API at /ngsi-ld/v1/temporal: the history of entities, as instances, as
value/time pairs, or aggregated per period in the database."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..hub.entity import AttributeParser, check_attribute_name, check_entity_id, parse_entity
from ..hub.errors import BadRequestData, InvalidRequest, ResourceNotFound
from ..hub.projection import Projection
from ..hub.query import EntityQuery, Selector, parse_order_by
from ..hub.render import Renderer
from ..hub.temporal import TemporalQuery, instance_number, paginate, parse_temporal_query
from ..hub.temporal_render import TemporalRenderer
from ..hub.timestamps import now_iso
from .http import JSON, JSON_LD, location, parse_bool
from .ngsi_ld import BASE, Negotiated, NgsiLdApi, check_params

_TEMPORAL_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "normalized", "simplified", "keyValues", "concise"}
_TEMPORAL_PARAMS = {
    "attrs", "options", "format", "lang", "timerel", "timeAt", "endTimeAt", "timeproperty", "lastN",
    "aggrMethods", "aggrPeriodDuration", "local", "pick", "omit", "datasetId",
}  # fmt: skip
_TEMPORAL_QUERY_PARAMS = _TEMPORAL_PARAMS | {"id", "type", "idPattern", "q", "georel", "geometry", "coordinates", "geoproperty",
                                             "limit", "offset", "count", "scopeQ", "orderBy"}  # fmt: skip


class TemporalApi:
    def __init__(self, ngsi: NgsiLdApi):
        self.ngsi = ngsi
        self.hub = ngsi.hub

    def _mode(self, request: Request) -> tuple[str, set[str]]:
        params = request.query_params
        options = {o.strip() for o in params.get("options", "").split(",") if o.strip()}
        unknown = options - _TEMPORAL_OPTIONS
        if unknown:
            raise InvalidRequest(f"unknown options: {', '.join(sorted(unknown))}")
        fmt = params.get("format")
        modes = {o for o in options if o in ("temporalValues", "aggregatedValues")}
        if fmt is not None:
            if fmt not in ("temporalValues", "aggregatedValues", "normalized", "simplified", "keyValues"):
                raise InvalidRequest(f"format must be normalized, temporalValues or aggregatedValues, got {fmt!r}")
            modes = {"temporalValues" if fmt in ("simplified", "keyValues") else fmt}
        if len(modes) > 1:
            raise BadRequestData("ask for either temporalValues or aggregatedValues, not both")
        return next(iter(modes), "normalized"), options

    def _query(self, request: Request, negotiated: Negotiated, mode: str, *, required: bool) -> tuple[TemporalQuery, Projection]:
        params = request.query_params
        query = parse_temporal_query(
            timerel=params.get("timerel"),
            time_at=params.get("timeAt"),
            end_time_at=params.get("endTimeAt"),
            timeproperty=params.get("timeproperty"),
            last_n=params.get("lastN"),
            aggr_methods=params.get("aggrMethods"),
            aggr_period=params.get("aggrPeriodDuration"),
            aggregated=mode == "aggregatedValues",
            required=required,
        )
        projection = self.ngsi.projection(request, negotiated.terms, None)
        query.attrs = tuple(projection.attrs) if projection.attrs is not None else None
        query.datasets = projection.datasets
        query.instance_limit = self.ngsi.settings.temporal_instance_limit
        if params.get("orderBy"):
            query.order_by = parse_order_by(params["orderBy"], negotiated.terms)
        return query, Projection(pick=projection.pick, omit=projection.omit)

    def _renderer(self, negotiated: Negotiated, mode: str, options: set[str], query: TemporalQuery, projection: Projection) -> TemporalRenderer:
        return TemporalRenderer(
            Renderer(negotiated.terms, sys_attrs="sysAttrs" in options), mode=mode, timeproperty=query.timeproperty, projection=projection
        )

    async def retrieve(self, request: Request) -> Response:
        """GET /temporal/entities/{id}."""
        check_params(request, _TEMPORAL_PARAMS)
        negotiated = await self.ngsi.negotiate(request, allowed=(JSON, JSON_LD))
        mode, options = self._mode(request)
        query, projection = self._query(request, negotiated, mode, required=False)
        entity_id = self.ngsi.entity_id_of(request)
        history = await self.hub.store.temporal_entity(negotiated.tenant, entity_id, query)
        if history is None:
            raise ResourceNotFound(f"entity {entity_id} has no history", instance=entity_id)
        if query.attrs is not None and not (history.attrs or history.aggregated) and query.timerel is None:
            raise ResourceNotFound(f"entity {entity_id} has no history of the attributes asked for", instance=entity_id)
        content_range = paginate([history], query)
        body = self._renderer(negotiated, mode, options, query, projection).entity(history)
        if not body:
            raise ResourceNotFound(f"nothing of entity {entity_id} is left after pick/omit", instance=entity_id)
        return self._respond(negotiated, body, content_range)

    def _respond(self, negotiated: Negotiated, body: Any, content_range: str | None, headers: dict[str, str] | None = None) -> Response:
        if content_range is None:
            return self.ngsi.respond(negotiated, body, headers=headers)
        return self.ngsi.respond(negotiated, body, status=206, headers={**(headers or {}), "Content-Range": content_range})

    async def query(self, request: Request) -> Response:
        """GET /temporal/entities: histories of the entities a query selects (by their current state for q and geo-queries)."""
        check_params(request, _TEMPORAL_QUERY_PARAMS)
        negotiated = await self.ngsi.negotiate(request, allowed=(JSON, JSON_LD))
        mode, options = self._mode(request)
        query, projection = self._query(request, negotiated, mode, required=True)
        selection = self.ngsi.entity_query(request, negotiated.terms)
        if selection.q is not None or selection.geo is not None or selection.scope is not None:
            query.entity_filter = EntityQuery(q=selection.q, geo=selection.geo, scope=selection.scope)
        return await self._answer(request, negotiated, selection.selectors, query, mode, options, projection)

    async def query_post(self, request: Request) -> Response:
        """POST /temporal/entityOperations/query: the query in the body (entities, attrs, temporalQ)."""
        check_params(request, {"limit", "offset", "count", "options", "format", "lang", "local"})
        body, media = await self.ngsi.read_payload(request)
        terms, context = await self.ngsi.payload_terms(request, body, media)
        if not isinstance(body, dict) or body.get("type") != "Query":
            raise BadRequestData('the query must be a JSON object with "type": "Query"')
        negotiated = Negotiated(self.ngsi.tenant_of(request), terms, context, JSON if media == JSON else JSON_LD)
        mode, options = self._mode(request)
        temporal = body.get("temporalQ") or {}
        if not isinstance(temporal, dict):
            raise BadRequestData("temporalQ must be an object")
        query = parse_temporal_query(
            timerel=temporal.get("timerel"),
            time_at=temporal.get("timeAt"),
            end_time_at=temporal.get("endTimeAt"),
            timeproperty=temporal.get("timeproperty"),
            last_n=temporal.get("lastN"),
            aggr_methods=body.get("aggrMethods") or temporal.get("aggrMethods"),
            aggr_period=body.get("aggrPeriodDuration") or temporal.get("aggrPeriodDuration"),
            aggregated=mode == "aggregatedValues",
            required=True,
        )
        if body.get("attrs") is not None:
            if not isinstance(body["attrs"], list):
                raise BadRequestData("attrs must be an array of attribute names")
            query.attrs = self.ngsi.attrs_param(",".join(map(str, body["attrs"])), terms)
        selectors: list[Selector] = []
        for item in body.get("entities") or []:
            if not isinstance(item, dict):
                raise BadRequestData("each entity selector must be an object")
            selector = self.ngsi.selector(item.get("id"), item.get("type"), item.get("idPattern"), terms)
            if selector is not None:
                selectors.append(selector)
        query.instance_limit = self.ngsi.settings.temporal_instance_limit
        return await self._answer(request, negotiated, tuple(selectors) or None, query, mode, options, Projection())

    async def _answer(
        self,
        request: Request,
        negotiated: Negotiated,
        selectors: tuple[Selector, ...] | None,
        query: TemporalQuery,
        mode: str,
        options: set[str],
        projection: Projection,
    ) -> Response:
        params = request.query_params
        limit = self.ngsi.settings.default_page_size if params.get("limit") is None else int(params["limit"]) if params["limit"].isdigit() else -1
        offset = int(params.get("offset", "0")) if params.get("offset", "0").isdigit() else -1
        if limit < 0 or offset < 0:
            raise BadRequestData("limit and offset must be non-negative integers")
        count = params.get("count") == "true"
        histories, total = await self.hub.store.temporal_query(negotiated.tenant, selectors, query, limit, offset, count)
        content_range = paginate(histories, query)
        renderer = self._renderer(negotiated, mode, options, query, projection)
        headers: dict[str, str] = {}
        if total is not None:
            headers["NGSILD-Results-Count"] = str(total)
        body: Any = [renderer.entity(history) for history in histories]
        return self._respond(negotiated, body, content_range, headers)

    # -- provision -----------------------------------------------------------------------------------
    async def create_or_update(self, request: Request) -> Response:
        """POST /temporal/entities: record a temporal representation (201 new entity, 204 added to one)."""
        check_params(request, {"local"})
        body, media = await self.ngsi.read_payload(request)
        terms, _ = await self.ngsi.payload_terms(request, body, media)
        provided = parse_entity(body, terms, now=now_iso(), temporal=True)
        if await self.hub.provide_history(self.ngsi.tenant_of(request), provided):
            return Response(status_code=201, headers=location(f"{BASE}/temporal/entities/{provided['id']}"))
        return Response(status_code=204)

    async def append_attributes(self, request: Request) -> Response:
        """POST /temporal/entities/{id}/attrs: add attribute instances to an entity's history."""
        check_params(request, {"local"})
        entity_id = self.ngsi.entity_id_of(request)
        body, media = await self.ngsi.read_payload(request)
        terms, _ = await self.ngsi.payload_terms(request, body, media)
        if not isinstance(body, dict):
            raise BadRequestData("the attributes must be a JSON object")
        attrs = AttributeParser(terms, now=now_iso(), temporal=True).attributes(body)
        await self.hub.provide_history(self.ngsi.tenant_of(request), {"id": entity_id, "type": [], "attrs": attrs}, existing_only=True)
        return Response(status_code=204)

    async def _attribute_of(self, request: Request) -> tuple[str, str, str]:
        """(tenant, entity id, attribute IRI) of a .../{entity_id}/attrs/{attr} path."""
        entity_id = self.ngsi.entity_id_of(request)
        name = request.path_params["attr"]
        if unquote(name) in ("", ".", ".."):  # a dot segment, however encoded, must not mean "the entity itself"
            raise BadRequestData(f"{name!r} is not an attribute name")
        negotiated = await self.ngsi.negotiate(request)
        return negotiated.tenant, entity_id, negotiated.terms.expand(check_attribute_name(name))

    @staticmethod
    def _instance_number(request: Request) -> int:
        text = request.path_params["instance_id"]
        if not text:
            raise BadRequestData("the path has no instance id")
        check_entity_id(text, "instance id")
        try:
            return instance_number(text)
        except BadRequestData:
            raise ResourceNotFound(f"no attribute instance {text}", instance=text) from None

    async def modify_instance(self, request: Request) -> Response:
        """PATCH /temporal/entities/{id}/attrs/{attr}/{instanceId}."""
        check_params(request, {"local"})
        body, media = await self.ngsi.read_payload(request, patch=True)
        tenant, entity_id, attr = await self._attribute_of(request)
        number = self._instance_number(request)
        terms, _ = await self.ngsi.payload_terms(request, body, media)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "@context"}
        now = now_iso()
        instance = AttributeParser(terms, now=now).instance(attr, body, "instance")
        await self.hub.store.modify_instance(tenant, entity_id, attr, number, instance, now)
        return Response(status_code=204)

    async def delete_instance(self, request: Request) -> Response:
        """DELETE /temporal/entities/{id}/attrs/{attr}/{instanceId}."""
        check_params(request, {"local"})
        tenant, entity_id, attr = await self._attribute_of(request)
        await self.hub.store.delete_instances(tenant, entity_id, attr, iid=self._instance_number(request))
        return Response(status_code=204)

    async def delete_attribute(self, request: Request) -> Response:
        """DELETE /temporal/entities/{id}/attrs/{attr}[?datasetId=...|deleteAll=true]."""
        check_params(request, {"local", "datasetId", "deleteAll"})
        tenant, entity_id, attr = await self._attribute_of(request)
        params = request.query_params
        dataset = params.get("datasetId")
        if dataset is not None:
            check_entity_id(dataset, "datasetId")
        every = parse_bool(params.get("deleteAll"), "deleteAll")
        await self.hub.store.delete_instances(tenant, entity_id, attr, dataset=dataset, every=every)
        return Response(status_code=204)

    async def delete_entity(self, request: Request) -> Response:
        """DELETE /temporal/entities/{id}: the entity, its whole history and its current state."""
        check_params(request, {"local", "type"})
        await self.hub.delete_temporal(self.ngsi.tenant_of(request), self.ngsi.entity_id_of(request))
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        base = BASE + "/temporal"
        one = base + "/entities/{entity_id:maybe}"
        attr = one + "/attrs/{attr:maybe}"
        return [
            Route(base + "/entities", self.query, methods=["GET"]),
            Route(base + "/entities/", self.query, methods=["GET"]),
            Route(base + "/entities", self.create_or_update, methods=["POST"]),
            Route(base + "/entities/", self.create_or_update, methods=["POST"]),
            Route(one, self.retrieve, methods=["GET"]),
            Route(base + "/entities/{entity_id}", self.delete_entity, methods=["DELETE"]),
            Route(one + "/attrs", self.append_attributes, methods=["POST"]),
            Route(one + "/attrs/", self.append_attributes, methods=["POST"]),
            Route(attr, self.delete_attribute, methods=["DELETE"]),
            # an empty attribute or instance id is a method the path does not have (405), as ETSI checks
            Route(one + "/attrs/{attr}/{instance_id}", self.modify_instance, methods=["PATCH"]),
            Route(attr + "/{instance_id:maybe}", self.delete_instance, methods=["DELETE"]),
            Route(base + "/entityOperations/query", self.query_post, methods=["POST"]),
        ]
