"""NGSI-LD errors as RFC 7807 ProblemDetails (ETSI GS CIM 009, clause 5.5.2 and table 5.5.2-1)."""

from __future__ import annotations

from typing import Any

ERROR_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiError(Exception):
    """An error the API reports to the client as ProblemDetails.

    Subclasses fix the NGSI-LD error type and HTTP status; ``detail`` says what was wrong in words
    a client developer can act on.
    """

    kind = "InternalError"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, title: str | None = None, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if title is not None:
            self.title = title
        if status is not None:
            self.status = status
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.kind

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status, "detail": self.detail}
        body.update(self.extra)
        return body


class InvalidRequest(NgsiError):
    kind, status, title = "InvalidRequest", 400, "Invalid request"


class BadRequestData(NgsiError):
    kind, status, title = "BadRequestData", 400, "Bad request data"


class AlreadyExists(NgsiError):
    kind, status, title = "AlreadyExists", 409, "Already exists"


class OperationNotSupported(NgsiError):
    kind, status, title = "OperationNotSupported", 422, "Operation not supported"


class ResourceNotFound(NgsiError):
    kind, status, title = "ResourceNotFound", 404, "Resource not found"


class InternalError(NgsiError):
    kind, status, title = "InternalError", 500, "Internal error"


class TooComplexQuery(NgsiError):
    kind, status, title = "TooComplexQuery", 403, "Too complex query"


class TooManyResults(NgsiError):
    kind, status, title = "TooManyResults", 403, "Too many results"


class LdContextNotAvailable(NgsiError):
    kind, status, title = "LdContextNotAvailable", 503, "@context not available"


class NonexistentTenant(NgsiError):
    kind, status, title = "NonexistentTenant", 404, "Nonexistent tenant"


class Conflict(NgsiError):
    kind, status, title = "Conflict", 409, "Conflict"


class NoMultiTenantSupport(NgsiError):
    kind, status, title = "NoMultiTenantSupport", 501, "No multi-tenant support"


class UnsupportedMediaType(InvalidRequest):
    """415: the request body is in a media type the operation does not take."""

    status, title = 415, "Unsupported media type"


class NotAcceptable(InvalidRequest):
    """406: none of the media types in Accept can be produced."""

    status, title = 406, "Not acceptable"


class PayloadTooLarge(BadRequestData):
    """413: the body is larger than the configured limit."""

    status, title = 413, "Payload too large"


class MethodNotAllowed(InvalidRequest):
    """405: the path exists but not with this method."""

    status, title = 405, "Method not allowed"


class ServiceUnavailable(NgsiError):
    """503: a backing service (the database) cannot be reached right now."""

    kind, status, title = "InternalError", 503, "Service unavailable"
