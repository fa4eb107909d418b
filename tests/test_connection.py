"""Bad input at the connection layer: each offender is closed with its code; others live on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.errors import SlowClient
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import SyncStep1, SyncStep2


async def close_code_after(gateway: RunningGateway, payload: bytes | str) -> tuple[int, str]:
    """Send one message on a fresh connection; return the close code and reason received."""
    async with connect(f"{gateway.ws_url}/bad", max_size=None) as ws:
        await ws.recv()  # the server's sync step 1: the room is joined
        await ws.send(payload)
        with pytest.raises(ConnectionClosed):
            await drain(ws)
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


RING = "\U0001f48d"  # one character of proto/schema.md, four bytes of UTF-8


def create_wide_wedding(client: GatewayClient, entries: int) -> int:
    """Create the wedding with ``entries`` timeline entries; return the version to wait for."""
    with client.doc.transaction():  # sent with the create_wedding below
        for i in range(entries):
            client.timeline_array.append(Map({"id": f"e{i}", "title": f"{i}", "start": "12:00"}))
    return client.create_wedding("Ana Silva", "Bea Costa")


def write_wide_notes(client: GatewayClient, tag: str) -> int:
    """Fill the notes of every entry (2000 characters: 8 KB each) in one update, then
    core.notes (5000 characters: 20 KB) in another; return the version to wait for."""
    with client.doc.transaction():  # sent with the set_core below
        for entry in client.timeline_array:
            entry["notes"] = tag + RING * (2000 - len(tag))
    return client.set_core(notes=tag + RING * (5000 - len(tag)))


async def drain(ws: ClientConnection) -> None:
    """Read until the server closes the connection."""
    while True:
        await ws.recv()


async def send_until_closed(ws: ClientConnection, message: bytes) -> None:
    """Send ``message`` again and again until the server closes the connection."""
    while True:
        await ws.send(message)


BAD_MESSAGES = {
    "text frame": ("hello", 4500, "text frames"),
    "unknown message type": (b"\x07", 4500, "unknown message type 7"),
    "truncated sync message": (b"\x00\x02\x05\x00", 4500, "exceeds"),
    "trailing bytes": (b"\x00\x02\x02\x00\x00\xff", 4500, "trailing"),
    "varint longer than 10 bytes": (b"\x00\x02" + b"\xff" * 11, 4500, "varUint"),
    "unknown sync type": (b"\x00\x09\x00", 4500, "unknown sync message type"),
    "server-only message": (b"\x65\x01", 4500, "server only"),
    "malformed state vector": (b"\x00\x00\x03\x05\x01\x01", 4500, "state vector"),
}


@pytest.mark.parametrize("case", BAD_MESSAGES, ids=list(BAD_MESSAGES))
async def test_bad_message_closes_only_its_sender(gateway: RunningGateway, case: str) -> None:
    payload, expected_code, reason_part = BAD_MESSAGES[case]
    async with GatewayClient(gateway.ws_url, "bad") as bystander:
        await bystander.wait_synced()
        code, reason = await close_code_after(gateway, payload)
        assert code == expected_code
        assert reason_part in reason
        version = bystander.create_wedding("Ana Silva", "Bea Costa", venue="still fine")
        await bystander.wait_durable(version)
        assert bystander.core()["venue"] == "still fine"
        assert bystander.connections == 1


async def test_frame_over_the_size_limit_closes_with_1009(tmp_path: Path) -> None:
    running = await start_in_process(tmp_path / "data", max_message_bytes=4096)
    try:
        code, _ = await close_code_after(running, b"\x00\x02" + b"\x00" * 5000)
        assert code == 1009
        async with GatewayClient(running.ws_url, "bad") as client:
            await client.wait_synced()
    finally:
        await stop_in_process(running)


@pytest.mark.parametrize("wedding_id", ["a%20b", "x" * 65, "caf%C3%A9", "..%2Fetc"])
async def test_invalid_wedding_id_is_refused_before_the_upgrade(
    gateway: RunningGateway, wedding_id: str
) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{gateway.ws_url}/{wedding_id}"):
            pass
    assert caught.value.response.status_code == 403


async def test_stock_client_never_receives_extension_messages(gateway: RunningGateway) -> None:
    async with connect(f"{gateway.ws_url}/plain") as ws:
        first = codec.decode(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(first, SyncStep1)
        await ws.send(codec.encode(SyncStep1(b"\x00")))
        wedding: Doc[Any] = Doc()
        wedding["core"] = Map({"partner_a": "Ana", "partner_b": "Bea", "status": "planning"})
        await ws.send(b"\x00\x02" + codec.write_var_bytes(wedding.get_update()))
        await eventually(lambda: gateway.node.statistics().committer.committed >= 1)
        await ws.send(codec.encode(SyncStep1(b"\x00")))
        kinds = []
        while len(kinds) < 2:
            kinds.append((await ws.recv())[0])  # type: ignore[index]
        assert kinds == [0, 0]  # two sync step 2 replies, no ACK (101)


async def test_health_and_metrics_endpoints(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/livez")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        metrics = (await http.get("/metrics")).text
        assert "gateway_connections" in metrics
        assert "gateway_rooms" in metrics


async def test_client_that_stops_reading_is_closed_with_4001(tmp_path: Path) -> None:
    running = await start_in_process(tmp_path / "data", client_queue_limit=4)
    try:
        async with connect(f"{running.ws_url}/slow", max_queue=1, max_size=None) as slow:
            await slow.recv()  # the server's step 1
            await slow.send(codec.encode(SyncStep1(b"\x00")))
            await eventually(lambda: running.node.statistics().connections == 1)
            async with GatewayClient(running.ws_url, "slow") as writer:
                await writer.wait_synced()
                await writer.wait_durable(create_wide_wedding(writer, entries=30))

                def overflowed() -> bool:
                    return any(
                        isinstance(outlet.error, SlowClient)
                        for outlet in running.node.fanout.outlets.values()
                    )

                edits = 0
                while not overflowed():  # each edit is 260 KB for the slow reader
                    edits += 1
                    await writer.wait_durable(write_wide_notes(writer, f"{edits}:"))
                    assert edits < 400, "the slow client was never cut off"
                assert writer.connections == 1  # the writer is unaffected
            with pytest.raises(ConnectionClosed):
                await drain(slow)
            assert slow.close_code == 4001
    finally:
        await stop_in_process(running)


async def test_broadcast_frames_are_written_raw_under_uvicorn(gateway: RunningGateway) -> None:
    from gateway.adapters.websocket import RawFrameWriter

    async with GatewayClient(gateway.ws_url, "raw") as a, GatewayClient(gateway.ws_url, "raw") as b:
        await a.wait_synced()
        await b.wait_synced()
        writers = [outlet._writer for outlet in gateway.node.fanout.outlets.values()]
        assert [type(w) for w in writers] == [RawFrameWriter, RawFrameWriter]
        create_wide_wedding(a, entries=10)
        write_wide_notes(a, "n")  # frames with a 64-bit length (80 KB) and a 16-bit one (20 KB)
        a.set_core(venue="v" * 200)  # a frame with a 16-bit length
        await eventually(lambda: b.core() == a.core() and b.timeline() == a.timeline())
        assert b.core()["venue"] == "v" * 200
        assert [e["notes"] for e in b.timeline()] == ["n" + RING * 1999] * 10


async def test_an_admitted_client_keeps_no_upgrade_headers(gateway: RunningGateway) -> None:
    # uvicorn keeps the upgrade's request, response and header list for the connection's life:
    # kilobytes of every idle connection (issue 13, idle scale)
    headers = {"User-Agent": "a browser " + "x" * 500, "Cookie": "c=" + "y" * 500}
    async with connect(f"{gateway.ws_url}/admitted", additional_headers=headers) as ws:
        await ws.recv()  # the server's step 1: admitted and joined
        (outlet,) = gateway.node.fanout.outlets.values()
        protocol = outlet._writer._protocol
        assert (protocol.request, protocol.response, protocol.scope["headers"]) == (None, None, [])


async def test_deflate_connections_fall_back_to_asgi_sends(tmp_path: Path) -> None:
    from gateway.adapters.websocket import AsgiWriter

    running = await start_in_process(tmp_path / "data", ws_per_message_deflate=True)
    try:
        async with connect(f"{running.ws_url}/deflate", compression="deflate") as ws:
            await ws.recv()
            (outlet,) = running.node.fanout.outlets.values()
            assert isinstance(outlet._writer, AsgiWriter)
            await ws.send(codec.encode(SyncStep1(b"\x00")))
            assert isinstance(codec.decode(await ws.recv()), SyncStep2)  # type: ignore[arg-type]
    finally:
        await stop_in_process(running)


async def test_client_that_never_sends_step1_is_closed_with_4408(tmp_path: Path) -> None:
    running = await start_in_process(tmp_path / "data", handshake_timeout_seconds=0.2)
    try:
        async with connect(f"{running.ws_url}/silent") as silent:
            await silent.recv()  # the server's step 1, which it never answers
            with pytest.raises(ConnectionClosed):
                await drain(silent)
            assert silent.close_code == 4408
        async with GatewayClient(running.ws_url, "silent") as client:
            await client.wait_synced()  # a client that does the handshake stays
            await client.wait_durable(client.create_wedding("Ana Silva", "Bea Costa", venue="here"))
            assert client.core()["venue"] == "here"
    finally:
        await stop_in_process(running)
