"""MQTT intake: the IoT agent topics of a real broker, into the gateway's buffer.

Topics (as FIWARE IoT agents use them): ``/<apikey>/<device>/attrs`` (a measure payload),
``/<apikey>/<device>/attrs/<name>`` (one measure's value), the same under ``/ul/`` or ``/json/``
to name the payload format, and ``/<apikey>/<device>/cmdexe`` for command results.

Nothing is lost: the gateway connects with MQTT 5, a persistent session (``clean_start`` off, a
long session expiry) and QoS 1 subscriptions, so the broker keeps messages while the gateway is
away. A QoS 1 message is acknowledged only once its reading (or its dead letter) is committed;
after a crash the broker sends the unacknowledged ones again, and the receipts written with each
reading recognise those already stored. Acknowledgements go out in the order the messages came,
and never across a reconnection (packet ids belong to one connection). Receive Maximum is the
size of the gateway's buffer, so the broker keeps that many messages in flight and holds the rest.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..metrics import Metrics
from .intake import Intake, Message, Outcome

log = logging.getLogger("cityops.mqtt")

SUBSCRIPTIONS = [
    "/+/+/attrs", "/+/+/attrs/+", "/ul/+/+/attrs", "/ul/+/+/attrs/+", "/json/+/+/attrs", "/json/+/+/attrs/+",
    "/+/+/cmdexe", "/ul/+/+/cmdexe", "/json/+/+/cmdexe",
]  # fmt: skip
SESSION_EXPIRY = 7 * 24 * 3600  # seconds the broker keeps the gateway's session (and its messages) while it is away
MAX_RECEIVE = 65535  # the most MQTT 5 allows in flight

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


class MqttIntake:
    def __init__(self, url: str, client_id: str, intake: Intake, metrics: Metrics, *, ca_file: str = "",
                 on_command_result: CommandResult | None = None):  # fmt: skip
        self.url = urlsplit(url)
        self.client_id = client_id
        self.intake = intake
        self.metrics = metrics
        self.on_command_result = on_command_result
        self._stopping = threading.Event()
        self._generation = 0  # raised on every (re)connection; acks of an older one are not sent
        self._ack_lock = threading.Lock()
        self._in_order: dict[int, deque[list[int | bool]]] = {}  # generation -> slots in receipt order
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
        )
        if self.url.username:
            self.client.username_pw_set(unquote(self.url.username), unquote(self.url.password or ""))
        if self.url.scheme == "mqtts":
            context = ssl.create_default_context(cafile=ca_file or None)
            self.client.tls_set_context(context)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._receive_maximum = min(MAX_RECEIVE, intake.capacity)

    @property
    def where(self) -> str:
        return f"{self.url.hostname}:{self.url.port or (8883 if self.url.scheme == 'mqtts' else 1883)}"

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY
        properties.ReceiveMaximum = self._receive_maximum
        port = self.url.port or (8883 if self.url.scheme == "mqtts" else 1883)
        self.client.connect_async(self.url.hostname or "127.0.0.1", port, keepalive=30, clean_start=False, properties=properties)
        self.client.loop_start()
        log.info("IoT gateway connecting to the MQTT broker at %s as %s", self.where, self.client_id)

    def stop(self) -> None:
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.mqtt_connected.set(0)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("the MQTT broker at %s refused the gateway: %s", self.where, reason)
            return
        with self._ack_lock:
            self._generation += 1
            self._in_order = {self._generation: deque()}
        client.subscribe([(topic, 1) for topic in SUBSCRIPTIONS])
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info("IoT gateway connected to the MQTT broker at %s and subscribed to the device topics", self.where)

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.connected.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stopping.is_set():
            log.warning("IoT gateway lost the MQTT broker at %s (%s); reconnecting", self.where, reason)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        received = time.time()
        topic = msg.topic
        parsed = parse_topic(topic)
        generation = self._generation
        on_done = None
        if msg.qos > 0:
            slot: list[int | bool] = [msg.mid, False, False]  # packet id, to acknowledge, settled
            with self._ack_lock:
                self._in_order.setdefault(generation, deque()).append(slot)
            on_done = self._acknowledger(generation, slot)
        if parsed is None:
            problem = f"topic {topic!r} is not an IoT agent topic (/<apikey>/<device>/attrs)"
            self.intake.put_blocking(Message("mqtt", "", "", msg.payload, received, topic=topic, on_done=on_done, problem=problem), self._stopping)
            return
        fmt, apikey, device_id, kind, attribute = parsed
        if kind == "cmdexe":
            if self.on_command_result is not None:
                self.on_command_result(apikey, device_id, msg.payload, fmt)
            if on_done is not None:
                on_done(Outcome.STORED, None)
            return
        message = Message(
            "mqtt", apikey, device_id, msg.payload, received, fmt, attribute, topic,
            receipt=f"{self.client_id}|{msg.mid}" if msg.qos > 0 else None, redelivered=bool(msg.dup), on_done=on_done,
        )  # fmt: skip
        self.intake.put_blocking(message, self._stopping)

    def _acknowledger(self, generation: int, slot: list[int | bool]) -> Callable[[Outcome, str | None], None]:
        def done(outcome: Outcome, detail: str | None) -> None:
            # A failed message is left unacknowledged (the broker sends it again on the next
            # connection); the ones after it are acknowledged as they settle.
            with self._ack_lock:
                slot[1] = outcome is not Outcome.FAILED
                slot[2] = True
                pending = self._in_order.get(generation)
                if pending is None:
                    return
                while pending and pending[0][2]:
                    mid, acknowledge, _ = pending.popleft()
                    if acknowledge:
                        self.client.ack(int(mid), 1)

        return done
