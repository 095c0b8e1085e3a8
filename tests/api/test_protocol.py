"""HTTP protocol behaviour: media types, sizes, errors as ProblemDetails, contexts."""

from __future__ import annotations

import json

from conftest import Api, camera, link


def test_unsupported_content_type_is_415(api: Api) -> None:
    response = api.post("/entities", content=json.dumps(camera(1)), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"


def test_json_ld_without_context_is_400(api: Api) -> None:
    response = api.post("/entities", content=json.dumps(camera(1)), headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 400
    assert "@context" in response.json()["detail"]


def test_context_in_plain_json_body_is_400(api: Api) -> None:
    entity = {**camera(1), "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"}
    assert api.post("/entities", entity).status_code == 400


def test_oversized_body_is_413(api: Api) -> None:
    big = camera(1, note={"type": "Property", "value": "x" * (5 * 1024 * 1024)})
    response = api.post("/entities", big)
    assert response.status_code == 413
    assert api.get("/entities/urn:ngsi-ld:Camera:001").status_code == 404


def test_invalid_json_is_400_invalid_request(api: Api) -> None:
    response = api.post("/entities", content=b'{"id": "urn:x:1", ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("InvalidRequest")


def test_unacceptable_accept_is_406(api: Api) -> None:
    api.create(camera(1))
    assert api.get("/entities/urn:ngsi-ld:Camera:001", headers={"Accept": "text/html"}).status_code == 406
    assert api.get("/entities/urn:ngsi-ld:Camera:001", headers={"Accept": "text/html, */*;q=0.1"}).status_code == 200


def test_unknown_path_and_method_are_problem_details(api: Api) -> None:
    missing = api.get("/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong_method = api.put("/entities")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405


def test_unreachable_context_is_503(api: Api) -> None:
    headers = link("http://127.0.0.1:9/no-context-here.jsonld")
    response = api.post("/entities", camera(1), headers=headers)
    assert response.status_code == 503
    assert response.json()["type"].endswith("LdContextNotAvailable")
    assert api.get("/entities/urn:ngsi-ld:Camera:001").status_code == 404


def test_two_context_links_are_400(api: Api) -> None:
    double = link()["Link"] + ", " + link("https://other.test/c.jsonld")["Link"]
    assert api.get("/entities", params={"type": "Camera"}, headers={"Link": double}).status_code == 400


def test_inline_context_in_json_ld_body(api: Api) -> None:
    entity = camera(1, speed={"type": "Property", "value": 3})
    entity["@context"] = {"speed": "https://example.org/vocab/speed", "Camera": "https://example.org/vocab/Camera"}
    response = api.post("/entities", content=json.dumps(entity), headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 201, response.text
    stored = api.get("/entities/urn:ngsi-ld:Camera:001").json()
    assert stored["type"] == "https://example.org/vocab/Camera"
    assert "https://example.org/vocab/speed" in stored


def test_health(api: Api) -> None:
    assert api.client.get("/health").json() == {"status": "ok"}


def test_unknown_query_parameter_is_400_invalid_request(api: Api) -> None:
    response = api.get("/entities", params={"type": "Camera", "limt": "5"})
    assert response.status_code == 400 and response.json()["type"].endswith("InvalidRequest")
    assert "limt" in response.json()["detail"]


def test_purge_deletes_what_the_query_selects(api: Api) -> None:
    for number in range(1, 4):
        api.create(camera(number, status={"type": "Property", "value": "off" if number < 3 else "on"}))
    assert api.delete("/entities", params={"type": "Camera", "q": 'status=="off"'}).status_code == 204
    remaining = api.get("/entities", params={"type": "Camera"}).json()
    assert [e["id"] for e in remaining] == ["urn:ngsi-ld:Camera:003"]
    assert api.delete("/entities").status_code == 400
