"""Batched document broadcasts (GATEWAY_BROADCAST_BATCH_MS): a room's updates are held for a few
milliseconds and written merged, as one message; awareness and everything else is not held."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EXTENSION_VERSION,
    Ack,
    AwarenessEntry,
    AwarenessUpdate,
    CatchUp,
    Feature,
    Hello,
    Message,
    Position,
    Resume,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

EDITS = 40
HELD_FOR_THE_TEST_MS = 600_000.0
"""Longer than any test runs: what is held comes out only when the node flushes it (drain)."""


@pytest.fixture
async def batching(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(tmp_path / "data", broadcast_batch_ms=20)
    try:
        yield running
    finally:
        await stop_in_process(running)


async def joined(gateway: RunningGateway, room: str, *hello: bytes) -> ClientConnection:
    """A raw client, LIVE in ``room`` (its sync step 1 answered) once this returns."""
    ws = await connect(f"{gateway.ws_url}/{room}", max_size=None)
    for message in hello:
        await ws.send(message)
    await ws.send(codec.encode(SyncStep1(Doc().get_state())))
    while not isinstance(await receive(ws), SyncStep2 | CatchUp):
        pass
    return ws


async def receive(ws: ClientConnection) -> Message:
    data = await ws.recv()
    assert isinstance(data, bytes)
    return codec.decode_server_message(data)


def wedding_update(doc: Doc[Any]) -> bytes:
    """The wedding's first update, with its required core fields (proto/schema.md)."""
    doc.get("core", type=Map).update({"partner_a": "Ana", "partner_b": "Bea", "status": "planning"})
    return doc.get_update()


async def test_two_clients_converge_and_their_edits_are_acknowledged(
    batching: RunningGateway,
) -> None:
    async with (
        GatewayClient(batching.ws_url, "batched") as a,
        GatewayClient(batching.ws_url, "batched") as b,
    ):
        await a.wait_synced()
        await b.wait_synced()
        await a.wait_durable(a.create_wedding("Ana", "Bea", venue="Villa Rosa"))
        for i in range(5):
            a.add_timeline_entry(id=f"a{i}", title=f"A {i}", start=f"1{i}:00")
            b.set_core(guest_count=100 + i)
        await a.wait_durable()
        await b.wait_durable()
        await eventually(lambda: a.core() == b.core() and a.timeline() == b.timeline())
        assert b.core()["guest_count"] == 104
        assert [e["id"] for e in b.timeline()] == [f"a{i}" for i in range(5)]


async def test_rapid_edits_reach_a_peer_in_fewer_messages_than_edits(
    batching: RunningGateway,
) -> None:
    reader = await joined(batching, "rapid")
    received: Doc[Any] = Doc()
    messages = 0
    async with GatewayClient(batching.ws_url, "rapid") as writer:
        await writer.wait_synced()
        writer.create_wedding("Ana", "Bea")
        for i in range(EDITS - 1):  # sent back to back, faster than the 20 ms batch
            writer.add_timeline_entry(id=f"e{i}", title=f"Entry {i}", start="12:00")
        entries = received.get("timeline", type=Array)
        while len(entries) < EDITS - 1:
            message = await receive(reader)
            if isinstance(message, SyncUpdate):
                messages += 1
                received.apply_update(message.update)
        assert received.get_update(writer.doc.get_state()) == b"\x00\x00"
        assert entries.to_py() == writer.timeline()
        assert received.get("core", type=Map).to_py() == writer.core()
    await reader.close()
    assert 0 < messages < EDITS


async def test_awareness_is_not_held_and_drain_writes_what_is_held(tmp_path: Path) -> None:
    """The document update is held (for ten minutes here), the awareness sent after it
    arrives at once; a draining node writes the held update before closing."""
    running = await start_in_process(tmp_path / "data", broadcast_batch_ms=HELD_FOR_THE_TEST_MS)
    try:
        watcher = await joined(running, "presence")
        editor = await joined(running, "presence")
        doc: Doc[Any] = Doc(client_id=7)
        await editor.send(codec.encode(SyncUpdate(wedding_update(doc))))
        entry = AwarenessEntry(7, 1, '{"user":{"name":"Ana"}}')
        await editor.send(codec.encode(AwarenessUpdate(codec.encode_awareness([entry]))))
        before: list[Message] = []
        while not isinstance(message := await receive(watcher), AwarenessUpdate):
            before.append(message)
        assert not any(isinstance(m, SyncUpdate) for m in before)
        assert codec.decode_awareness(message.payload, max_entries=8) == [entry]
    finally:
        await stop_in_process(running)
    after = await received_until_closed(watcher)
    updates = [m.update for m in after if isinstance(m, SyncUpdate)]
    assert len(updates) == 1
    watched: Doc[Any] = Doc()
    watched.apply_update(updates[0])
    assert watched.get("core", type=Map).to_py() == doc.get("core", type=Map).to_py()


async def test_a_position_waits_for_the_held_updates_it_covers(tmp_path: Path) -> None:
    """POSITION says the client's document holds every stored update up to an offset: it must
    not overtake a held update (a resume from that offset would skip it)."""
    running = await start_in_process(tmp_path / "data", broadcast_batch_ms=HELD_FOR_THE_TEST_MS)
    try:
        resume = Feature.ACKS | Feature.RESUME
        watcher = await connect(f"{running.ws_url}/position", max_size=None)
        await watcher.send(codec.encode(Hello(EXTENSION_VERSION, resume)))
        await watcher.send(codec.encode(Resume(0, 0, Doc().get_state())))
        while not isinstance(await receive(watcher), CatchUp):
            pass
        editor = await joined(running, "position", codec.encode(Hello(EXTENSION_VERSION, resume)))
        await editor.send(codec.encode(SyncUpdate(wedding_update(Doc(client_id=7)))))
        while not isinstance(await receive(editor), Ack):
            pass  # durable: the room's position has moved past the held update
    finally:
        await stop_in_process(running)
    after = await received_until_closed(watcher)
    kinds = [type(m) for m in after if isinstance(m, SyncUpdate | Position)]
    # the POSITION follows the flush on drain, unless the room task unloads the room first
    # (a node announces nothing for an unloading room): it never comes before the update
    assert kinds in ([SyncUpdate, Position], [SyncUpdate])


async def received_until_closed(ws: ClientConnection) -> list[Message]:
    messages = []
    try:
        while True:
            messages.append(await receive(ws))
    except ConnectionClosed:
        return messages
