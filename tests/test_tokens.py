"""One token rule for every entry point (proto/spec.md §2.4): gateway/tokens.py, the gatekeeper's
``token_in`` and ``claims``, and the WebSocket and HTTP answering a repeated ``?token=`` alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Secret
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.adapters.memory_revocations import MemoryRevocations
from gateway.auth import TokenVerifier, issue_token
from gateway.core.policy import DEVELOPMENT_GRANT, Role
from gateway.errors import Forbidden, ProtocolError, Unauthorized
from gateway.gatekeeper import Gatekeeper
from gateway.settings import Settings
from gateway.tokens import NoToken, bearer, token_in
from gateway.types import RoomId
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from wedsync_protocol import codec
from wedsync_protocol.messages import SyncStep1, SyncStep2

SECRET = "tokens-test-secret-0123456789-abcdefgh"
WEDDING = "tokens-1"
SETTINGS = Settings(jwt_secret=Secret(SECRET))


def token(role: Role = Role.PLANNER, *, wedding: str = WEDDING, admin: bool = False) -> str:
    return issue_token(
        SECRET,
        subject=f"{role.value}-user",
        weddings={wedding: role},
        ttl_seconds=600,
        issuer=SETTINGS.jwt_issuer,
        audience=SETTINGS.jwt_audience,
        admin=admin,
    )


# -- the rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "authorization", "expected"),
    [
        (b"", None, None),
        (b"token=abc", None, "abc"),
        (b"sv=AA&token=abc&x=1", None, "abc"),
        (b"token=a%2Eb%20c", None, "a.b c"),  # percent-decoded, as any query parameter
        (b"token=", None, None),  # empty counts as absent
        (b"tokens=abc&token2=abc", None, None),  # only the exact name
        (b"token=abc", "Bearer from-header", "from-header"),  # the header wins
        (b"", "bearer  spaced  ", "spaced"),  # scheme case-insensitive, credentials stripped
        (b"token=abc", "Basic b3BzOnB3", "abc"),  # another scheme: the query
        (b"token=abc", "Bearer ", "abc"),  # an empty bearer: the query
        (b"", "Bearer", None),
    ],
)
def test_the_header_first_else_the_query(
    query: bytes, authorization: str | None, expected: str | None
) -> None:
    assert token_in(query, authorization) == expected


@pytest.mark.parametrize(
    ("query", "authorization"),
    [
        (b"token=a&token=b", None),
        (b"token=a&token=a", None),  # the same token twice is still ambiguous to a proxy
        (b"token=&token=b", None),  # an empty one counts: the URL names it twice
        (b"token=a&token=b", "Bearer from-header"),  # refused even when the header would win
    ],
)
def test_a_repeated_token_parameter_is_a_protocol_error(
    query: bytes, authorization: str | None
) -> None:
    with pytest.raises(ProtocolError, match="token is given more than once") as raised:
        token_in(query, authorization)
    assert raised.value.close_code == 4500
    assert not raised.value.retryable


def test_bearer_reads_only_the_bearer_scheme() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("BEARER abc") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearerabc") is None
    assert bearer(None) is None


def scope(query: bytes = b"", authorization: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"gateway")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return {"type": "http", "query_string": query, "headers": headers}


def test_the_gatekeeper_reads_an_asgi_scope() -> None:
    assert Gatekeeper.token_in(scope(b"token=q")) == "q"
    assert Gatekeeper.token_in(scope(b"token=q", b"Bearer h")) == "h"
    assert Gatekeeper.token_in(scope()) is None
    with pytest.raises(ProtocolError):
        Gatekeeper.token_in(scope(b"token=q&token=q"))


def test_header_only_ignores_the_query() -> None:
    assert Gatekeeper.token_in(scope(b"token=q"), query=False) is None
    assert Gatekeeper.token_in(scope(b"token=q&token=r", b"Bearer h"), query=False) == "h"


# -- verification ---------------------------------------------------------------------------------


@pytest.fixture
def gatekeeper() -> Gatekeeper:
    verifier = TokenVerifier.from_settings(SETTINGS)
    assert verifier is not None
    return Gatekeeper(verifier, MemoryRevocations())


async def test_claims_are_verified_and_checked_against_revocations(
    gatekeeper: Gatekeeper,
) -> None:
    issued = token(admin=True)
    claims = gatekeeper.claims(issued)
    assert (claims.subject, claims.admin) == ("planner-user", True)
    assert gatekeeper.grant(issued, RoomId(WEDDING)).role is Role.PLANNER
    await gatekeeper.revocations.revoke(claims.token_id, time.time() + 600)
    with pytest.raises(Unauthorized, match="token revoked"):
        gatekeeper.claims(issued)
    with pytest.raises(Unauthorized, match="token revoked"):
        gatekeeper.grant(issued, RoomId(WEDDING))
    with pytest.raises(Unauthorized, match="malformed"):
        gatekeeper.claims("not-a-token")


def test_no_token_is_its_own_unauthorized(gatekeeper: Gatekeeper) -> None:
    with pytest.raises(NoToken) as raised:
        gatekeeper.grant(None, RoomId(WEDDING))
    assert isinstance(raised.value, Unauthorized)
    assert raised.value.close_code == 4401


def test_development_mode_grants_everything_and_verifies_nothing() -> None:
    development = Gatekeeper(None, MemoryRevocations())
    assert development.grant(None, RoomId(WEDDING)) is DEVELOPMENT_GRANT
    with pytest.raises(Forbidden, match="development mode"):
        development.claims(token())


# -- the WebSocket and HTTP alike -----------------------------------------------------------------


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(tmp_path / "data", jwt_secret=Secret(SECRET))
    try:
        yield running
    finally:
        await stop_in_process(running)


async def close_code(url: str, **options: Any) -> tuple[int, list[Any]]:
    """Connect, ask for the document, and read until the server closes: its code, what it sent."""
    messages: list[Any] = []
    try:
        async with connect(url, **options) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(codec.encode(SyncStep1(b"\x00")))
            while True:
                messages.append(codec.decode_server_message(await ws.recv(decode=False)))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd is not None else 1006), messages


@pytest.mark.parametrize("mode", ["secured", "development"])
async def test_a_repeated_token_closes_the_websocket_with_4500(tmp_path: Path, mode: str) -> None:
    keys = {"jwt_secret": Secret(SECRET)} if mode == "secured" else {}
    running = await start_in_process(tmp_path / "data", **keys)
    try:
        valid = token()
        code, messages = await close_code(f"{running.ws_url}/{WEDDING}?token={valid}&token={valid}")
    finally:
        await stop_in_process(running)
    assert code == 4500
    assert messages == []  # refused before admission: nothing of the wedding


async def test_the_websocket_takes_a_bearer_header(secured: RunningGateway) -> None:
    headers = {"Authorization": f"Bearer {token(Role.VIEWER)}"}
    async with connect(f"{secured.ws_url}/{WEDDING}", additional_headers=headers) as ws:
        await ws.send(codec.encode(SyncStep1(b"\x00")))
        async with asyncio.timeout(10):  # admitted: the document's sync step 2 comes
            while not isinstance(
                codec.decode_server_message(await ws.recv(decode=False)), SyncStep2
            ):
                pass
    forbidden = {"Authorization": f"Bearer {token(wedding='another')}"}
    code, _ = await close_code(f"{secured.ws_url}/{WEDDING}", additional_headers=forbidden)
    assert code == 4503


async def test_a_repeated_token_is_400_over_http(secured: RunningGateway) -> None:
    valid = token()
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        for path in (f"/v1/weddings/{WEDDING}", f"/v1/weddings/{WEDDING}/resume"):
            response = await http.get(f"{path}?token={valid}&token={valid}")
            assert response.status_code == 400
            assert response.json() == {"error": "token is given more than once"}
            with_header = await http.get(
                f"{path}?token={valid}&token={valid}",
                headers={"Authorization": f"Bearer {valid}"},
            )
            assert with_header.status_code == 400
            once = await http.get(f"{path}?token={valid}")
            assert once.status_code == 200
