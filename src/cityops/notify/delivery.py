"""Sending one notification to its endpoint: HTTP(S) POST, or an MQTT(S) publish on the topic the
endpoint names (ETSI GS CIM 009 clause 7.2 and annex on the MQTT notification binding).

A sender either returns (the receiver accepted it) or raises ``DeliveryFailed`` with a reason an
operator can read; retrying is the notifier's business.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import aiomqtt
import orjson

from ..hub.context import CORE_CONTEXT_URL, is_core_context_url, link_header
from ..hub.subscription import Endpoint, Subscription

log = logging.getLogger("cityops.notify")


class DeliveryFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Message:
    """A notification ready to send: its final body and the headers (HTTP) or metadata (MQTT)."""

    body: bytes
    headers: dict[str, str]


def context_url(context: Any) -> str:
    """The one @context URL a Link header can carry for a subscription's context."""
    if isinstance(context, str):
        return context
    if isinstance(context, list):
        urls = [c for c in context if isinstance(c, str) and not is_core_context_url(c)]
        if len(urls) == 1 and all(isinstance(c, str) for c in context):
            return urls[0]
    return CORE_CONTEXT_URL


def message_for(subscription: Subscription, tenant: str, body: bytes, notified_at: str) -> Message:
    """The body as stored (without ``notifiedAt``) becomes the body sent: the time is added, and the
    @context when the receiver accepts JSON-LD; otherwise a Link header carries the context."""
    endpoint = subscription.endpoint
    context = subscription.notification_context
    extra = b'{"notifiedAt":' + orjson.dumps(notified_at)
    headers: dict[str, str] = {}
    if endpoint.accept == "application/ld+json":
        member = orjson.dumps(context if context is not None else CORE_CONTEXT_URL)
        extra += b',"@context":' + member
        body = _with_context_in_data(body, member)
        headers["Content-Type"] = "application/ld+json"
    else:
        headers["Content-Type"] = "application/json"
        headers["Link"] = link_header(context_url(context))
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    for item in endpoint.receiver_info:
        headers[item["key"]] = item["value"]
    return Message(extra + b"," + body[1:] if body != b"{}" else extra + b"}", headers)


def _with_context_in_data(body: bytes, context: bytes) -> bytes:
    """Each entity of a JSON-LD notification carries the @context too, as JSON-LD entities do."""
    document = orjson.loads(body)
    document["data"] = [{**entity, "@context": orjson.loads(context)} for entity in document.get("data", [])]
    return orjson.dumps(document)


class HttpSender:
    def __init__(self, timeout: float):
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",))
        return self._session

    async def send(self, endpoint: Endpoint, message: Message) -> None:
        try:
            async with self._client().post(endpoint.uri, data=message.body, headers=message.headers) as response:
                await response.read()
                if response.status >= 300:
                    raise DeliveryFailed(f"the receiver answered HTTP {response.status} {response.reason or ''}".rstrip())
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed("the receiver did not answer in time") from None
        except aiohttp.ClientError as error:
            raise DeliveryFailed(f"could not reach the receiver: {error}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class MqttSender:
    """One long-lived connection per broker (and credentials), reopened when it fails."""

    def __init__(self, timeout: float):
        self._timeout = timeout
        self._clients: dict[tuple[Any, ...], aiomqtt.Client] = {}
        self._lock = asyncio.Lock()

    async def _client(self, key: tuple[Any, ...]) -> aiomqtt.Client:
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                scheme, host, port, username, password, version = key
                client = aiomqtt.Client(
                    host,
                    port,
                    username=username,
                    password=password,
                    identifier=f"cityops-notifier-{uuid.uuid4().hex[:12]}",
                    protocol=aiomqtt.ProtocolVersion.V5 if version == "mqtt5.0" else aiomqtt.ProtocolVersion.V311,
                    tls_context=ssl.create_default_context() if scheme == "mqtts" else None,
                    timeout=self._timeout,
                )
                await asyncio.wait_for(client.__aenter__(), self._timeout)
                self._clients[key] = client
            return client

    async def send(self, endpoint: Endpoint, message: Message) -> None:
        parts = urlsplit(endpoint.uri)
        topic = unquote(parts.path.lstrip("/"))
        if not topic:
            raise DeliveryFailed(f"the MQTT endpoint {endpoint.uri} names no topic")
        info = {item["key"]: item["value"] for item in endpoint.notifier_info}
        qos = int(info.get("MQTT-QoS", "0")) if info.get("MQTT-QoS", "0") in ("0", "1", "2") else 0
        key = (
            parts.scheme,
            parts.hostname,
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            info.get("MQTT-Version", "mqtt3.1.1"),
        )
        payload = b'{"metadata":' + orjson.dumps(message.headers) + b',"body":' + message.body + b"}"
        try:
            client = await self._client(key)
            await asyncio.wait_for(client.publish(topic, payload, qos=qos), self._timeout)
        except (TimeoutError, aiomqtt.MqttError, OSError) as error:
            await self._drop(key)
            raise DeliveryFailed(f"could not publish to the MQTT broker {parts.hostname}:{key[2]}: {error or 'timed out'}") from None

    async def _drop(self, key: tuple[Any, ...]) -> None:
        async with self._lock:
            client = self._clients.pop(key, None)
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception:  # already broken; nothing more to close
                pass

    async def close(self) -> None:
        for key in list(self._clients):
            await self._drop(key)
