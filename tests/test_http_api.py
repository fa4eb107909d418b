"""HTTP reads of a wedding (issue 7): the JSON view and the Yjs catch-up, through a live gateway.

Bodies are read raw (``aiter_raw``), so each test decodes the Content-Encoding itself.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import zstandard
from pycrdt import Array, Doc, Map
from starlette.datastructures import Secret

from gateway import content_coding, documents, http_api
from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.http_api import parse_state_vector
from gateway.settings import Settings
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from wedsync_protocol.codec import encode_state_vector, write_varuint

WEDDING = "http-1"
SECRET = "http-api-test-secret-0123456789-abcdef"
ISSUER, AUDIENCE = Settings().jwt_issuer, Settings().jwt_audience


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(body: bytes, coding: str | None) -> bytes:
    match coding:
        case None:
            return body
        case "br":
            return bytes(brotli.decompress(body))
        case "zstd":
            return zstandard.ZstdDecompressor().decompress(body)
        case "gzip":
            return gzip.decompress(body)
    raise AssertionError(f"unexpected Content-Encoding {coding}")


async def fetch(
    http: httpx.AsyncClient,
    path: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (httpx would decode it otherwise)."""
    async with http.stream("GET", path, params=params, headers=headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, raw


async def resume(
    http: httpx.AsyncClient,
    wedding: str = WEDDING,
    sv: bytes | None = None,
    accept: str = "identity",
    **headers: str,
) -> tuple[httpx.Response, bytes]:
    """GET .../resume; returns the response and its decoded body."""
    params = {"sv": b64url(sv)} if sv is not None else None
    sent = {"Accept-Encoding": accept, **headers}
    response, raw = await fetch(http, f"/v1/weddings/{wedding}/resume", params=params, headers=sent)
    return response, decode(raw, response.headers.get("content-encoding"))


def contents(doc: Doc[Any]) -> dict[str, Any]:
    core = doc.get("core", type=Map).to_py() or {}
    return {"core": core, "timeline": doc.get("timeline", type=Array).to_py() or []}


def replica(update: bytes) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return doc


async def write_wedding(client: GatewayClient, entries: int = 6) -> None:
    await client.wait_synced()
    client.create_wedding(
        "Ana Silva", "Bea Costa", "confirmed", venue="Villa Rosa", guest_count=120
    )
    for i in range(entries):
        notes = f"Entry {i}: the florist arrives early, the band sets up in the olive garden."
        client.add_timeline_entry(id=f"e{i}", title=f"Moment {i}", start=f"1{i}:00", notes=notes)
    await client.wait_durable()


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        yield client


@pytest.fixture
async def writer(gateway: RunningGateway) -> AsyncIterator[GatewayClient]:
    """A client that created the wedding and stays connected (the room stays loaded)."""
    async with GatewayClient(gateway.ws_url, WEDDING) as client:
        await write_wedding(client)
        yield client


# -- the JSON view ---------------------------------------------------------------------------------


async def test_json_view_matches_the_clients_document(
    gateway: RunningGateway, http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    assert gateway.node.room(RoomId(WEDDING)) is not None
    response = await http.get(f"/v1/weddings/{WEDDING}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "private, no-cache"
    view = response.json()
    assert view["wedding_id"] == WEDDING
    assert view["epoch"] == 1
    assert str(view["offset"]) == response.headers["x-wedsync-offset"]
    assert view["timeline"] == writer.timeline()
    assert view["core"] == {**writer.core(), "guest_count": 120}
    assert isinstance(view["core"]["guest_count"], int)  # pycrdt's 120.0, rendered whole


async def test_a_wedding_never_written_is_an_empty_document(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    view = (await http.get("/v1/weddings/brand-new")).json()
    assert view == {"wedding_id": "brand-new", "epoch": 1, "offset": 0, "core": {}, "timeline": []}
    response, body = await resume(http, "brand-new")
    assert response.status_code == 200
    assert body == b"\x00\x00"  # the empty update
    assert (response.headers["x-wedsync-epoch"], response.headers["x-wedsync-offset"]) == ("1", "0")
    assert gateway.node.room(RoomId("brand-new")) is None  # reading loads no room


@pytest.mark.parametrize("wedding_id", ["bad.id", "a" * 65, "wed%201"])
async def test_an_invalid_wedding_id_is_404(http: httpx.AsyncClient, wedding_id: str) -> None:
    for path in (f"/v1/weddings/{wedding_id}", f"/v1/weddings/{wedding_id}/resume"):
        response = await http.get(path)
        assert response.status_code == 404
        assert "error" in response.json()


# -- resume ----------------------------------------------------------------------------------------


async def test_resume_with_a_clients_state_vector_converges_it(
    http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    stale = replica(writer.doc.get_update())  # a replica that went offline here
    writer.set_core(venue="Quinta do Lago", guest_count=140)
    writer.update_timeline_entry("e2", notes="Moved indoors: rain forecast")
    writer.remove_timeline_entry("e4")
    writer.add_timeline_entry(id="late", title="Fireworks", start="23:30")
    await writer.wait_durable()
    response, body = await resume(http, sv=stale.get_state())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert len(body) < len(writer.doc.get_update())  # only what the replica lacks
    stale.apply_update(body)
    assert contents(stale) == contents(writer.doc)


async def test_resume_without_a_state_vector_is_the_whole_document(
    http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    response, body = await resume(http)
    assert response.status_code == 200
    assert contents(replica(body)) == contents(writer.doc)


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip", "identity"])
@pytest.mark.parametrize("in_thread", [False, True], ids=["on-loop", "in-thread"])
async def test_each_coding_is_negotiated_and_decodes(
    http: httpx.AsyncClient,
    writer: GatewayClient,
    monkeypatch: pytest.MonkeyPatch,
    coding: str,
    in_thread: bool,
) -> None:
    if in_thread:
        monkeypatch.setattr(http_api, "THREAD_COMPRESS_BYTES", 0)
    response, raw = await fetch(
        http, f"/v1/weddings/{WEDDING}/resume", headers={"Accept-Encoding": coding}
    )
    assert response.status_code == 200
    sent = response.headers.get("content-encoding")
    assert sent == (None if coding == "identity" else coding)
    body = decode(raw, sent)
    assert len(body) >= content_coding.MIN_COMPRESSED_BYTES
    if coding != "identity":
        assert len(raw) < len(body)
    assert body == writer.doc.get_update() or contents(replica(body)) == contents(writer.doc)
    assert response.headers["vary"] == "Accept-Encoding, Authorization"
    assert response.headers["cache-control"] == "private, no-cache"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, br;q=0.5", "gzip"),
        ("br;q=0.2, zstd;q=0.9, gzip;q=0.5", "zstd"),
        ("gzip, zstd, br", "br"),  # equal q: br > zstd > gzip
        ("gzip, zstd", "zstd"),
        ("*", "br"),
        ("br;q=0, *", "zstd"),
        ("identity, gzip;q=0.5", None),
        ("GZIP;Q=1.0", "gzip"),
        ("deflate", None),  # unknown codings: identity is acceptable unless refused
        ("br;q=2, gzip", "gzip"),  # a malformed q-value drops its element
        ("", None),
    ],
)
async def test_q_values_choose_the_coding(
    http: httpx.AsyncClient, writer: GatewayClient, accept: str, expected: str | None
) -> None:
    response, body = await resume(http, accept=accept)
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == expected
    assert contents(replica(body)) == contents(writer.doc)


async def test_no_accept_encoding_means_identity(
    gateway: RunningGateway, writer: GatewayClient
) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        del http.headers["accept-encoding"]
        response, raw = await fetch(http, f"/v1/weddings/{WEDDING}/resume")
    assert "accept-encoding" not in response.request.headers
    assert "content-encoding" not in response.headers
    assert raw == writer.doc.get_update() or contents(replica(raw)) == contents(writer.doc)


async def test_a_small_body_is_sent_identity_unless_identity_is_refused(
    http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    response, body = await resume(http, sv=writer.doc.get_state(), accept="br, gzip")
    assert "content-encoding" not in response.headers
    assert len(body) < content_coding.MIN_COMPRESSED_BYTES
    response, body = await resume(http, sv=writer.doc.get_state(), accept="br, identity;q=0")
    assert response.headers["content-encoding"] == "br"
    assert len(body) < content_coding.MIN_COMPRESSED_BYTES


@pytest.mark.parametrize(
    "accept",
    ["identity;q=0", "deflate, identity;q=0", "*;q=0", "br;q=0, zstd;q=0, gzip;q=0, *;q=0"],
)
async def test_refusing_identity_and_every_offered_coding_is_406(
    http: httpx.AsyncClient, accept: str
) -> None:
    response, body = await resume(http, accept=accept)
    assert response.status_code == 406
    assert "error" in httpx.Response(200, content=body).json()


async def test_etag_revalidates_with_304_until_the_document_changes(
    http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    sv = b"\x00"  # an empty replica's: the body is the whole document, large enough to compress
    first, body = await resume(http, sv=sv, accept="gzip")
    assert first.headers["content-encoding"] == "gzip"
    etag = first.headers["etag"]
    assert etag[0] == etag[-1] == '"'  # strong
    again, _ = await resume(http, sv=sv, accept="gzip")
    assert again.headers["etag"] == etag  # same document, same sv: same tag
    for condition in (etag, f'"other", W/{etag}', "*"):
        cached, raw = await fetch(
            http,
            f"/v1/weddings/{WEDDING}/resume",
            params={"sv": b64url(sv)},
            headers={"Accept-Encoding": "gzip", "If-None-Match": condition},
        )
        assert cached.status_code == 304
        assert raw == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["cache-control"] == "private, no-cache"
        assert cached.headers["vary"] == "Accept-Encoding, Authorization"
    other_coding, _ = await resume(http, sv=sv, accept="br")
    assert other_coding.headers["etag"] != etag  # another representation, another tag
    writer.set_core(notes="Cake arrives at 14:00.")
    await writer.wait_durable()
    changed, new_body = await resume(http, sv=sv, accept="gzip", **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert new_body != body


@pytest.mark.parametrize(
    "sv",
    [
        pytest.param("!!!!", id="not-base64"),
        pytest.param("AA+/", id="standard-not-url-alphabet"),
        pytest.param("A", id="impossible-length"),
        pytest.param("AA=A", id="padding-inside"),
        pytest.param("", id="empty"),
        pytest.param(b64url(b"\x01\x80"), id="truncated-varuint"),
        pytest.param(b64url(b"\x01" + b"\x80" * 11 + b"\x01\x01"), id="varuint-over-10-bytes"),
        pytest.param(b64url(b"\x05\x01\x01"), id="count-larger-than-bytes"),
        pytest.param(b64url(write_varuint(2**53 - 1) + b"\x01\x01"), id="huge-count"),
        pytest.param(b64url(b"\x00\x00"), id="trailing-bytes"),
        pytest.param(b64url(b"\x01\x01\x01\x07"), id="trailing-after-pairs"),
        pytest.param(b64url(encode_state_vector({1: 2**32})), id="clock-above-u32"),
    ],
)
async def test_a_malformed_state_vector_is_400(
    http: httpx.AsyncClient, writer: GatewayClient, sv: str
) -> None:
    response = await http.get(f"/v1/weddings/{WEDDING}/resume", params={"sv": sv})
    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_state_vector_padding_is_optional(
    http: httpx.AsyncClient, writer: GatewayClient
) -> None:
    sv = replica(writer.doc.get_update()).get_state()
    padded = base64.urlsafe_b64encode(sv).decode()
    bodies = set()
    for text in (padded, padded.rstrip("=")):
        response = await http.get(
            f"/v1/weddings/{WEDDING}/resume",
            params={"sv": text},
            headers={"Accept-Encoding": "identity"},
        )
        assert response.status_code == 200
        bodies.add(response.content)
    assert len(bodies) == 1


async def test_a_state_vector_given_twice_is_400(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/weddings/{WEDDING}/resume?sv=AA&sv=AA")
    assert response.status_code == 400


async def test_an_overlong_state_vector_is_414(gateway: RunningGateway) -> None:
    # httpx refuses such a URL itself: send the request line by hand
    sv = "A" * (http_api.MAX_SV_CHARS + 4)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    request = f"GET /v1/weddings/{WEDDING}/resume?sv={sv} HTTP/1.1\r\nHost: t\r\n"
    writer.write(f"{request}Connection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert answer.endswith(b'{"error":"sv is longer than 65536 characters"}')


def test_state_vectors_are_reencoded_canonically() -> None:
    # 0 written in two bytes, and a client listed twice: yrs gets the shortest, one-entry form
    assert parse_state_vector(b64url(b"\x02\x05\x80\x00\x05\x03")) == b"\x01\x05\x03"


# -- where the document comes from ---------------------------------------------------------------


@pytest.mark.parametrize("in_thread", [False, True], ids=["on-loop", "in-thread"])
async def test_a_room_not_loaded_is_served_from_the_store(
    gateway: RunningGateway,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    in_thread: bool,
) -> None:
    if in_thread:
        monkeypatch.setattr(documents, "THREAD_HISTORY_BYTES", 0)
    async with GatewayClient(gateway.ws_url, WEDDING) as client:
        await write_wedding(client)
        written = contents(client.doc)
        stale = replica(client.doc.get_update())
        client.update_timeline_entry("e1", notes="After the replica went offline")
        await client.wait_durable()
        written = contents(client.doc)
    await eventually(lambda: gateway.node.room(RoomId(WEDDING)) is None, message="unloaded")
    loads = gateway.node.statistics().loads
    history = await gateway.node.store.load(RoomId(WEDDING))

    view = (await http.get(f"/v1/weddings/{WEDDING}")).json()
    assert {"core": view["core"], "timeline": view["timeline"]} == {
        "core": {**written["core"], "guest_count": 120},
        "timeline": written["timeline"],
    }
    assert (view["epoch"], view["offset"]) == (history.epoch, history.last_offset)
    response, body = await resume(http, sv=stale.get_state(), accept="zstd")
    assert response.headers["x-wedsync-offset"] == str(history.last_offset)
    stale.apply_update(body)
    assert contents(stale) == written

    assert gateway.node.room(RoomId(WEDDING)) is None  # served without loading the room
    assert gateway.node.statistics().loads == loads


async def test_a_loaded_room_and_the_store_give_the_same_document(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with GatewayClient(gateway.ws_url, WEDDING) as client:
        await write_wedding(client)
        loaded_view = (await http.get(f"/v1/weddings/{WEDDING}")).json()
        _, loaded_body = await resume(http)
    await eventually(lambda: gateway.node.room(RoomId(WEDDING)) is None, message="unloaded")
    stored_view = (await http.get(f"/v1/weddings/{WEDDING}")).json()
    _, stored_body = await resume(http)
    assert (stored_view["core"], stored_view["timeline"]) == (
        loaded_view["core"],
        loaded_view["timeline"],
    )
    assert contents(replica(stored_body)) == contents(replica(loaded_body))


# -- who may read ----------------------------------------------------------------------------------


def token(role: Role, wedding: str = WEDDING) -> str:
    return issue_token(
        SECRET,
        subject=f"{role.value}-user",
        weddings={wedding: role},
        vendor_id="florist-7" if role is Role.VENDOR else None,
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(
        tmp_path / "data", room_idle_seconds=0.2, jwt_secret=Secret(SECRET)
    )
    try:
        async with GatewayClient(running.ws_url, WEDDING, token=token(Role.PLANNER)) as planner:
            await write_wedding(planner)
        yield running
    finally:
        await stop_in_process(running)


async def test_reading_needs_a_token_for_the_wedding(secured: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        for path in (f"/v1/weddings/{WEDDING}", f"/v1/weddings/{WEDDING}/resume"):
            missing = await http.get(path)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            forged = await http.get(path, headers={"Authorization": "Bearer not-a-token"})
            assert forged.status_code == 401
            assert 'error="invalid_token"' in forged.headers["www-authenticate"]
            other = token(Role.PLANNER, wedding="other-wedding")
            forbidden = await http.get(path, headers={"Authorization": f"Bearer {other}"})
            assert forbidden.status_code == 403
            assert forbidden.json()["error"]


@pytest.mark.parametrize("role", list(Role))
async def test_every_role_may_read(secured: RunningGateway, role: Role) -> None:
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        bearer = {"Authorization": f"Bearer {token(role)}"}
        view = await http.get(f"/v1/weddings/{WEDDING}", headers=bearer)
        assert view.status_code == 200
        assert view.json()["core"]["partner_a"] == "Ana Silva"
        by_query = await http.get(
            f"/v1/weddings/{WEDDING}/resume",
            params={"token": token(role)},
            headers={"Accept-Encoding": "identity"},
        )
        assert by_query.status_code == 200
        assert contents(replica(by_query.content))["core"]["venue"] == "Villa Rosa"
