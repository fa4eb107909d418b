"""Hostile updates through a running gateway: the process lives, the offender is closed with a
reason, the other clients are unaffected, and nothing bad is stored or broadcast (issue 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Decoder, Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.ports import Append
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway
from tests.core import update_builder as ub
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EXTENSION_VERSION,
    AwarenessUpdate,
    Feature,
    Hello,
    Reject,
    SyncUpdate,
)

CORPUS = {
    path.stem.rsplit("-", 1)[0]: [line.strip() for line in path.read_text().split("\n")]
    for path in sorted((Path(__file__).parent / "core" / "corpus").glob("*.hex"))
}
COUPLE = {"partner_a": "Ana Silva", "partner_b": "Bea Costa", "status": "planning"}
"""The core fields every wedding holds from its first update (proto/schema.md)."""


def clocks(doc: Doc[Any]) -> dict[int, int]:
    """The document's state vector as {client id: next clock}."""
    decoder = Decoder(doc.get_state())
    count = decoder.read_var_uint()
    return dict((decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(count))


async def send_raw(gateway: RunningGateway, room: str, message: bytes) -> tuple[int, str]:
    """Send one message on a fresh connection; return how the server closed it (or 1000)."""
    async with connect(f"{gateway.ws_url}/{room}", max_size=None) as ws:
        await ws.recv()  # the server's step 1: joined
        await ws.send(message)
        await ws.send(codec.encode(AwarenessUpdate(codec.encode_awareness([]))))  # a ping of ours
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
        return ws.close_code or 1006, ws.close_reason or ""


async def seed(gateway: RunningGateway, room: str, update: bytes) -> None:
    """Put ``update`` in the room's stored history before anyone joins (the room loads it).

    Written to the store directly: some corpus rooms hold content (a Y.Text root) the guard
    would refuse from a client."""
    await gateway.node.store.append([Append(RoomId(room), update)])


async def assert_refused_without_harm(
    gateway: RunningGateway, room: str, message: bytes, code: int = 4500
) -> str:
    async with GatewayClient(gateway.ws_url, room) as bystander:
        await bystander.wait_synced()
        seen = (bystander.core(), bystander.timeline())
        stored = gateway.node.statistics().updates_persisted
        closed, reason = await send_raw(gateway, room, message)
        assert closed == code, reason
        assert reason
        assert gateway.node.statistics().updates_persisted == stored  # nothing stored
        assert (bystander.core(), bystander.timeline()) == seen  # nothing broadcast
        # the node and the room still work: a valid edit is applied and made durable
        version = bystander.create_wedding("Ana Silva", "Bea Costa", status="confirmed")
        await bystander.wait_durable(version)
        assert bystander.core()["status"] == "confirmed"
        assert bystander.connections == 1
        return reason


@pytest.mark.parametrize("name", CORPUS, ids=list(CORPUS))
async def test_inputs_that_break_pycrdt_are_refused(gateway: RunningGateway, name: str) -> None:
    lines = CORPUS[name]
    room = f"corpus{list(CORPUS).index(name)}"
    if len(lines) > 1 and lines[1]:
        await seed(gateway, room, bytes.fromhex(lines[1]))
    await assert_refused_without_harm(
        gateway, room, codec.encode(SyncUpdate(bytes.fromhex(lines[0])))
    )


def nested(depth: int) -> bytes:
    value = ub.nested_list(depth)  # one Any value: ``depth`` nested arrays
    body = ub.item(ub.ANY, ub.varuint(1) + value, parent="core", key="notes")
    return ub.update([ub.section(5001, 0, [body])])


FAMILIES = {
    "nesting 65 levels": (nested(65), "deep"),
    "nesting 30,000 levels": (nested(30_000), "deep"),
    "clock at 2^32 - 1": (
        ub.update([ub.section(5002, 2**32 - 1, [ub.map_set("core", "venue", "x")])]),
        "clock",
    ),
    "subdocument": (
        ub.update(
            [
                ub.section(
                    5003, 0, [ub.item(9, ub.string("guid") + b"\x00", parent="core", key="sub")]
                )
            ]
        ),
        "",
    ),
    "unknown root": (ub.update([ub.section(5004, 0, [ub.map_set("budget", "x", 1)])]), "root"),
    "root type confusion": (
        ub.update([ub.section(5005, 0, [ub.item(ub.ANY, ub.any_content(1), parent="core")])]),
        "",
    ),
    "huge struct count": (ub.varuint(1) + ub.varuint(2**40) + ub.varuint(5006) + b"\x00", ""),
    "trailing bytes": (
        ub.update([ub.section(5007, 0, [ub.map_set("core", "venue", "x")])]) + b"\x00",
        "",
    ),
    "long varint": (b"\x01" + b"\xff" * 11, ""),
}


async def test_update_whose_dependency_the_room_lacks_is_refused_as_retryable(
    gateway: RunningGateway,
) -> None:
    # 4004: the room may only lack a peer's update; the client resends after reconnecting
    missing = ub.update([ub.section(5008, 0, [ub.map_set("core", "venue", "x", origin=(999, 5))])])
    reason = await assert_refused_without_harm(
        gateway, "missing", codec.encode(SyncUpdate(missing)), code=4004
    )
    assert "which the room lacks" in reason


@pytest.mark.parametrize("family", FAMILIES, ids=list(FAMILIES))
async def test_hostile_update_families_are_refused(gateway: RunningGateway, family: str) -> None:
    update, reason_part = FAMILIES[family]
    reason = await assert_refused_without_harm(
        gateway, "families", codec.encode(SyncUpdate(update))
    )
    assert reason_part in reason


async def first_reject(ws: ClientConnection) -> Reject:
    """Read messages until the server's first REJECT (proto/spec.md §4.4)."""
    while True:
        message = codec.decode_server_message(await ws.recv())  # type: ignore[arg-type]
        if isinstance(message, Reject):
            return message


async def test_nesting_of_64_levels_passes_the_guard_and_the_schema_undoes_it(
    gateway: RunningGateway,
) -> None:
    """64 levels is within the guard's depth limit: the update is applied, not refused with
    4500. A nested value is outside the schema (proto/schema.md), so the enforcer undoes it:
    nothing nested stays in the room, reaches a member, or is stored."""
    update = nested(64)
    async with GatewayClient(gateway.ws_url, "deep64") as reader:
        await reader.wait_synced()
        await reader.wait_durable(reader.create_wedding("Ana Silva", "Bea Costa"))
        stored = gateway.node.statistics().updates_persisted
        async with connect(f"{gateway.ws_url}/deep64") as writer:
            await writer.recv()
            await writer.send(codec.encode(Hello(EXTENSION_VERSION, Feature.REJECTS)))
            await writer.send(codec.encode(SyncUpdate(update)))
            reject = await first_reject(writer)
            assert reject.field == "core.notes"
            assert "must be a string" in reject.reason
            await (await writer.ping())  # the connection is still open: no 4500
            assert writer.close_code is None

        # the update's clock range reached the member, without its content
        await eventually(lambda: 5001 in clocks(reader.doc))
        assert reader.core() == COUPLE
        room = gateway.node.room(RoomId("deep64"))
        assert room is not None
        assert room.doc.get("core", type=Map).to_py() == COUPLE
        await eventually(lambda: gateway.node.statistics().updates_persisted == stored + 1)
        history = await gateway.node.store.load(RoomId("deep64"))
        rebuilt: Doc[Any] = Doc()
        for blob in history.blobs():
            assert ub.nested_list(2) not in blob  # not even two levels of it were stored
            rebuilt.apply_update(blob)
        assert 5001 in clocks(rebuilt)
        assert rebuilt.get("core", type=Map).to_py() == COUPLE


async def test_clock_squatting_is_refused_and_the_owner_keeps_its_edits(
    gateway: RunningGateway,
) -> None:
    async with GatewayClient(gateway.ws_url, "squat") as owner:
        await owner.wait_synced()
        await owner.wait_durable(owner.create_wedding("Ana Silva", "Bea Costa", venue="Hall"))
        client_id = owner.doc.client_id
        clock = clocks(owner.doc)[client_id]  # the owner's next clock
        squat = ub.update([ub.section(client_id, clock, [ub.map_set("core", "venue", "Barn")])])
        reason = await send_raw(gateway, "squat", codec.encode(SyncUpdate(squat)))
        assert reason == (4409, f"client id {client_id} belongs to another connection")
        await owner.wait_durable(owner.set_core(venue="Hall 2"))
        assert owner.core() == {**COUPLE, "venue": "Hall 2"}
