"""The IoT gateway's HTTP API, as FIWARE IoT agents serve it: provisioning (``/iot/services``,
``/iot/devices``), measures over HTTP (``/iot/d`` UltraLight, ``/iot/json`` JSON) and the
dead-letter list (``/iot/deadletters``). Scoped by ``fiware-service`` (the tenant) and
``fiware-servicepath``. Errors are ProblemDetails, as on the NGSI-LD API.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..hub.errors import BadRequestData, InvalidRequest, ResourceNotFound, ServiceUnavailable
from ..hub.timestamps import iso_from_epoch
from ..ingest.commands import Commands
from ..ingest.gateway import Gateway
from ..ingest.intake import Message, Outcome
from ..ingest.provisioner import Provisioner
from ..ingest.provisioning import check_service_path, tenant_of
from ..ingest.registry import DEAD_LETTER, SEEN, Provisioned
from .http import json_response, parse_json, read_body

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def _scope(request: Request) -> tuple[str, str]:
    return tenant_of(request.headers.get("fiware-service")), check_service_path(request.headers.get("fiware-servicepath"))


def _page(request: Request) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise InvalidRequest("limit and offset must be whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, offset at least 0")
    return limit, offset


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise InvalidRequest(f"the query parameter '{name}' is required")
    return value


class IotApi:
    def __init__(self, gateway: Gateway, provisioner: Provisioner, commands: Commands, max_body: int):
        self.gateway = gateway
        self.provisioner = provisioner
        self.commands = commands
        self.max_body = max_body

    def routes(self) -> list[Route]:
        return [
            Route("/iot/services", self.create_services, methods=["POST"]),
            Route("/iot/services", self.list_services, methods=["GET"]),
            Route("/iot/services", self.update_service, methods=["PUT"]),
            Route("/iot/services", self.delete_service, methods=["DELETE"]),
            Route("/iot/devices", self.create_devices, methods=["POST"]),
            Route("/iot/devices", self.list_devices, methods=["GET"]),
            Route("/iot/devices/{device_id}", self.get_device, methods=["GET"]),
            Route("/iot/devices/{device_id}", self.update_device, methods=["PUT"]),
            Route("/iot/devices/{device_id}", self.delete_device, methods=["DELETE"]),
            Route("/iot/devices/{device_id}/commands", self.send_command, methods=["POST"]),
            Route("/iot/d", self.measures_ul, methods=["POST", "GET"]),
            Route("/iot/json", self.measures_json, methods=["POST"]),
            Route("/iot/deadletters", self.dead_letters, methods=["GET"]),
        ]

    # -- provisioning ------------------------------------------------------------------------
    async def _body(self, request: Request) -> Any:
        return parse_json(await read_body(request, self.max_body))

    async def create_services(self, request: Request) -> Response:
        tenant, path = _scope(request)
        await self.provisioner.create_groups(tenant, path, await self._body(request))
        return Response(status_code=201)

    async def list_services(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        limit, offset = _page(request)
        groups, count = await self.provisioner.groups(tenant, limit, offset)
        return json_response({"count": count, "services": [g.to_json() for g in groups]})

    async def update_service(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        await self.provisioner.update_group(tenant, _required(request, "resource"), _required(request, "apikey"), await self._body(request))
        return Response(status_code=204)

    async def delete_service(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        await self.provisioner.delete_group(tenant, _required(request, "resource"), _required(request, "apikey"))
        return Response(status_code=204)

    async def create_devices(self, request: Request) -> Response:
        tenant, path = _scope(request)
        await self.provisioner.create_devices(tenant, path, await self._body(request))
        return Response(status_code=201)

    async def _device_json(self, provisioned: Provisioned) -> dict[str, Any]:
        body = provisioned.device.to_json()
        body["service"] = provisioned.tenant
        body["created"] = iso_from_epoch(provisioned.created)
        store = self.provisioner.hub.store
        seen = await store.record(provisioned.tenant, SEEN, provisioned.device.device_id)
        if seen is not None:  # devices with an expected interval
            body["lastSeen"] = iso_from_epoch(seen["at"])
        else:
            entity = await store.get(provisioned.tenant, provisioned.device.entity_name)
            if entity is not None and entity["modifiedAt"] != entity["createdAt"]:
                body["lastSeen"] = entity["modifiedAt"]
        return body

    async def list_devices(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        limit, offset = _page(request)
        devices, count = await self.provisioner.devices(tenant, limit, offset)
        return json_response({"count": count, "devices": [await self._device_json(d) for d in devices]})

    async def get_device(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        return json_response(await self._device_json(await self.provisioner.device(tenant, request.path_params["device_id"])))

    async def update_device(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        await self.provisioner.update_device(tenant, request.path_params["device_id"], await self._body(request))
        return Response(status_code=204)

    async def delete_device(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        await self.provisioner.delete_device(tenant, request.path_params["device_id"])
        return Response(status_code=204)

    async def send_command(self, request: Request) -> Response:
        """Body ``{"command": "dim", "value": 50}``: owed to the device at once, delivered in the background."""
        tenant, _ = _scope(request)
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise BadRequestData("the body must be an object with 'command' (a name) and optionally 'value'")
        await self.commands.request(tenant, request.path_params["device_id"], body["command"], body.get("value"))
        return Response(status_code=202)

    # -- measures ----------------------------------------------------------------------------
    async def measures_ul(self, request: Request) -> Response:
        if request.method == "GET":  # UltraLight devices may send the payload in the query (?d=...)
            payload = _required(request, "d").encode()
        else:
            payload = await read_body(request, self.max_body)
        return await self._measures(request, payload, "ul")

    async def measures_json(self, request: Request) -> Response:
        return await self._measures(request, await read_body(request, self.max_body), "json")

    async def _measures(self, request: Request, payload: bytes, fmt: str) -> Response:
        apikey, device_id = _required(request, "k"), _required(request, "i")
        message = Message("http", apikey, device_id, payload, time.time(), fmt, topic=request.url.path)
        outcome, detail = await self.gateway.submit(message)
        if outcome in (Outcome.STORED, Outcome.DUPLICATE):
            return Response(status_code=200)
        if outcome is Outcome.DEAD_LETTER:
            if message.refusal == "unknown_device":
                raise ResourceNotFound(f"{detail} (kept in the dead-letter list)")
            raise BadRequestData(f"{detail} (kept in the dead-letter list)")
        raise ServiceUnavailable(f"the measures could not be stored: {detail}; send them again")

    # -- dead letters ------------------------------------------------------------------------
    async def dead_letters(self, request: Request) -> Response:
        tenant, _ = _scope(request)
        limit, offset = _page(request)
        store = self.provisioner.hub.store
        count = await store.record_count(tenant, DEAD_LETTER)
        # newest first: the list is ordered by key (the time it was refused), so page from the end
        start = max(0, count - offset - limit)
        rows = await store.records(tenant, DEAD_LETTER, limit=max(0, min(limit, count - offset)), offset=start)
        return json_response({"count": count, "deadLetters": [dict(doc, id=key) for key, doc in reversed(rows)]})

