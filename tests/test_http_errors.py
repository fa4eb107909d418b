"""gateway/http_errors.py: every error answer is ``{"error": ...}`` JSON, from one table."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidState,
    MessageTooBig,
    ProtocolError,
    Unauthorized,
)
from gateway.http_errors import EXCEPTION_HANDLERS, HttpError, as_http_error
from gateway.tokens import NoToken


def raising(error: Exception) -> Callable[[Request], Response]:
    async def endpoint(request: Request) -> Response:
        raise error

    return endpoint  # type: ignore[return-value]


CASES = [
    (HttpError(414, "too long", {"X-Extra": "1"}), 414, {"x-extra": "1"}),
    (ProtocolError("token is given more than once"), 400, {}),
    (MessageTooBig("a subclass keeps its parent's status"), 400, {}),
    (NoToken("no token"), 401, {"www-authenticate": "Bearer"}),
    (Unauthorized("token expired"), 401, {"www-authenticate": 'Bearer error="invalid_token"'}),
    (Forbidden("not this wedding"), 403, {}),
    (BackendUnavailable("the store is down"), 503, {"retry-after": "1"}),
]


@pytest.mark.parametrize(("error", "status", "headers"), CASES, ids=lambda c: type(c).__name__)
async def test_each_error_is_rendered_as_json(
    error: Exception, status: int, headers: dict[str, str]
) -> None:
    app = Starlette(routes=[Route("/", raising(error))], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert orjson.loads(response.content) == {"error": str(error)}
    for name, value in headers.items():
        assert response.headers[name] == value
    if "www-authenticate" not in headers:
        assert "www-authenticate" not in response.headers


async def test_an_unmapped_gateway_error_stays_a_server_error() -> None:
    app = Starlette(
        routes=[Route("/", raising(InvalidState("our bug")))], exception_handlers=EXCEPTION_HANDLERS
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/")
    assert response.status_code == 500
    assert as_http_error(InvalidState("our bug")).status == 500
