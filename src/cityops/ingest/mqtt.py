"""MQTT intake: the IoT agent topics of a real broker, into the gateway's buffer.

Topics (as FIWARE IoT agents use them): ``/<apikey>/<device>/attrs`` (a measure payload),
``/<apikey>/<device>/attrs/<name>`` (one measure's value), the same under ``/ul/`` or ``/json/``
to name the payload format, and ``/<apikey>/<device>/cmdexe`` for command results.

Nothing is lost: the gateway connects with MQTT 5 (``cityops.ingest.mqtt_client``), a persistent
session (``clean_start`` off, a long session expiry) and QoS 1 subscriptions, so the broker keeps
messages while the gateway is away. A QoS 1 message is acknowledged only once its reading (or its dead letter) is committed;
after a crash the broker sends the unacknowledged ones again, and the receipts written with each
reading recognise those already stored. Acknowledgements go out in the order the messages came,
and never across a reconnection (packet ids belong to one connection). Receive Maximum is the
size of the gateway's buffer, so the broker keeps that many messages in flight and holds the rest.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from ..metrics import Metrics
from .intake import Intake, Message, Outcome
from .mqtt_client import MqttConnection, MqttError, Publish

log = logging.getLogger("cityops.mqtt")

SUBSCRIPTIONS = [
    "/+/+/attrs", "/+/+/attrs/+", "/ul/+/+/attrs", "/ul/+/+/attrs/+", "/json/+/+/attrs", "/json/+/+/attrs/+",
    "/+/+/cmdexe", "/ul/+/+/cmdexe", "/json/+/+/cmdexe",
]  # fmt: skip
SESSION_EXPIRY = 7 * 24 * 3600  # seconds the broker keeps the gateway's session (and its messages) while it is away
MAX_RECEIVE = 65535  # the most MQTT 5 allows in flight
KEEPALIVE = 30

CommandResult = Callable[[str, str, bytes, str | None], None]  # (apikey, device id, payload, format)


def parse_topic(topic: str) -> tuple[str | None, str, str, str, str | None] | None:
    """(format, apikey, device id, kind 'attrs' or 'cmdexe', attribute) of an IoT agent topic, or None."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "":
        return None
    fmt = None
    if parts[1] in ("ul", "json") and len(parts) >= 5:
        fmt, parts = parts[1], parts[1:]
    if len(parts) == 4 and parts[3] in ("attrs", "cmdexe"):
        return fmt, parts[1], parts[2], parts[3], None
    if len(parts) == 5 and parts[3] == "attrs" and parts[4]:
        return fmt, parts[1], parts[2], "attrs", parts[4]
    return None


class _Acknowledgements:
    """PUBACKs of one connection, sent in the order the messages came, in one write a loop turn."""

    def __init__(self, connection: MqttConnection):
        self.connection = connection
        self.slots: deque[list[int]] = deque()  # [packet id, state: 0 waiting, 1 acknowledge, 2 skip]
        self._scheduled = False

    def slot(self, packet_id: int) -> Callable[[Outcome, str | None], None]:
        slot = [packet_id, 0]
        self.slots.append(slot)

        def done(outcome: Outcome, detail: str | None) -> None:
            # A failed message is left unacknowledged: the broker sends it again on the next connection.
            slot[1] = 2 if outcome is Outcome.FAILED else 1
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

        return done

    def _flush(self) -> None:
        self._scheduled = False
        ready = []
        slots = self.slots
        while slots and slots[0][1]:
            packet_id, state = slots.popleft()
            if state == 1:
                ready.append(packet_id)
        try:
            self.connection.acknowledge(ready)
        except (OSError, RuntimeError):
            pass  # the connection is gone; the broker sends these again


class MqttIntake:
    def __init__(self, url: str, client_id: str, intake: Intake, metrics: Metrics, *, ca_file: str = "",
                 on_command_result: CommandResult | None = None):  # fmt: skip
        self.url = urlsplit(url)
        self.client_id = client_id
        self.intake = intake
        self.metrics = metrics
        self.on_command_result = on_command_result
        self.tls = ssl.create_default_context(cafile=ca_file or None) if self.url.scheme == "mqtts" else None
        self.connection: MqttConnection | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return f"{self.url.hostname}:{self.port}"

    @property
    def port(self) -> int:
        return self.url.port or (8883 if self.url.scheme == "mqtts" else 1883)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-intake")
        log.info("IoT gateway connecting to the MQTT broker at %s as %s", self.where, self.client_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.metrics.mqtt_connected.set(0)

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                connection = await MqttConnection.open(
                    self.url.hostname or "127.0.0.1", self.port, self.client_id, tls=self.tls, keepalive=KEEPALIVE,
                    session_expiry=SESSION_EXPIRY, receive_maximum=min(MAX_RECEIVE, self.intake.capacity),
                    username=unquote(self.url.username) if self.url.username else None,
                    password=unquote(self.url.password) if self.url.password else None,
                )  # fmt: skip
            except (OSError, MqttError, TimeoutError) as exc:
                log.warning("IoT gateway cannot reach the MQTT broker at %s (%s); trying again in %.0f s", self.where, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            try:
                await self._serve(connection)
            except (MqttError, OSError, ConnectionError) as exc:
                log.warning("IoT gateway lost the MQTT broker at %s (%s); reconnecting", self.where, exc)
            finally:
                self.connected.clear()
                self.connection = None
                self.metrics.mqtt_connected.set(0)
                await connection.close()

    async def _serve(self, connection: MqttConnection) -> None:
        await connection.subscribe(SUBSCRIPTIONS, 1)
        self.connection = connection
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info("IoT gateway connected to the MQTT broker at %s and subscribed to the device topics", self.where)
        acknowledgements = _Acknowledgements(connection)
        watchdog = asyncio.create_task(self._keep_alive(connection))
        try:
            while True:
                publishes = await connection.receive()
                messages = self._messages(publishes, acknowledgements)
                if messages:
                    await self.intake.put_many(messages)
        finally:
            watchdog.cancel()

    async def _keep_alive(self, connection: MqttConnection) -> None:
        """PINGREQ every half keep-alive; a broker silent for 1.5 keep-alives is a lost one."""
        while True:
            await asyncio.sleep(KEEPALIVE / 2)
            if time.monotonic() - connection.last_heard > KEEPALIVE * 1.5:
                log.warning("the MQTT broker at %s stopped answering; dropping the connection", self.where)
                connection.writer.close()
                return
            connection.ping()

    def _messages(self, publishes: list[Publish], acknowledgements: _Acknowledgements) -> list[Message]:
        received = time.time()  # the gateway keeps each device's receipt times apart (Gateway._receipt_times)
        messages = []
        client_id = self.client_id
        for publish in publishes:
            on_done = acknowledgements.slot(publish.packet_id) if publish.qos else None
            topic = publish.topic
            parsed = parse_topic(topic)
            if parsed is None:
                problem = f"topic {topic!r} is not an IoT agent topic (/<apikey>/<device>/attrs)"
                messages.append(Message("mqtt", "", "", publish.payload, received, topic=topic, on_done=on_done, problem=problem))
                continue
            fmt, apikey, device_id, kind, attribute = parsed
            if kind == "cmdexe":
                if self.on_command_result is not None:
                    self.on_command_result(apikey, device_id, publish.payload, fmt)
                if on_done is not None:
                    on_done(Outcome.STORED, None)
                continue
            messages.append(Message(
                "mqtt", apikey, device_id, publish.payload, received, fmt, attribute, topic,
                f"{client_id}|{publish.packet_id}" if publish.qos else None, publish.dup, on_done,
            ))  # fmt: skip
        return messages

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to a device (a command); MqttError when the broker cannot be reached."""
        if self.connection is None:
            raise MqttError(f"the gateway is not connected to the MQTT broker at {self.where}")
        await self.connection.publish(topic, payload, qos)
