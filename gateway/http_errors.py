"""Every HTTP error answer, rendered in one place: ``{"error": "<sentence>"}`` as JSON.

Endpoints raise; they never build an error response. ``HttpError`` is for refusals that are
HTTP's own (404, 406, 413, 414, ...). A GatewayError that reaches HTTP gets its status from
``STATUS`` (the HTTP counterpart of the close-code table of proto/spec.md §6); any other
GatewayError is a bug and stays a 500. ``EXCEPTION_HANDLERS`` goes to ``Starlette(...)``
(gateway/app.py), which calls ``render`` for each of these exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BackendUnavailable, Forbidden, GatewayError, ProtocolError, Unauthorized
from gateway.tokens import NoToken

log = structlog.get_logger(__name__)

__all__ = ["EXCEPTION_HANDLERS", "STATUS", "HttpError", "error_response", "render"]


class HttpError(Exception):
    """A request refused with ``status``; ``str(exc)`` is the sentence of ``{"error": ...}``."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.details = dict(details or {})
        """More members of the JSON body (a 422's ``field`` and ``reason``)."""


STATUS: dict[type[GatewayError], int] = {
    ProtocolError: 400,  # the request is malformed (e.g. ?token= given twice)
    Unauthorized: 401,
    Forbidden: 403,
    BackendUnavailable: 503,
}
"""Status of each GatewayError an endpoint may let through; subclasses inherit it."""

RETRY_AFTER_SECONDS = 1
"""A store or Redis outage is usually a failover: worth retrying soon."""


def error_response(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> Response:
    """The JSON error answer; never cached (``Cache-Control: no-store``)."""
    body = orjson.dumps({"error": message, **(details or {})})
    sent = {"Cache-Control": "no-store", **(headers or {})}
    return Response(body, status, sent, media_type="application/json")


def as_http_error(exc: Exception) -> HttpError:
    """The HttpError for ``exc``: itself, or a GatewayError's entry in STATUS (else 500)."""
    if isinstance(exc, HttpError):
        return exc
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        # RFC 6750 §3.1: no error code when the request had no credentials at all
        challenge = "Bearer" if isinstance(exc, NoToken) else 'Bearer error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    elif isinstance(exc, BackendUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return HttpError(status, str(exc), headers)


async def render(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: the JSON answer for an HttpError or a mapped GatewayError."""
    error = as_http_error(exc)
    if error.status >= 500:
        log.warning(
            "http_request_failed", path=request.url.path, status=error.status, error=str(exc)
        )
    return error_response(error.status, str(error), error.headers, error.details)


EXCEPTION_HANDLERS: dict[Any, Any] = {kind: render for kind in (HttpError, *STATUS)}
"""For ``Starlette(exception_handlers=...)``: every exception ``render`` answers."""
