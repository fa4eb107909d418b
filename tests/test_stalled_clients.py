"""Sockets that do not read are closed (issue 18): by the outbox's byte bound, which counts
what the socket's transport still buffers, and by the keepalive ping timeout, whatever the
outbox holds. The gateway runs under uvicorn in this process (its WebSocket protocol,
gateway/adapters/uvicorn_ws.py, and the raw frame writer only exist there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from gateway_client import GatewayClient
from loadtest.faults.rawclients import RawClient, still_open
from tests.conftest import start_in_process, stop_in_process
from tests.helpers import eventually

ROOM = "stalled-wedding"


def closes(logs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["code"], e["by"]) for e in logs if e["event"] == "client_closed"]


async def test_clients_that_never_read_are_closed_while_writers_and_readers_go_on(
    tmp_path: Path,
) -> None:
    running = await start_in_process(
        tmp_path / "data",
        max_message_bytes=65536,
        client_outbox_bytes=131072,  # 128 KiB may wait for one client, transport included
        socket_send_buffer_bytes=65536,
        ws_ping_interval=0.0,  # no keepalive: the byte bound alone must close them
        messages_per_second=1e6,
        client_queue_limit=100_000,  # nor the message bound
    )
    stalled = [RawClient(f"{running.ws_url}/{ROOM}") for _ in range(4)]
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                GatewayClient(running.ws_url, ROOM) as writer,
                GatewayClient(running.ws_url, ROOM) as reader,
            ):
                await writer.wait_synced()
                await reader.wait_synced()
                writer.create_wedding(partner_a="Ana", partner_b="Bea")
                for stuck in stalled:
                    await stuck.open()
                await eventually(lambda: running.node.fanout.connections == 6)
                notes = "x" * 1500
                for n in range(400):  # ~600 KB to every member: more than a stalled one holds
                    writer.add_timeline_entry(
                        id=f"e{n}", title=f"entry {n}", start="14:00", notes=notes
                    )
                await writer.wait_durable()
                await eventually(lambda: len(reader.timeline()) == 400, timeout=30)
                await eventually(lambda: running.node.fanout.connections == 2, timeout=30)
                await eventually(lambda: still_open(os.getpid(), stalled) == [], timeout=20)
                assert writer.rejected == []
        # the four, and maybe a reader that fell behind the burst for a moment (it reconnected
        # and caught up above: a closed reader loses nothing)
        assert closes(logs).count((4001, "gateway")) >= 4
    finally:
        for stuck in stalled:
            stuck.close()
        await stop_in_process(running)


async def test_a_client_that_does_not_answer_pings_is_closed_whatever_its_outbox_holds(
    tmp_path: Path,
) -> None:
    running = await start_in_process(tmp_path / "data", ws_ping_interval=0.2, ws_ping_timeout=0.5)
    silent = RawClient(f"{running.ws_url}/{ROOM}")
    try:
        with structlog.testing.capture_logs() as logs:
            async with GatewayClient(running.ws_url, ROOM) as live:  # it answers pings
                await live.wait_synced()
                await silent.open()  # then never reads, so never answers a ping
                await eventually(lambda: running.node.fanout.connections == 2)
                await eventually(lambda: running.node.fanout.connections == 1, timeout=20)
                await eventually(lambda: still_open(os.getpid(), [silent]) == [], timeout=20)
                live.set_core(venue="Old Mill")
                await live.wait_durable()  # the live one was never touched
        (keepalive,) = [e for e in logs if e["event"] == "client_closed" and e["code"] == 4001]
        assert keepalive["by"] == "gateway"
        assert "keepalive ping" in keepalive["reason"]
        assert (1011, "gateway") not in closes(logs)
    finally:
        silent.close()
        await stop_in_process(running)
