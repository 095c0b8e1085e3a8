"""The IoT gateway over a real Mosquitto broker: topics and formats, acknowledgement after
storage, a broker restart in the middle of a stream, the gateway down while devices publish."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from starlette.testclient import TestClient

from cityops.api.app import CityOps, create_app
from cityops.ingest.intake import Message, Outcome
from cityops.ingest.mqtt_client import MqttConnection, MqttError
from cityops.settings import Settings
from mosquitto import Mosquitto, self_signed_certificate

SERVICE = {"fiware-service": "anyang", "fiware-servicepath": "/"}
TENANT = {"NGSILD-Tenant": "anyang"}
GROUP = {
    "apikey": "k1",
    "resource": "/iot/d",
    "entity_type": "Sensor",
    "autoprovision": True,
    "attributes": [{"object_id": "t", "name": "temperature", "type": "Number"}, {"object_id": "s", "name": "seq", "type": "Integer"}],
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def with_broker(settings: Settings, broker: Mosquitto) -> Settings:
    return Settings(**{**settings.__dict__, "mqtt_url": broker.url, "mqtt_client_id": f"gw-{uuid.uuid4().hex[:8]}"})


class Device:
    """A device publishing with paho while the broker stays up."""

    def __init__(self, broker: Mosquitto):
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}")
        self.client.connect(host="127.0.0.1", port=broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def publish_carefully(broker: Mosquitto, messages: list[tuple[str, str]], restart_at: int | None = None) -> None:
    """Publish at QoS 1 as a careful device does: each message until the broker acknowledges it,
    reconnecting when the broker goes away (and restarting the broker once, at ``restart_at``)."""
    connection: MqttConnection | None = None
    reader: asyncio.Task[None] | None = None

    async def read(c: MqttConnection) -> None:
        while True:
            await c.receive()

    for index, (topic, payload) in enumerate(messages):
        if index == restart_at:
            await asyncio.to_thread(broker.restart)
        while True:
            try:
                if connection is None:
                    connection = await MqttConnection.open(
                        "127.0.0.1", broker.port, "careful-device", tls=None, keepalive=30, session_expiry=0,
                        receive_maximum=100, username=None, password=None,
                    )  # fmt: skip
                    reader = asyncio.create_task(read(connection))
                await connection.publish(topic, payload.encode(), 1, timeout=5)
                break
            except (MqttError, OSError, TimeoutError):
                if reader is not None:
                    reader.cancel()
                if connection is not None:
                    await connection.close()
                connection = None
                await asyncio.sleep(0.2)
    if reader is not None:
        reader.cancel()
    if connection is not None:
        await connection.close()


def wait_for(check: Any, timeout: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def observed(seq: int) -> str:
    return f"2026-12-07T10:{seq // 60000:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}Z"


def provision(client: TestClient) -> None:
    assert client.post("/iot/services", json={"services": [GROUP]}, headers=SERVICE).status_code == 201


def seq_values(client: TestClient, device: str) -> list[int]:
    response = client.get(
        f"/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Sensor:{device}", params={"attrs": "seq", "lastN": 100000}, headers=TENANT
    )
    if response.status_code == 404:
        return []
    return [i["value"] for i in response.json().get("seq", [])]


def connected(client: TestClient) -> bool:
    return "cityops_mqtt_connected 1.0" in client.get("/metrics").text


@pytest.mark.service
def test_measures_over_mqtt_in_every_topic_form(settings: Settings, broker: Mosquitto) -> None:
    with TestClient(create_app(with_broker(settings, broker)), raise_server_exceptions=False) as client:
        provision(client)
        wait_for(lambda: connected(client), what="the gateway to connect")
        device = Device(broker)
        device.publish("/k1/d1/attrs", "t|20|s|1")
        device.publish("/ul/k1/d2/attrs", "t|21|s|1", qos=0)
        device.publish("/json/k1/d3/attrs", '{"t": 22, "s": 1}')
        device.publish("/k1/d4/attrs/t", "23")
        device.publish("/k1/d5/nonsense", "t|1")  # not subscribed: never seen
        device.publish("/ul/k1/d6/attrs", "t|1|s")  # malformed: a dead letter

        def value(device_id: str) -> Any:
            response = client.get(f"/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:{device_id}", headers=TENANT)
            return response.json().get("temperature", {}).get("value") if response.status_code == 200 else None

        wait_for(lambda: [value(d) for d in ("d1", "d2", "d3", "d4")] == [20, 21, 22, 23], what="the four readings")
        wait_for(lambda: client.get("/iot/deadletters", headers=SERVICE).json()["count"] == 1, what="the dead letter")
        letter = client.get("/iot/deadletters", headers=SERVICE).json()["deadLetters"][0]
        assert letter["topic"] == "/ul/k1/d6/attrs" and letter["reason"] == "malformed"
        device.close()


@pytest.mark.service
def test_broker_restart_in_the_middle_of_a_stream_loses_no_qos1_message(settings: Settings, broker: Mosquitto) -> None:
    total = 1500
    with TestClient(create_app(with_broker(settings, broker)), raise_server_exceptions=False) as client:
        provision(client)
        wait_for(lambda: connected(client), what="the gateway to connect")
        # timestamped readings: a device sending one again after the restart cannot double it
        messages = [(f"/k1/dev-{seq % 5}/attrs", f"{observed(seq)}|t|{seq % 30}|s|{seq}") for seq in range(total)]
        asyncio.run(publish_carefully(broker, messages, restart_at=total // 2))
        wait_for(lambda: sum(len(seq_values(client, f"dev-{d}")) for d in range(5)) >= total, timeout=120, what="every reading")
        stored = sorted(v for d in range(5) for v in seq_values(client, f"dev-{d}"))
        assert stored == list(range(total))  # every one, once
        assert connected(client)


@pytest.mark.service
def test_messages_sent_while_the_gateway_is_down_are_stored_when_it_returns(settings: Settings, broker: Mosquitto) -> None:
    settings = with_broker(settings, broker)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        provision(client)
        wait_for(lambda: connected(client), what="the gateway to connect")
    device = Device(broker)
    for seq in range(200):
        device.publish("/k1/dev-0/attrs", f"t|1|s|{seq}")
    time.sleep(0.5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_for(lambda: len(seq_values(client, "dev-0")) >= 200, what="the readings kept by the broker")
        assert sorted(seq_values(client, "dev-0")) == list(range(200))
    device.close()


def test_a_redelivered_message_is_not_stored_twice(settings: Settings) -> None:
    async def scenario() -> list[Outcome]:
        cityops = CityOps(settings)
        await cityops.start()
        try:
            await cityops.provisioner.create_groups("anyang", "/", {"services": [GROUP]})

            def message(payload: bytes, redelivered: bool) -> Message:
                return Message("mqtt", "k1", "d1", payload, time.time(), "ul", topic="/ul/k1/d1/attrs", receipt="gw|7", redelivered=redelivered)

            outcomes = []
            for payload, redelivered in ((b"t|1|s|1", False), (b"t|1|s|1", True), (b"t|1|s|2", True)):
                outcome, _ = await cityops.gateway.submit(message(payload, redelivered))
                outcomes.append(outcome)
            return outcomes
        finally:
            await cityops.stop()

    # the same packet id again with the same message is the broker's redelivery; with another message it is new
    assert asyncio.run(scenario()) == [Outcome.STORED, Outcome.DUPLICATE, Outcome.STORED]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert sorted(seq_values(client, "d1")) == [1, 2]


@pytest.mark.service
def test_a_command_goes_to_the_device_and_its_result_comes_back(settings: Settings, broker: Mosquitto) -> None:
    received: list[bytes] = []
    device = Device(broker)
    device.client.on_message = lambda client, userdata, message: received.append(message.payload)
    device.client.subscribe("/k1/light-1/cmd", qos=1)
    with TestClient(create_app(with_broker(settings, broker)), raise_server_exceptions=False) as client:
        provision(client)
        light = {"device_id": "light-1", "entity_type": "Streetlight", "apikey": "k1", "commands": [{"name": "dim"}]}
        assert client.post("/iot/devices", json={"devices": [light]}, headers=SERVICE).status_code == 201
        wait_for(lambda: connected(client), what="the gateway to connect")

        def status() -> tuple[Any, Any]:
            entity = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:light-1", headers=TENANT).json()
            return entity.get("dim_status", {}).get("value"), entity.get("dim_info", {}).get("value")

        unknown = client.post("/iot/devices/light-1/commands", json={"command": "explode"}, headers=SERVICE)
        assert unknown.status_code == 400 and "no command 'explode'" in unknown.json()["detail"]
        assert client.post("/iot/devices/nobody/commands", json={"command": "dim"}, headers=SERVICE).status_code == 404
        assert client.post("/iot/devices/light-1/commands", json={"command": "dim", "value": 50}, headers=SERVICE).status_code == 202
        wait_for(lambda: received == [b"light-1@dim|50"], what="the command at the device")
        wait_for(lambda: status() == ("DELIVERED", None), what="the DELIVERED status")
        device.publish("/k1/light-1/cmdexe", "light-1@dim|dimmed to 50")
        wait_for(lambda: status() == ("OK", "dimmed to 50"), what="the device's result")
        history = client.get(
            "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Streetlight:light-1", params={"attrs": "dim_status"}, headers=TENANT
        ).json()
        assert [i["value"] for i in history["dim_status"]] == ["PENDING", "DELIVERED", "OK"]
    device.close()


@pytest.mark.service
def test_a_broker_with_tls_and_passwords(settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    broker = Mosquitto(tmp_path, users={"gateway": "s3cret", "device": "d3vice"}, tls=(certificate, key))
    broker.start()
    try:
        refused = Settings(**{**settings.__dict__, "mqtt_url": f"mqtts://gateway:wrong@127.0.0.1:{broker.port}",
                              "mqtt_ca_file": str(certificate)})  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="cityops.mqtt"), TestClient(create_app(refused), raise_server_exceptions=False) as client:
            wait_for(lambda: "refused the connection" in caplog.text, what="the broker to refuse a wrong password")
            assert not connected(client)  # a wrong password: not connected, retrying, a warning in the log
        good = Settings(**{**settings.__dict__, "mqtt_url": f"mqtts://gateway:s3cret@127.0.0.1:{broker.port}",
                           "mqtt_ca_file": str(certificate), "mqtt_client_id": "gw-tls"})  # fmt: skip
        with TestClient(create_app(good), raise_server_exceptions=False) as client:
            provision(client)
            wait_for(lambda: connected(client), what="the gateway to connect over TLS")
            device = paho.Client(CallbackAPIVersion.VERSION2, client_id="dev-tls")
            device.username_pw_set("device", "d3vice")
            device.tls_set(ca_certs=str(certificate))
            device.connect("127.0.0.1", broker.port)
            device.loop_start()
            device.publish("/k1/secure-1/attrs", "t|30|s|1", qos=1).wait_for_publish(10)
            device.loop_stop()
            device.disconnect()
            wait_for(lambda: seq_values(client, "secure-1") == [1], what="the reading sent over TLS")
    finally:
        broker.stop()
