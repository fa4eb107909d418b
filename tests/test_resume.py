"""Offline resume (issue 7, proto/spec.md §4.6): RESUME (epoch, offset, state vector) answered by
one CATCH_UP holding only what the client missed; a reset history tells old clients to reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc
from starlette.datastructures import Secret
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.adapters.postgres_store import migrate
from gateway.types import NodeId, RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import CatchUp, Feature, Hello, Resume

WEDDING = "resume-1"


async def created(client: GatewayClient) -> None:
    await client.wait_synced()
    client.create_wedding("Ana", "Bea", "confirmed", venue="Villa Rosa")
    for i in range(5):
        client.add_timeline_entry(id=f"e{i}", title=f"Entry {i}", start=f"1{i}:00")
    await client.wait_durable()


async def drain(ws: ClientConnection) -> None:
    """Read until the server closes the connection (raises ConnectionClosed)."""
    while True:
        await ws.recv()


def state(client: GatewayClient) -> dict[str, Any]:
    return {"core": client.core(), "timeline": client.timeline()}


async def test_offline_edits_on_both_sides_converge_after_a_resume(
    gateway: RunningGateway,
) -> None:
    async with (
        GatewayClient(gateway.ws_url, WEDDING) as phone,
        GatewayClient(gateway.ws_url, WEDDING) as planner,
    ):
        await created(phone)
        await eventually(lambda: state(planner) == state(phone))
        assert phone.protocol.epoch == 1
        await eventually(lambda: phone.protocol.position > 0, message="POSITION arrives")
        await phone.go_offline()
        phone.update_timeline_entry("e1", notes="Written offline on the phone")
        phone.set_core(guest_count=80)
        for i in range(20):
            planner.update_timeline_entry("e2", notes=f"planner edit {i}")
        planner.set_core(venue="Quinta")
        await planner.wait_durable()
        phone.go_online()
        await phone.wait_durable()
        await eventually(lambda: state(planner) == state(phone))
        assert phone.core()["venue"] == "Quinta"
        assert phone.core()["guest_count"] == 80
        assert phone.timeline()[1]["notes"] == "Written offline on the phone"
        whole = len(planner.doc.get_update())
        assert 0 < phone.protocol.catch_up_bytes[-1] < whole, "only what was missed"


async def test_a_resume_through_the_log_converges(gateway: RunningGateway) -> None:
    """A long-lived document with many deletions: the diff carries its whole delete set, the
    stored updates after the client's offset only what it missed."""
    async with (
        GatewayClient(gateway.ws_url, WEDDING) as phone,
        GatewayClient(gateway.ws_url, WEDDING) as planner,
    ):
        await created(phone)
        for i in range(150):  # scattered deletions
            planner.add_timeline_entry(id=f"tmp{i}", title="Temporary", start="09:00")
            planner.set_core(notes=f"churn {i}")
        await planner.wait_durable()
        for i in range(0, 150, 2):
            planner.remove_timeline_entry(f"tmp{i}")
        await planner.wait_durable()
        await eventually(lambda: state(planner) == state(phone))
        room = gateway.node.room(RoomId(WEDDING))
        await eventually(lambda: phone.protocol.position == room.position > 0)
        await phone.go_offline()
        planner.set_core(guest_count=42)
        await planner.wait_durable()
        diff = len(room.doc.get_update(phone.doc.get_state()))
        phone.go_online()
        await eventually(lambda: phone.core().get("guest_count") == 42)
        assert phone.protocol.catch_up_bytes[-1] <= diff  # which is smaller: tests/core
        assert state(phone) == state(planner)


async def test_a_resume_after_compaction_converges(tmp_path: Path) -> None:
    running = await start_in_process(tmp_path / "data", snapshot_every=10, room_idle_seconds=0.2)
    try:
        async with GatewayClient(running.ws_url, WEDDING) as phone:
            await created(phone)
            await eventually(lambda: phone.protocol.position > 0)
            await phone.go_offline()
            async with GatewayClient(running.ws_url, WEDDING) as planner:
                await planner.wait_synced()
                for i in range(60):  # several compactions pass the phone's offset
                    planner.update_timeline_entry("e3", notes=f"while away {i}")
                await planner.wait_durable()
                expected = state(planner)
            await eventually(lambda: running.node.room(RoomId(WEDDING)) is None)  # unloaded
            phone.go_online()
            await eventually(lambda: state(phone) == expected)
    finally:
        await stop_in_process(running)


async def test_a_reset_history_makes_old_clients_reset_instead_of_merging(
    gateway: RunningGateway,
) -> None:
    async with GatewayClient(gateway.ws_url, WEDDING) as old:
        await created(old)
        await old.go_offline()
        old.set_core(notes="edited offline before the reset")
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            answer = await http.post(f"/v1/weddings/{WEDDING}/reset")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"wedding_id": WEDDING, "epoch": 2}
        async with GatewayClient(gateway.ws_url, WEDDING) as new:
            await new.wait_synced()
            assert state(new) == {"core": {}, "timeline": []}
            new.create_wedding("Cy", "Dee")
            await new.wait_durable()
            old.go_online()
            await eventually(
                lambda: old.protocol.resets == 1,
                message=f"reset: epoch {old.protocol.epoch} closes {old.last_close} rejected",
            )
            await eventually(lambda: state(old) == state(new))
            assert old.core()["partner_a"] == "Cy"
            assert old.timeline() == [], "nothing of the old history came back"
            assert (old.protocol.epoch, new.protocol.epoch) == (2, 2)


async def test_a_stock_style_client_of_an_old_epoch_gets_the_whole_document_flagged_reset(
    gateway: RunningGateway,
) -> None:
    url = f"{gateway.ws_url}/{WEDDING}"
    async with connect(url) as ws:
        await ws.send(codec.encode(Hello(1, Feature.RESUME)))
        await ws.send(codec.encode(Resume(7, 3, b"\x00")))
        while not isinstance(message := codec.decode_server_message(await ws.recv()), CatchUp):
            pass
    assert message.reset
    assert message.epoch == 1


@pytest.mark.parametrize(
    "state_vector",
    [
        b"\x05\x01",
        b"\x01\x81",
        b"\x01\x01\x01\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    ],
    ids=["count-beyond-bytes", "truncated-varuint", "trailing-bytes", "overlong-varuint"],
)
async def test_a_malformed_state_vector_is_refused_cleanly(
    gateway: RunningGateway, state_vector: bytes
) -> None:
    message = bytes((104,)) + b"\x01\x01" + codec.write_var_bytes(state_vector)
    async with connect(f"{gateway.ws_url}/{WEDDING}") as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await drain(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4500
    async with GatewayClient(gateway.ws_url, WEDDING) as healthy:  # the node is unharmed
        await healthy.wait_synced()


@pytest.fixture
async def shared_postgres(postgres_dsn: str, postgres_schema: str) -> dict[str, Any]:
    await migrate(postgres_dsn, schema=postgres_schema)
    return {"database_url": Secret(postgres_dsn), "database_schema": postgres_schema}


async def test_a_client_resumes_on_another_node(
    tmp_path: Path, shared_postgres: dict[str, Any]
) -> None:
    broker = MemoryBroker()
    one = await start_in_process(
        tmp_path / "one", bus=MemoryBus(NodeId("one"), broker), **shared_postgres
    )
    two = await start_in_process(
        tmp_path / "two", bus=MemoryBus(NodeId("two"), broker), **shared_postgres
    )
    try:
        phone = GatewayClient([one.ws_url, two.ws_url], WEDDING)
        async with phone, GatewayClient(two.ws_url, WEDDING) as planner:
            await created(phone)
            await eventually(lambda: state(planner) == state(phone))
            await phone.go_offline()
            phone.update_timeline_entry("e0", notes="offline on the phone")
            for i in range(30):
                planner.update_timeline_entry("e4", notes=f"on node two {i}")
            await planner.wait_durable()
            phone.go_online()  # the next attempt goes to node two
            await phone.wait_durable()
            await eventually(lambda: state(phone) == state(planner))
            assert phone.url.startswith(two.ws_url)
            assert phone.timeline()[0]["notes"] == "offline on the phone"
    finally:
        await stop_in_process(two)
        await stop_in_process(one)


def test_a_doc_of_the_reset_is_a_new_object() -> None:
    """``GatewayClient.doc`` follows the protocol's Doc (a reset replaces it)."""
    client = GatewayClient("ws://127.0.0.1:9/ws", WEDDING)
    first = client.doc
    client.protocol.receive_data(codec.encode(CatchUp(2, 0, 1, Doc().get_update())))
    assert client.doc is not first


async def test_a_client_far_behind_gets_the_diff_without_a_read_of_the_log(
    tmp_path: Path,
) -> None:
    running = await start_in_process(tmp_path / "data", resume_log_max_updates=3)
    reads: list[int] = []
    store = running.node.store
    load_since = store.load_since

    async def counting(room: RoomId, offset: int) -> Any:
        reads.append(offset)
        return await load_since(room, offset)

    store.load_since = counting
    try:
        async with (
            GatewayClient(running.ws_url, WEDDING) as phone,
            GatewayClient(running.ws_url, WEDDING) as planner,
        ):
            await created(phone)
            room = running.node.room(RoomId(WEDDING))
            await eventually(lambda: phone.protocol.position == room.position > 0)
            await phone.go_offline()
            for i in range(2):  # within the bound: the log is read
                planner.set_core(guest_count=i)
            await planner.wait_durable()
            phone.go_online()
            await eventually(lambda: state(phone) == state(planner))
            assert len(reads) == 1
            await eventually(lambda: phone.protocol.position == room.position)
            await phone.go_offline()
            for i in range(10):  # beyond it: the diff answers at once
                planner.set_core(guest_count=100 + i)
            await planner.wait_durable()
            phone.go_online()
            await eventually(lambda: state(phone) == state(planner))
            assert len(reads) == 1
    finally:
        await stop_in_process(running)
