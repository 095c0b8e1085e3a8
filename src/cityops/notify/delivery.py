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
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson

from ..hub.context import CORE_CONTEXT_URL, is_core_context_url, link_header
from ..hub.subscription import Endpoint, Subscription

log = logging.getLogger("cityops.notify")


T = TypeVar("T")
CONNECTIONS = 32  # connections at once to one receiver (kept alive; more senders wait their turn)


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


def same_reason(waiting: list[tuple[T, bytes]]) -> list[tuple[T, bytes]]:
    """The first notifications waiting that share the first one's trigger reason."""
    first = _reason(waiting[0][1])
    run = [waiting[0]]
    for item in waiting[1:]:
        if _reason(item[1]) != first:
            break
        run.append(item)
    return run


def _reason(body: bytes) -> Any:
    return orjson.loads(body).get("triggerReason")


def merged(bodies: list[bytes]) -> bytes:
    """Notifications of one subscription (for one reason) waiting together, as one: the first's
    id and reason, every entity in order."""
    documents = [orjson.loads(body) for body in bodies]
    first = documents[0]
    first["data"] = [entity for document in documents for entity in document.get("data", ())]
    return orjson.dumps(first)


def _with_context_in_data(body: bytes, context: bytes) -> bytes:
    """Each entity of a JSON-LD notification carries the @context too, as JSON-LD entities do."""
    document = orjson.loads(body)
    document["data"] = [{**entity, "@context": orjson.loads(context)} for entity in document.get("data", [])]
    return orjson.dumps(document)


class HttpSender:
    """HTTP/1.1 POSTs over kept-alive connections, a small pool per receiver.

    Written on asyncio streams rather than a client library: a notification is one small request
    whose answer only matters by its status, and the hub sends thousands a second from the same
    event loop that serves the API, so each must cost little. Answers are read by Content-Length,
    chunked, or to the end of the connection (HTTP/1.0 receivers)."""

    def __init__(self, timeout: float):
        self._timeout = timeout
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._tls: ssl.SSLContext | None = None

    async def send(self, endpoint: Endpoint, message: Message) -> None:
        parts = urlsplit(endpoint.uri)
        secure = parts.scheme == "https"
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if secure else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(message.body)}"]
        lines += [f"{name}: {value}" for name, value in message.headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + message.body
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(CONNECTIONS)
        try:
            async with slots, asyncio.timeout(self._timeout):
                status, reason = await self._exchange(key, secure, request)
        except TimeoutError:
            raise DeliveryFailed("the receiver did not answer in time") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            raise DeliveryFailed(f"could not reach the receiver: {error or type(error).__name__}") from None
        if status >= 300:
            raise DeliveryFailed(f"the receiver answered HTTP {status} {reason}".rstrip())

    async def _exchange(self, key: tuple[str, str, int], secure: bool, request: bytes) -> tuple[int, str]:
        idle = self._idle.setdefault(key, [])
        while idle:  # a kept-alive connection the receiver may have closed meanwhile: try it, else a new one
            reader, writer = idle.pop()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            try:
                return await self._over(key, reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
        if secure and self._tls is None:
            self._tls = ssl.create_default_context()
        reader, writer = await asyncio.open_connection(key[1], key[2], ssl=self._tls if secure else None, limit=1 << 20)
        try:
            return await self._over(key, reader, writer, request)
        except BaseException:
            writer.close()
            raise

    async def _over(self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, str]:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        keep = version == "HTTP/1.1" and headers.get("connection") != "close"
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif status >= 200 and status not in (204, 304):
            await reader.read()  # no length: the body ends with the connection
            keep = False
        if keep:
            self._idle[key].append((reader, writer))
        else:
            writer.close()
        return status, reason

    async def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()


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
