"""The HTTP application: composes the API modules over one hub and turns every error into
ProblemDetails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..bus.bus import InProcessBus
from ..hub.context import ContextResolver, make_http_fetcher
from ..hub.errors import InternalError, MethodNotAllowed, NgsiError, ResourceNotFound
from ..hub.hub import Hub
from ..hub.retention import HistoryRetention, RetentionPolicy
from ..ingest.commands import Commands
from ..ingest.gateway import Gateway
from ..ingest.liveness import Liveness
from ..ingest.mapping import Mapper
from ..ingest.mqtt import MqttIntake
from ..ingest.provisioner import Provisioner
from ..ingest.registry import DeviceRegistry
from ..metrics import Metrics
from ..notify.notifier import Notifier
from ..notify.registry import SubscriptionRegistry
from ..notify.subscriptions import Subscriptions
from ..settings import Settings
from ..store.factory import store_for
from .http import json_response, problem_response
from .iot import IotApi
from .ngsi_ld import NgsiLdApi
from .subscriptions import SubscriptionApi
from .temporal import TemporalApi

log = logging.getLogger("cityops.api")


class CityOps:
    """The running parts of one CityOps process: settings, store, hub, context resolver."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = store_for(settings)
        self.bus = InProcessBus()
        self.hub = Hub(self.store, bus=self.bus, max_batch_size=settings.max_batch_size)
        self.fetcher = make_http_fetcher(settings.context_fetch_timeout)
        self.resolver = ContextResolver(
            preloaded=settings.preload_contexts, fetcher=self.fetcher, cache_size=settings.context_cache_size
        )
        self.registry = SubscriptionRegistry()
        self.store.add_write_hook(self.registry.owed)
        self.notifier = Notifier(self.store, self.registry, settings)
        self.subscriptions = Subscriptions(self.store, self.resolver, self.notifier.live_status)
        self.bus.subscribe("notifier", self.notifier.on_changes)
        policy = RetentionPolicy.parse(settings.history_retention, self.resolver.core)  # checked by Settings
        self.retention = HistoryRetention(self.store, policy)
        self.leader = self.store.leader()
        self._duties: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.devices = DeviceRegistry(self.store)
        self.mapper = Mapper(self.resolver.core)
        self.provisioner = Provisioner(self.hub, self.devices, self.mapper)
        self.gateway = Gateway(
            self.hub, self.devices, self.provisioner, self.mapper, self.metrics,
            batch_size=settings.ingest_batch, max_payload=settings.ingest_max_payload, dead_letters_kept=settings.dead_letters_kept,
        )  # fmt: skip
        self.liveness = Liveness(self.hub, self.devices, self.metrics, self.mapper)
        self.commands = Commands(self.hub, self.devices, self.mapper, self.metrics)
        self.mqtt: MqttIntake | None = None

    async def start(self) -> None:
        await self.store.open()
        await self.bus.start()
        if self.settings.iot_context:
            self.mapper.terms = await self.resolver.resolve(self.settings.iot_context)
        await self.devices.start()
        await self.gateway.start(self.settings.ingest_queue)
        self._duties = asyncio.create_task(self._lead(), name="leader")

    async def _lead(self) -> None:
        """Wait to be the process that runs the background duties, run them while it leads."""
        while True:
            await self.leader.acquire()
            await self.notifier.start()
            await self.retention.start()
            await self.liveness.start()
            await self._start_mqtt()
            await self.commands.start()
            await self.leader.wait_lost()
            await self._stop_mqtt()  # another process leads now; two must not share the gateway's MQTT session
            await self.notifier.stop()  # two must not deliver
            await self.retention.stop()
            await self.liveness.stop()
            await self.commands.stop()

    async def _start_mqtt(self) -> None:
        if not self.settings.mqtt_url or self.gateway.intake is None:
            return
        self.mqtt = MqttIntake(
            self.settings.mqtt_url, self.settings.mqtt_client_id, self.gateway.intake, self.metrics,
            ca_file=self.settings.mqtt_ca_file, on_command_result=self.commands.on_result,
        )  # fmt: skip
        self.commands.publish = self.mqtt.publish
        await self.mqtt.start()

    async def _stop_mqtt(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.stop()
            self.mqtt = None

    async def stop(self) -> None:
        await self._stop_mqtt()
        await self.gateway.stop()
        await self.bus.stop()
        if self._duties is not None:
            self._duties.cancel()
        await self.notifier.stop()
        await self.retention.stop()
        await self.liveness.stop()
        await self.commands.close()
        await self.devices.stop()
        await self.leader.release()
        await self.store.close()
        await self.fetcher.close()


async def ngsi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NgsiError)
    if exc.status >= 500:
        level = logging.ERROR if exc.status == 500 else logging.WARNING
        log.log(level, "%s %s answered %d: %s", request.method, request.url.path, exc.status, exc.detail)
    return problem_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem_response(ResourceNotFound(f"no resource at {request.url.path}"))
    if exc.status_code == 405:
        return problem_response(MethodNotAllowed(f"{request.method} is not supported on {request.url.path}"))
    error = NgsiError(str(exc.detail), status=exc.status_code, title="HTTP error")
    error.kind = "InvalidRequest" if exc.status_code < 500 else "InternalError"
    return problem_response(error)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s: unexpected failure", request.method, request.url.path)
    return problem_response(InternalError("the server failed to handle this request; the failure is logged"))


def create_app(settings: Settings | None = None, cityops: CityOps | None = None) -> Starlette:
    """The ASGI app; without arguments (as server workers call it) settings come from the environment."""
    if settings is None:
        settings = Settings.load()
        from ..cli import configure_logging

        configure_logging(settings.log_level)
    cityops = cityops or CityOps(settings)
    api = NgsiLdApi(cityops.hub, cityops.resolver, settings)
    temporal = TemporalApi(api)
    subscriptions = SubscriptionApi(api, cityops.subscriptions)

    iot = IotApi(cityops.gateway, cityops.provisioner, cityops.commands, settings.max_body_bytes)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(request: Request) -> Response:
        cityops.metrics.ingest_queue.set(len(cityops.gateway.intake or ()))
        body, media_type = cityops.metrics.exposition()
        return Response(body, media_type=media_type)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await cityops.start()
        log.info("CityOps hub ready: NGSI-LD API at http://%s:%s/ngsi-ld/v1", settings.host, settings.port)
        try:
            yield
        finally:
            await cityops.stop()
            log.info("CityOps hub stopped; all accepted changes are on disk")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
            *api.routes(), *temporal.routes(), *subscriptions.routes(), *iot.routes(),
        ],  # fmt: skip
        exception_handlers={NgsiError: ngsi_error, HTTPException: http_error, Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.cityops = cityops
    return app
