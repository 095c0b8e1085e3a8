"""Subscriptions over the API, and the notifications a real HTTP receiver gets for changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import TEST_CONTEXT_URL, Api, camera, link
from receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def subscription(receiver: Receiver, **members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Camera"}],
        "notification": {"endpoint": {"uri": receiver.url, "accept": "application/json"}},
    }
    notification = members.pop("notification", {})
    body.update(members)
    body["notification"].update(notification)
    return body


def subscribe(api: Api, body: dict[str, Any], **kwargs: Any) -> str:
    response = api.post("/subscriptions", body, **kwargs)
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    assert location.startswith("/ngsi-ld/v1/subscriptions/urn:")
    return location.rsplit("/", 1)[1]


def set_status(api: Api, value: str, number: int = 1) -> None:
    response = api.patch(f"/entities/urn:ngsi-ld:Camera:{number:03d}/attrs", {"status": {"type": "Property", "value": value}})
    assert response.status_code == 204, response.text


# -- the subscription resource ---------------------------------------------------------------------
def test_created_subscription_reads_back_with_its_status(api: Api, receiver: Receiver) -> None:
    sid = subscribe(api, subscription(receiver, id="urn:ngsi-ld:Subscription:cams", watchedAttributes=["status"], q="range>10"))
    assert sid == "urn:ngsi-ld:Subscription:cams"
    found = api.get(f"/subscriptions/{sid}").json()
    assert found["id"] == sid and found["type"] == "Subscription"
    assert found["status"] == "active" and "isActive" not in found  # shown as sent: it was not
    assert found["watchedAttributes"] == ["status"] and found["q"] == "range>10"
    assert found["notification"]["endpoint"]["uri"] == receiver.url
    assert "timesSent" not in found["notification"]  # no attempt yet
    assert found["notificationTrigger"] == ["attributeCreated", "attributeUpdated"]  # the default, shown


def test_duplicate_unknown_and_invalid_subscriptions_are_refused_precisely(api: Api, receiver: Receiver) -> None:
    body = subscription(receiver, id="urn:ngsi-ld:Subscription:one")
    subscribe(api, body)
    duplicate = api.post("/subscriptions", body)
    assert duplicate.status_code == 409 and duplicate.json()["type"].endswith("AlreadyExists")
    missing = api.get("/subscriptions/urn:ngsi-ld:Subscription:none")
    assert missing.status_code == 404 and missing.json()["type"].endswith("ResourceNotFound")
    assert api.get("/subscriptions/not-a-uri").status_code == 400
    bad = {
        "no endpoint": {"type": "Subscription", "entities": [{"type": "Camera"}], "notification": {}},
        "ftp endpoint": subscription(receiver, notification={"endpoint": {"uri": "ftp://example.org/x"}}),
        "nothing selected": {"type": "Subscription", "notification": {"endpoint": {"uri": receiver.url}}},
        "periodic and watched": subscription(receiver, timeInterval=10, watchedAttributes=["status"]),
        "unknown trigger": subscription(receiver, notificationTrigger=["entityExploded"]),
        "unknown member": subscription(receiver, colour="blue"),
        "bad q": subscription(receiver, q="range>>"),
        "bad expiresAt": subscription(receiver, expiresAt="tomorrow"),
        "past expiresAt": subscription(receiver, expiresAt="2020-01-01T00:00:00Z"),
        "showChanges in keyValues": subscription(receiver, notification={"format": "keyValues", "showChanges": True}),
        "pick and omit one member": subscription(receiver, notification={"pick": ["name"], "omit": ["name"]}),
        "jsonldContext not a URL": subscription(receiver, jsonldContext="my context"),
        "empty id": subscription(receiver, id=""),
        "wrong type": subscription(receiver, type="Entity"),
        "bad format": subscription(receiver, notification={"format": "xml"}),
    }
    for case, payload in bad.items():
        response = api.post("/subscriptions", payload)
        assert response.status_code == 400, (case, response.text)
        assert response.json()["type"].endswith("BadRequestData") or response.json()["type"].endswith("InvalidRequest"), case
    assert len(api.get("/subscriptions").json()) == 1  # nothing of the refused ones was kept


def test_subscriptions_list_pages_and_counts(api: Api, receiver: Receiver) -> None:
    ids = [subscribe(api, subscription(receiver, id=f"urn:ngsi-ld:Subscription:{i}")) for i in range(5)]
    page = api.get("/subscriptions", params={"limit": 2, "offset": 1, "count": "true"})
    assert page.status_code == 200
    assert page.headers["NGSILD-Results-Count"] == "5"
    assert [s["id"] for s in page.json()] == ids[1:3]
    assert api.get("/subscriptions", params={"colour": "blue"}).status_code == 400


def test_update_merges_and_delete_removes(api: Api, receiver: Receiver) -> None:
    sid = subscribe(api, subscription(receiver, watchedAttributes=["status"]))
    response = api.patch(f"/subscriptions/{sid}", {"isActive": False, "notification": {"format": "keyValues"}})
    assert response.status_code == 204, response.text
    found = api.get(f"/subscriptions/{sid}").json()
    assert found["isActive"] is False and found["status"] == "paused"
    assert found["notification"]["format"] == "keyValues"
    assert found["notification"]["endpoint"]["uri"] == receiver.url  # untouched members stay
    assert found["watchedAttributes"] == ["status"]
    assert api.patch(f"/subscriptions/{sid}", {"notificationTrigger": ["nope"]}).status_code == 400
    assert api.patch("/subscriptions/urn:ngsi-ld:Subscription:none", {"isActive": True}).status_code == 404
    assert api.delete(f"/subscriptions/{sid}").status_code == 204
    assert api.get(f"/subscriptions/{sid}").status_code == 404
    assert api.delete(f"/subscriptions/{sid}").status_code == 404


def test_media_types_are_checked_before_existence(api: Api) -> None:
    xml = api.patch("/subscriptions/urn:ngsi-ld:Subscription:none", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    assert api.get("/subscriptions/urn:ngsi-ld:Subscription:none", headers={"Accept": "application/xml"}).status_code == 406


# -- notifications -----------------------------------------------------------------------------------
def test_a_change_is_notified_with_the_entity_in_the_subscribers_terms(api: Api, receiver: Receiver) -> None:
    sid = subscribe(api, subscription(receiver, watchedAttributes=["status"]), headers=link())
    api.create(camera(1), headers=link())
    set_status(api, "off")
    first, second = receiver.wait_for(2)
    assert first.body["subscriptionId"] == sid and first.body["type"] == "Notification"
    assert first.body["id"].startswith("urn:ngsi-ld:Notification:") and first.body["notifiedAt"].endswith("Z")
    assert first.body["triggerReason"] == "attributeCreated"
    assert second.body["triggerReason"] == "attributeUpdated"
    assert second.body["data"][0]["status"] == {"type": "Property", "value": "off"}
    assert second.headers["content-type"] == "application/json"
    assert TEST_CONTEXT_URL in second.headers["link"]
    status = api.get(f"/subscriptions/{sid}").json()["notification"]
    deadline = time.monotonic() + 5
    while status.get("timesSent") != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        status = api.get(f"/subscriptions/{sid}").json()["notification"]
    assert status["timesSent"] == 2 and status["status"] == "ok" and "lastSuccess" in status


def test_only_watched_attributes_and_matching_entities_notify(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, watchedAttributes=["status"], q="range>=100"))
    api.create(camera(1, range={"type": "Property", "value": 50}))
    api.create(camera(2, range={"type": "Property", "value": 150}))
    set_status(api, "off", 1)  # range 50: q does not match
    api.patch("/entities/urn:ngsi-ld:Camera:002/attrs", {"range": {"type": "Property", "value": 200}})  # not watched
    set_status(api, "off", 2)
    received = receiver.quiet()
    assert [(n.body["data"][0]["id"], n.body["triggerReason"]) for n in received] == [
        ("urn:ngsi-ld:Camera:002", "attributeCreated"),
        ("urn:ngsi-ld:Camera:002", "attributeUpdated"),
    ]


def test_format_attributes_show_changes_and_json_ld(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, notification={"format": "keyValues", "attributes": ["status"]}), headers=link())
    subscribe(
        api,
        subscription(
            receiver,
            notification={"showChanges": True, "endpoint": {"uri": receiver.url, "accept": "application/ld+json",
                                                              "receiverInfo": [{"key": "X-Auth-Token", "value": "s3cret"}]}},
        ),
        headers=link(),
    )  # fmt: skip
    api.create(camera(1), headers=link())
    set_status(api, "off")
    received = receiver.wait_for(4)
    key_values = [n.body for n in received if n.headers["content-type"] == "application/json"]
    json_ld = [n for n in received if n.headers["content-type"] == "application/ld+json"]
    assert key_values[-1]["data"] == [{"id": "urn:ngsi-ld:Camera:001", "type": "Camera", "status": "off"}]
    changed = json_ld[-1]
    assert changed.body["@context"] == TEST_CONTEXT_URL and "link" not in changed.headers
    assert changed.headers["x-auth-token"] == "s3cret"
    assert changed.body["data"][0]["status"] == {"type": "Property", "value": "off", "previousValue": "on"}


def test_entity_triggers_paused_expired_and_tenant(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, notificationTrigger=["entityCreated", "entityDeleted"]), headers={"NGSILD-Tenant": "anyang"})
    paused = subscribe(api, subscription(receiver, isActive=False), headers={"NGSILD-Tenant": "anyang"})
    soon = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    expired = subscribe(api, subscription(receiver, expiresAt=soon), headers={"NGSILD-Tenant": "anyang"})
    time.sleep(1.2)
    subscribe(api, subscription(receiver))  # default tenant: must not hear of the other tenant's changes
    api.create(camera(1), headers={"NGSILD-Tenant": "anyang"})
    assert api.delete("/entities/urn:ngsi-ld:Camera:001", headers={"NGSILD-Tenant": "anyang"}).status_code == 204
    received = receiver.quiet()
    assert [n.body["triggerReason"] for n in received] == ["entityCreated", "entityDeleted"]
    assert all(n.headers["ngsild-tenant"] == "anyang" for n in received)
    assert received[1].body["data"][0]["id"] == "urn:ngsi-ld:Camera:001" and "deletedAt" in received[1].body["data"][0]
    assert api.get(f"/subscriptions/{paused}", headers={"NGSILD-Tenant": "anyang"}).json()["status"] == "paused"
    assert api.get(f"/subscriptions/{expired}", headers={"NGSILD-Tenant": "anyang"}).json()["status"] == "expired"


def test_throttling_limits_the_rate(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, throttling=30))
    api.create(camera(1))
    for value in ("a", "b", "c"):
        set_status(api, value)
    assert len(receiver.quiet()) == 1


def test_periodic_subscription_sends_the_current_state(api: Api, receiver: Receiver) -> None:
    api.create(camera(1))
    api.create(camera(2))
    subscribe(api, subscription(receiver, timeInterval=1, notification={"format": "keyValues", "attributes": ["status"]}))
    first, second = receiver.wait_for(2, timeout=10)
    assert sorted(e["id"] for e in first.body["data"]) == ["urn:ngsi-ld:Camera:001", "urn:ngsi-ld:Camera:002"]
    assert first.body["data"][0]["status"] == "on" and "range" not in first.body["data"][0]


def test_deleted_subscription_stops_notifying(api: Api, receiver: Receiver) -> None:
    sid = subscribe(api, subscription(receiver))
    api.create(camera(1))
    receiver.wait_for(1)
    assert api.delete(f"/subscriptions/{sid}").status_code == 204
    set_status(api, "off")
    assert len(receiver.quiet()) == 1


def test_failing_receiver_shows_in_status_and_is_retried(api: Api, settings: Any) -> None:
    failing = Receiver(status=500)
    try:
        sid = subscribe(api, subscription(failing))
        api.create(camera(1))
        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = api.get(f"/subscriptions/{sid}").json()["notification"]
            if status.get("consecutiveErrors", 0) >= 2:
                break
            time.sleep(0.1)
        assert status["status"] == "failed" and status["consecutiveErrors"] >= 2
        assert "500" in status["lastErrorReason"] and "lastFailure" in status
        failing.status = 200
        notification = failing.wait_for(1, timeout=10)[0]
        assert notification.body["data"][0]["id"] == "urn:ngsi-ld:Camera:001"
    finally:
        failing.stop()


def test_deleted_attributes_show_as_ngsi_ld_null(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, notificationTrigger=["attributeDeleted"], notification={"showChanges": True}))
    api.create(camera(1))
    assert api.delete("/entities/urn:ngsi-ld:Camera:001/attrs/status").status_code == 204
    deleted = receiver.wait_for(1)[0].body
    assert deleted["triggerReason"] == "attributeDeleted"
    assert deleted["data"][0]["status"] == {"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "on"}
    assert deleted["data"][0]["range"]["value"] == 50  # the rest of the entity as it is now


def test_deleting_one_dataset_of_an_attribute_is_an_attribute_deletion(api: Api, receiver: Receiver) -> None:
    subscribe(api, subscription(receiver, notificationTrigger=["attributeDeleted"], notification={"format": "keyValues"}))
    api.create(camera(1, status=[{"type": "Property", "value": "on"}, {"type": "Property", "value": "off", "datasetId": "urn:ngsi-ld:Dataset:b"}]))
    assert api.delete("/entities/urn:ngsi-ld:Camera:001/attrs/status", params={"datasetId": "urn:ngsi-ld:Dataset:b"}).status_code == 204
    data = receiver.wait_for(1)[0].body["data"][0]
    assert data["status"] == {"dataset": {"@none": "on", "urn:ngsi-ld:Dataset:b": "urn:ngsi-ld:null"}}


def test_linked_entities_join_the_notification(api: Api, receiver: Receiver) -> None:
    api.create({"id": "urn:ngsi-ld:Road:1", "type": "Road", "name": {"type": "Property", "value": "Gyeongsu-daero"}})
    subscribe(api, subscription(receiver, notification={"join": "flat", "format": "keyValues", "pick": ["id", "onRoad", "name"]}))
    api.create(camera(1, onRoad={"type": "Relationship", "object": "urn:ngsi-ld:Road:1"}))
    data = receiver.wait_for(1)[0].body["data"]
    assert data == [{"id": "urn:ngsi-ld:Camera:001", "onRoad": "urn:ngsi-ld:Road:1"}, {"id": "urn:ngsi-ld:Road:1", "type": "Road", "name": "Gyeongsu-daero"}]


def test_notifications_compact_with_the_jsonld_context_when_given(api: Api, receiver: Receiver) -> None:
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    body = subscription(receiver, jsonldContext=core, notification={"endpoint": {"uri": receiver.url, "accept": "application/ld+json"}})
    subscribe(api, body, headers=link())
    api.create(camera(1), headers=link())
    received = receiver.wait_for(1)[0].body
    assert received["@context"] == core and received["data"][0]["@context"] == core
    assert received["data"][0]["type"] == "https://smartdatamodels.org/dataModel.Device/Camera"  # the test context's term, unknown to the core one


def test_subscription_list_links_its_pages_and_reads_in_the_callers_terms(api: Api, receiver: Receiver) -> None:
    for i in range(3):
        subscribe(api, subscription(receiver, id=f"urn:ngsi-ld:Subscription:{i}"), headers=link())
    middle = api.get("/subscriptions", params={"limit": 1, "offset": 1}, headers={"Accept": "application/ld+json"})
    links = {part.split(";")[1].strip() for part in middle.headers["Link"].split(", ")}
    assert links == {'rel="prev"', 'rel="next"'}
    assert api.get("/subscriptions/urn:ngsi-ld:Subscription:0", headers=link()).json()["entities"] == [{"type": "Camera"}]
    expanded = api.get("/subscriptions/urn:ngsi-ld:Subscription:0").json()["entities"]
    assert expanded == [{"type": "https://smartdatamodels.org/dataModel.Device/Camera"}]
