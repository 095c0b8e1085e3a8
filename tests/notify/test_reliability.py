"""Notifications are at least once and in order: through a receiver outage, through kill -9 of the
server, across worker processes, and over MQTT to a real Mosquitto broker."""

from __future__ import annotations

import json
import os
import queue
import signal
import time
import uuid

import httpx
import paho.mqtt.client as mqtt
import pytest

from conftest import Api, camera, require_service
from receiver import Receiver
from server_process import free_port, serving

FAST_RETRIES = {"CITYOPS_NOTIFY_BACKOFF_MAX": "2"}


def subscribe(base: str, uri: str, **members: object) -> str:
    body = {"type": "Subscription", "entities": [{"type": "Meter"}], "notification": {"endpoint": {"uri": uri}}, **members}
    response = httpx.post(f"{base}/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def meter(value: int) -> dict[str, object]:
    return {"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "reading": {"type": "Property", "value": value}}


def readings(receiver: Receiver) -> list[int]:
    return [entity["reading"]["value"] for body in receiver.bodies() for entity in body["data"]]


def first_occurrences(values: list[int]) -> list[int]:
    seen: set[int] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


def set_reading(client: httpx.Client, base: str, value: int) -> None:
    response = client.patch(f"{base}/entities/urn:ngsi-ld:Meter:1/attrs", json={"reading": {"type": "Property", "value": value}})
    assert response.status_code == 204, response.text


@pytest.mark.slow
def test_receiver_down_for_30_seconds_gets_every_notification_in_order(database: str) -> None:
    receiver = Receiver()
    with serving(database, env=FAST_RETRIES) as (_, base), httpx.Client(timeout=5) as client:
        subscribe(base, receiver.url)
        assert client.post(f"{base}/entities", json=meter(0)).status_code == 201
        receiver.wait_for(1)
        receiver.stop()
        for value in range(1, 61):  # 30 s of changes while the receiver is down
            set_reading(client, base, value)
            time.sleep(0.5)
        receiver.start()
        receiver.wait_for_data(61, timeout=30)
        assert first_occurrences(readings(receiver)) == list(range(61))
        assert readings(receiver)[-1] == 60
    receiver.stop()


@pytest.mark.slow
def test_kill_9_with_notifications_pending_loses_none(database: str) -> None:
    receiver = Receiver()
    receiver.stop()  # down from the start: every notification stays pending
    port = free_port()
    with serving(database, env=FAST_RETRIES, port=port) as (server, base), httpx.Client(timeout=5) as client:
        subscribe(base, receiver.url)
        assert client.post(f"{base}/entities", json=meter(0)).status_code == 201
        for value in range(1, 100):
            set_reading(client, base, value)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    receiver.start()
    with serving(database, env=FAST_RETRIES, port=port) as (_, base):
        receiver.wait_for_data(100, timeout=30)
        assert first_occurrences(readings(receiver)) == list(range(100))
        history = httpx.get(f"{base}/temporal/entities/urn:ngsi-ld:Meter:1").json()["reading"]
        assert [instance["value"] for instance in history] == list(range(100))
    receiver.stop()


@pytest.mark.slow
def test_a_subscription_made_through_one_worker_hears_changes_made_through_another(database: str) -> None:
    receiver = Receiver()
    with serving(database, "--workers", "2") as (_, base):
        subscribe(base, receiver.url)
        assert httpx.post(f"{base}/entities", json=meter(0)).status_code == 201
        for value in range(1, 40):
            with httpx.Client(timeout=5) as client:  # a new connection each: the kernel spreads them over both workers
                set_reading(client, base, value)
        receiver.wait_for_data(40, timeout=20)
        assert first_occurrences(readings(receiver)) == list(range(40))
    receiver.stop()


@pytest.mark.service
def test_mqtt_notifications_reach_a_client_of_the_real_broker(api: Api) -> None:
    require_service("Mosquitto", "127.0.0.1", 1883)
    topic = f"cityops/test/{uuid.uuid4().hex}"
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, userdata, message: messages.put(message)
    client.on_subscribe = lambda *args: subscribed.put(True)
    client.connect("127.0.0.1", 1883)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        subscribed.get(timeout=10)
        body = {
            "type": "Subscription",
            "entities": [{"type": "Camera"}],
            "notification": {
                "format": "keyValues",
                "endpoint": {
                    "uri": f"mqtt://127.0.0.1:1883/{topic}",
                    "accept": "application/json",
                    "notifierInfo": [{"key": "MQTT-QoS", "value": "1"}],
                    "receiverInfo": [{"key": "X-Source", "value": "cityops-test"}],
                },
            },
        }
        assert api.post("/subscriptions", body).status_code == 201
        api.create(camera(1))
        message = json.loads(messages.get(timeout=10).payload)
        assert message["metadata"]["Content-Type"] == "application/json"
        assert message["metadata"]["X-Source"] == "cityops-test"
        assert "Link" in message["metadata"]
        assert message["body"]["type"] == "Notification"
        assert message["body"]["data"] == [
            {"id": "urn:ngsi-ld:Camera:001", "type": "Camera", "status": "on", "range": 50,
             "location": {"type": "Point", "coordinates": [126.9568, 37.3943]}}
        ]  # fmt: skip
    finally:
        client.loop_stop()
        client.disconnect()
