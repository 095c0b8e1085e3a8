"""HTTP plumbing shared by the API modules: bodies with limits, media types, JSON responses,
and ProblemDetails for every error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..hub.errors import BadRequestData, InvalidRequest, NgsiError, PayloadTooLarge

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM = "application/problem+json"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None, media_type: str = JSON) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media_type)


def problem_response(error: NgsiError) -> Response:
    return Response(orjson.dumps(error.problem()), status_code=error.status, media_type=PROBLEM)


def media_type_of(header: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped, lower case)."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes with 413 before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"the body is {size} bytes; the limit is {limit} bytes")
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidRequest("the request has no body; a JSON payload is required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def parse_bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise BadRequestData(f"{name} must be true or false, got {value!r}")


def parse_int(value: str | None, name: str, default: int, *, minimum: int = 0, maximum: int = 2**62) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequestData(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise BadRequestData(f"{name} must be at least {minimum}, got {number}")
    if number > maximum:
        raise BadRequestData(f"{name} must be at most {maximum}, got {number}")
    return number


def location(path: str) -> dict[str, str]:
    """A ``Location`` header for ``path``: characters a URI may not hold (non-ASCII, controls,
    spaces) percent-encoded, since HTTP headers carry ASCII only."""
    return {"Location": quote(path, safe=":/?#[]@!$&'()*+,;=-._~%")}
