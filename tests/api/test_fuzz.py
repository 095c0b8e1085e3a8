"""A bounded fuzz run: malformed bodies, headers and query strings never produce a 5xx.

Every answer must be a deliberate status with a ProblemDetails body for errors; a 500 means
an input reached code that did not expect it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TEST_CONTEXT_URL, Api, camera

PATHS = [
    "/entities",
    "/entities/urn:ngsi-ld:Camera:001",
    "/entities/urn:ngsi-ld:Camera:001/attrs",
    "/entities/urn:ngsi-ld:Camera:001/attrs/range",
    "/entities/urn:ngsi-ld:Camera:001/attrs/location",
    "/entities/bad id",
    "/entities/urn:ngsi-ld:Camera:001/attrs/bad=name",
    "/entityOperations/create",
    "/entityOperations/upsert",
    "/entityOperations/update",
    "/entityOperations/delete",
    "/entityOperations/merge",
    "/entityOperations/query",
    "/types",
    "/types/Camera",
    "/attributes",
    "/attributes/range",
]
PARAMS = [
    "type", "id", "idPattern", "q", "attrs", "pick", "omit", "georel", "geometry", "coordinates", "geoproperty",
    "limit", "offset", "count", "options", "format", "lang", "scopeQ", "details", "datasetId", "deleteAll",
    "geometryProperty",
]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
tricky_text = st.one_of(
    text,
    st.sampled_from(
        [
            "Camera", "pm10>1", "(a;b)|c", "near;maxDistance==10", "Point", "[126.9,37.3]", "[[1,2],[3]]", "-1", "0", "1e9",
            "true", "keyValues,concise", "sysAttrs", "a..b", '"', "[", "urn:ngsi-ld:null", "Polygon", "[[[1,1],[2,2],[1,1]]]",
            "a[b", "a.b.c", "!", "~=", "\x00", "%00", "999999999999999999999",
            "range==99999999999999999999", "range!=1..99999999999999999999", "near;maxDistance==1e300", "near;minDistance==1e200",
            "(" * 300 + "Camera" + ")" * 300, "[[[]]]", "18446744073709551615",
        ]
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64) + 1, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=12,
)
attribute_like = st.one_of(
    json_values,
    st.fixed_dictionaries({"type": st.sampled_from(["Property", "Relationship", "GeoProperty", "LanguageProperty", "Nope"])}, optional={
        "value": json_values, "object": json_values, "languageMap": json_values, "datasetId": json_values, "observedAt": json_values,
        "unitCode": json_values,
    }),
)
entity_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.just("urn:ngsi-ld:Camera:001"), st.just("urn:ngsi-ld:Camera:fz"), json_values),
        "type": st.one_of(st.just("Camera"), json_values),
        "range": attribute_like,
        "location": attribute_like,
        "@context": st.one_of(st.just(TEST_CONTEXT_URL), json_values),
    },
)
bodies = st.one_of(
    entity_like,
    st.lists(entity_like, max_size=3),
    json_values,
    st.binary(max_size=40),
    st.just(b'{"id": "urn:x:1", "type": "T", "a": {"type": "Property", "value": 1}'),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["application/json", "application/ld+json", "application/merge-patch+json", "text/plain", "application/json; charset=utf-8", "", "x/\\x7f"]
        ),
        "Accept": st.sampled_from(["application/json", "application/ld+json", "application/geo+json", "*/*", "text/html", "application/json;q=x", ""]),
        "Link": st.one_of(
            st.just(f'<{TEST_CONTEXT_URL}>; rel="http://www.w3.org/ns/json-ld#context"'),
            st.just('<not a url>; rel="http://www.w3.org/ns/json-ld#context"'),
            st.just("garbage"),
        ),
        "NGSILD-Tenant": st.sampled_from(["", "t1", "../x", "a" * 80, " "]),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"]),
    path=st.sampled_from(PATHS),
    params=st.dictionaries(st.sampled_from(PARAMS), tricky_text, max_size=4),
    body=bodies,
    request_headers=headers,
)
def test_no_input_makes_the_server_fail(api: Api, method: str, path: str, params: dict, body: Any, request_headers: dict) -> None:
    if api.get("/entities/urn:ngsi-ld:Camera:001").status_code == 404:
        api.create(camera(1))
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = api.request(method, path, params=params, content=content, headers=request_headers)
    assert response.status_code < 500, (method, path, params, body, request_headers, response.text)
    if response.status_code >= 400:
        problem = response.json()
        assert problem["status"] == response.status_code and problem["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/")
