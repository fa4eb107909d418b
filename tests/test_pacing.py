"""Pace, don't cut (issue 13): a client over its rate is slowed by backpressure and closed with
4429 only when the excess lasts; a member that reads slowly gets the document updates it is
behind on collapsed into one, and is closed (4001) only when it does not drain at all. The
gateway runs under uvicorn in this process (the raw frame writer only exists there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from pycrdt import Array, Doc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway_client import GatewayClient
from loadtest.faults.rawclients import RawClient, still_open
from tests.conftest import start_in_process, stop_in_process
from tests.helpers import eventually
from tests.test_connection import send_until_closed
from wedsync_protocol import codec
from wedsync_protocol.messages import EMPTY_UPDATE, SyncUpdate

ROOM = "paced-wedding"
BURST = 500
"""Timeline entries one client sends at once (an import): more than GATEWAY_MESSAGE_BURST."""


def closes(logs: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(e["code"], e["by"], e["reason"]) for e in logs if e["event"] == "client_closed"]


def timeline_length(doc: Doc[Any]) -> int:
    return len(doc.get("timeline", type=Array))


async def test_a_burst_of_500_entries_is_paced_and_a_slow_member_gets_every_one(
    tmp_path: Path,
) -> None:
    running = await start_in_process(
        tmp_path / "data",
        client_queue_limit=16,  # the slow member falls behind within the burst
        client_outbox_bytes=1 << 20,
        socket_send_buffer_bytes=4096,
        ws_ping_interval=0.0,  # the slow member answers no ping while it does not read
    )  # the rates are the defaults: 200 messages/s, a burst of 400
    slow = RawClient(f"{running.ws_url}/{ROOM}")
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                GatewayClient(running.ws_url, ROOM) as writer,
                GatewayClient(running.ws_url, ROOM) as reader,
            ):
                await writer.wait_synced()
                await reader.wait_synced()
                await writer.wait_durable(writer.create_wedding(partner_a="Ana", partner_b="Bea"))
                await slow.open()  # it reads nothing until the burst is over
                await eventually(lambda: running.node.fanout.connections == 3)
                for n in range(BURST):  # one message each, as fast as the client can send
                    writer.add_timeline_entry(id=f"e{n}", title=f"entry {n}", start="14:00")
                await writer.wait_durable()
                await eventually(lambda: len(reader.timeline()) == BURST, timeout=30)
                doc: Doc[Any] = Doc()
                others = await slow.read_into(doc, lambda d: timeline_length(d) == BURST)
                assert [f for f in others if f.opcode.name == "CLOSE"] == []
                assert (writer.connections, reader.connections) == (1, 1)
                assert writer.rejected == []
                assert len(writer.timeline()) == BURST
        assert closes(logs) == [(1000, "client", ""), (1000, "client", "")]
        caught_up = [e for e in logs if e["event"] == "client_caught_up"]
        assert caught_up, "the slow member never fell behind: the test proves nothing"
        assert sum(e["collapsed"] for e in caught_up) > sum(e["into"] for e in caught_up)
        paced = [e["paced_seconds"] for e in logs if e["event"] == "client_closed"]
        assert max(paced) > 0  # the writer went over its burst of 400, and was held back
    finally:
        slow.close()
        await stop_in_process(running)


async def test_a_client_that_stays_over_its_rate_is_closed_with_4429(tmp_path: Path) -> None:
    running = await start_in_process(
        tmp_path / "data",
        messages_per_second=20.0,
        message_burst=10,
        rate_pacing_seconds=0.5,  # held back half a second in a minute: closed
    )
    try:
        async with GatewayClient(running.ws_url, "rate") as calm:
            await calm.wait_synced()
            async with connect(f"{running.ws_url}/rate") as flood:
                await flood.recv()
                empty = codec.encode(SyncUpdate(EMPTY_UPDATE))  # answered by nothing: the
                with pytest.raises(ConnectionClosed):  # flood reads only the close frame
                    await send_until_closed(flood, empty)
                assert flood.close_code == 4429
                assert "for too long" in (flood.close_reason or "")
            version = calm.create_wedding("Ana Silva", "Bea Costa", venue="unaffected")
            await calm.wait_durable(version)
            assert calm.core()["venue"] == "unaffected"
    finally:
        await stop_in_process(running)


async def test_a_member_that_does_not_drain_is_closed_after_the_drain_timeout(
    tmp_path: Path,
) -> None:
    running = await start_in_process(
        tmp_path / "data",
        client_queue_limit=4,
        socket_send_buffer_bytes=4096,
        client_drain_timeout=0.5,
        ws_ping_interval=0.0,  # no keepalive: the drain timeout alone must close it
    )
    stuck = RawClient(f"{running.ws_url}/{ROOM}")
    try:
        with structlog.testing.capture_logs() as logs:
            async with GatewayClient(running.ws_url, ROOM) as writer:
                await writer.wait_synced()
                writer.create_wedding(partner_a="Ana", partner_b="Bea")
                await stuck.open()
                await eventually(lambda: running.node.fanout.connections == 2)
                notes = "x" * 1500
                for n in range(200):  # ~300 KB: more than the socket and its transport hold
                    writer.add_timeline_entry(id=f"e{n}", title="t", start="14:00", notes=notes)
                await writer.wait_durable()
                await eventually(lambda: still_open(os.getpid(), [stuck]) == [], timeout=20)
                assert writer.connections == 1
        reasons = [reason for code, by, reason in closes(logs) if (code, by) == (4001, "gateway")]
        assert reasons == ["behind for 0.5 s: it does not read"]
    finally:
        stuck.close()
        await stop_in_process(running)
