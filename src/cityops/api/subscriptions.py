"""The NGSI-LD subscription API at /ngsi-ld/v1/subscriptions (ETSI GS CIM 009 clause 6.10-6.11)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..hub.entity import check_entity_id
from ..hub.errors import BadRequestData, TooManyResults
from ..notify.subscriptions import Subscriptions
from .http import JSON, JSON_LD, location, parse_bool, parse_int
from .ngsi_ld import BASE, NgsiLdApi, check_params


class SubscriptionApi:
    def __init__(self, ngsi: NgsiLdApi, subscriptions: Subscriptions):
        self.ngsi = ngsi
        self.subscriptions = subscriptions

    @staticmethod
    def subscription_id_of(request: Request) -> str:
        subscription_id = request.path_params["subscription_id"]
        if not subscription_id:
            raise BadRequestData("the path has no subscription id")
        return check_entity_id(subscription_id, "subscription id")

    async def create(self, request: Request) -> Response:
        check_params(request, set())
        body, media = await self.ngsi.read_payload(request)
        terms, context = await self.ngsi.payload_terms(request, body, media)
        subscription_id = await self.subscriptions.create(self.ngsi.tenant_of(request), body, terms, context)
        return Response(status_code=201, headers=location(f"{BASE}/subscriptions/{subscription_id}"))

    async def query(self, request: Request) -> Response:
        check_params(request, {"limit", "offset", "count", "local"})
        negotiated = await self.ngsi.negotiate(request, allowed=(JSON, JSON_LD))
        params = request.query_params
        settings = self.ngsi.settings
        limit = parse_int(params.get("limit"), "limit", settings.default_page_size)
        offset = parse_int(params.get("offset"), "offset", 0)
        if limit > settings.max_page_size:
            raise TooManyResults(f"limit {limit} is above the maximum page size {settings.max_page_size}; page with offset")
        found, count = await self.subscriptions.query(negotiated.tenant, limit, offset, negotiated.terms)
        headers = {"NGSILD-Results-Count": str(count)} if parse_bool(params.get("count"), "count") else {}
        pages = []
        if offset > 0:
            pages.append(self._page_link(max(0, offset - limit), limit, "prev"))
        if offset + limit < count:
            pages.append(self._page_link(offset + limit, limit, "next"))
        if pages:
            context_link = [] if negotiated.accept == JSON_LD else [negotiated.link_header()["Link"]]
            headers["Link"] = ", ".join(context_link + pages)
        return self.ngsi.respond(negotiated, found, headers=headers)

    @staticmethod
    def _page_link(offset: int, limit: int, relation: str) -> str:
        return f'<{BASE}/subscriptions?limit={limit}&offset={offset}>; rel="{relation}"; type="application/ld+json"'

    async def retrieve(self, request: Request) -> Response:
        check_params(request, {"local"})
        negotiated = await self.ngsi.negotiate(request, allowed=(JSON, JSON_LD))
        found = await self.subscriptions.retrieve(negotiated.tenant, self.subscription_id_of(request), negotiated.terms)
        return self.ngsi.respond(negotiated, found)

    async def update(self, request: Request) -> Response:
        check_params(request, set())
        body, media = await self.ngsi.read_payload(request, patch=True)
        subscription_id = self.subscription_id_of(request)
        terms = context = None
        if media == JSON_LD or request.headers.get("link"):
            terms, context = await self.ngsi.payload_terms(request, body, media)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "@context"}
        await self.subscriptions.update(self.ngsi.tenant_of(request), subscription_id, body, terms, context)
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        check_params(request, set())
        await self.subscriptions.delete(self.ngsi.tenant_of(request), self.subscription_id_of(request))
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        collection = BASE + "/subscriptions"
        one = collection + "/{subscription_id:maybe}"
        routes = []
        for path in (collection, collection + "/"):
            routes += [Route(path, self.query, methods=["GET"]), Route(path, self.create, methods=["POST"])]
        routes += [
            Route(one, self.retrieve, methods=["GET"]),
            # without an id these are methods the collection does not have: 405, as ETSI checks
            Route(collection + "/{subscription_id}", self.update, methods=["PATCH"]),
            Route(collection + "/{subscription_id}", self.delete, methods=["DELETE"]),
        ]
        return routes
