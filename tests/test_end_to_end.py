"""The gateway with the Python client: sync, durable acks, room lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway_client import GatewayClient, GatewayClosed
from tests.conftest import RunningGateway
from tests.helpers import eventually

COUPLE = {"partner_a": "Ana Silva", "partner_b": "Bea Costa", "status": "planning"}
"""The core fields every wedding holds from its first update (proto/schema.md)."""


async def test_two_clients_converge_and_acks_arrive(gateway: RunningGateway) -> None:
    async with (
        GatewayClient(gateway.ws_url, "w1") as a,
        GatewayClient(gateway.ws_url, "w1") as b,
    ):
        await a.wait_synced()
        await b.wait_synced()
        version = a.create_wedding("Ana Silva", "Bea Costa", venue="Villa Rosa", guest_count=120)
        entry = b.add_timeline_entry(start="15:00", end="15:30", title="Ceremony")
        await a.wait_durable(version)
        await b.wait_durable()
        expected = {**COUPLE, "venue": "Villa Rosa", "guest_count": 120}
        await eventually(lambda: b.core() == expected)
        await eventually(lambda: [e["id"] for e in a.timeline()] == [entry])
        assert a.protocol.acks_enabled
        assert a.protocol.unacked == 0


async def test_acknowledged_edits_survive_a_restart_and_compaction(tmp_path: Path) -> None:
    from tests.conftest import start_in_process, stop_in_process

    data = tmp_path / "data"
    first = await start_in_process(data, snapshot_every=5, room_idle_seconds=0.05)
    try:
        async with GatewayClient(first.ws_url, "durable") as client:
            await client.wait_synced()
            client.create_wedding("Ana Silva", "Bea Costa")
            for i in range(23):  # one update each: with the first, 24 updates, 4 compactions
                client.add_timeline_entry(id=f"item-{i}", title=f"Item {i}", start=f"{i:02d}:00")
            await client.wait_durable()
        await eventually(lambda: first.node.statistics().compactions >= 1)
        await eventually(lambda: first.node.statistics().rooms == 0)
    finally:
        await stop_in_process(first)
    second = await start_in_process(data)
    try:
        async with GatewayClient(second.ws_url, "durable") as reader:
            await reader.wait_synced()
            assert reader.core() == COUPLE
            assert [e["id"] for e in reader.timeline()] == [f"item-{i}" for i in range(23)]
    finally:
        await stop_in_process(second)


async def test_room_unloads_when_idle_and_reloads_with_everything(gateway: RunningGateway) -> None:
    async with GatewayClient(gateway.ws_url, "idle") as client:
        await client.wait_synced()
        client.add_timeline_entry(id="e1", start="10:00", end="11:00", title="Hair")
        await client.wait_durable()
    await eventually(lambda: gateway.node.statistics().rooms == 0)
    async with GatewayClient(gateway.ws_url, "idle") as client:
        await client.wait_synced()
        assert [e["title"] for e in client.timeline()] == ["Hair"]
    assert gateway.node.statistics().loads == 2


async def test_many_clients_opening_one_wedding_share_one_load(gateway: RunningGateway) -> None:
    clients = [GatewayClient(gateway.ws_url, "storm") for _ in range(40)]
    async with asyncio.TaskGroup() as tg:
        for client in clients:
            tg.create_task(client.__aenter__())
    try:
        await asyncio.gather(*(c.wait_synced() for c in clients))
        assert gateway.node.statistics().loads == 1
        clients[0].create_wedding("Ana Silva", "Bea Costa", venue="Barn")
        await eventually(lambda: all(c.core().get("venue") == "Barn" for c in clients))
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_offline_edits_are_resent_and_acknowledged(gateway: RunningGateway) -> None:
    async with (
        GatewayClient(gateway.ws_url, "offline") as phone,
        GatewayClient(gateway.ws_url, "offline") as planner,
    ):
        await phone.wait_synced()
        await planner.wait_synced()
        await planner.wait_durable(planner.create_wedding("Ana Silva", "Bea Costa"))
        await eventually(lambda: phone.core() == COUPLE)
        await phone.go_offline()
        phone.set_core(notes="first dance: song B")
        planner.set_core(venue="Lake House")
        await planner.wait_durable()
        assert phone.protocol.unacked == 1
        phone.go_online()
        await phone.wait_durable()
        await eventually(lambda: phone.core() == planner.core())
        assert planner.core() == {**COUPLE, "notes": "first dance: song B", "venue": "Lake House"}
        assert phone.connections == 2


async def test_shutdown_acknowledges_durable_edits_then_drains(tmp_path: Path) -> None:
    from tests.conftest import start_in_process, stop_in_process

    running = await start_in_process(tmp_path / "data")
    client = GatewayClient(running.ws_url, "drain", reconnect=False)
    async with client:
        await client.wait_synced()
        client.create_wedding("Ana Silva", "Bea Costa")
        for i in range(49):
            client.set_core(guest_count=i)
        await eventually(lambda: running.node.statistics().committer.committed >= 1)
        await stop_in_process(running)
        await eventually(lambda: client.last_close is not None)
        assert client.last_close == (1012, f"node {running.node.node_id} is shutting down")
        assert client.protocol.drain is not None
        assert client.protocol.unacked == 0  # every edit the node applied was acknowledged


async def test_a_node_that_closes_during_the_upgrade_is_retried_then_the_next_one_serves(
    gateway: RunningGateway,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # no HTTP answer at all: what an overloaded or restarting node does

    broken = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = broken.sockets[0].getsockname()[1]
    try:
        urls = [f"ws://127.0.0.1:{port}/ws", gateway.ws_url]  # rotated on reconnect
        async with GatewayClient(urls, "retried", delays=iter([0.0] * 10)) as client:
            await client.wait_synced()
            client.set_core(partner_a="Ana", partner_b="Bea", status="planning")
            await client.wait_durable()
            assert client.attempts >= 2
    finally:
        broken.close()
        await broken.wait_closed()


async def test_a_wedding_id_refused_before_the_upgrade_stops_the_client(
    gateway: RunningGateway,
) -> None:
    async with GatewayClient(gateway.ws_url, "not.a.wedding.id") as client:
        with pytest.raises(GatewayClosed) as closed:
            await client.wait_synced()
    assert closed.value.code == 1008
    assert "403" in closed.value.reason
