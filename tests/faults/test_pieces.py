"""The fault suite's parts without a cluster: proxy, recorder, checker (fast)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from gateway_client import Acknowledgement
from loadtest.faults.checker import LogSummary, longest_gap, missing
from loadtest.faults.proxy import TcpProxy
from loadtest.faults.recorder import DOUBLE_ACK, REPEATED_ACK, UNSENT_ACK, Edit, Writer
from tests.helpers import eventually

STEP_TIMEOUT = 10.0
"""Seconds one step may take before the test fails there (hang protection, not a bound)."""


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """An echo server on a free port; its connections are closed on exit."""
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            with contextlib.suppress(OSError):
                while data := await reader.read(1024):
                    writer.write(data)
        finally:
            await close(writer)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def roundtrip(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    try:
        return await reader.read(4)
    finally:
        await close(writer)


async def test_a_partition_refuses_and_a_heal_pipes_again_on_the_same_port() -> None:
    async with echo_server() as port, TcpProxy("127.0.0.1", port) as proxy:
        assert await roundtrip(proxy.port) == b"ping"
        held_reader, held = await asyncio.open_connection("127.0.0.1", proxy.port)
        here = held.get_extra_info("sockname")
        await eventually(lambda: here in {t.get_extra_info("peername") for t in proxy.transports})
        async with asyncio.timeout(STEP_TIMEOUT):
            await proxy.partition()
        async with asyncio.timeout(STEP_TIMEOUT):
            with contextlib.suppress(ConnectionResetError):  # an abort may arrive as a reset
                assert await held_reader.read() == b""  # the held connection was cut
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                await roundtrip(proxy.port)
            raise AssertionError("a partitioned proxy accepted a connection")
        except OSError:
            pass
        async with asyncio.timeout(STEP_TIMEOUT):
            await proxy.heal()
            assert await roundtrip(proxy.port) == b"ping"
        await close(held)


async def test_a_blackhole_forwards_nothing_until_healed() -> None:
    async with echo_server() as port, TcpProxy("127.0.0.1", port) as proxy:
        await proxy.partition(blackhole=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        await eventually(lambda: len(proxy.transports) == 1)  # the proxy (its thread) holds it
        await proxy.heal()  # the held connection is aborted: its bytes are gone
        with contextlib.suppress(ConnectionResetError):  # the abort may arrive as a reset
            assert await reader.read(4) == b""
        await close(writer)
        assert await roundtrip(proxy.port) == b"ping"


def test_the_recorder_marks_edits_durable_and_counts_ack_defects() -> None:
    writer = Writer("w0", "room", ["ws://127.0.0.1:9/ws"], 1.0)
    writer.edit()
    writer.edit()
    writer.client.connections = 1
    writer._on_ack(Acknowledgement(seq=1, sent=2, durable_before=0, durable_after=1))
    writer._on_ack(Acknowledgement(seq=1, sent=2, durable_before=1, durable_after=1))
    writer._on_ack(Acknowledgement(seq=3, sent=2, durable_before=1, durable_after=2))
    writer._on_ack(Acknowledgement(seq=4, sent=4, durable_before=1, durable_after=2))
    assert [e.acked is not None for e in writer.edits] == [True, True]
    assert writer.defects == {REPEATED_ACK: 1, UNSENT_ACK: 1, DOUBLE_ACK: 1}


def test_missing_names_acked_edits_absent_from_a_document() -> None:
    edits = [Edit("w0", 1, 1, None, 0.0), Edit("w0", 2, 2, "f-w0-2", 0.0)]
    content = {"core": {"partner_a": "Ana"}, "timeline": [{"id": "f-w0-1"}]}
    assert missing(edits, content) == [edits[1]]
    assert missing(edits[:1], {"core": {}, "timeline": []}) == edits[:1]


def test_longest_gap_is_between_consecutive_acks() -> None:
    assert longest_gap([3.0, 1.0, 1.5]) == 1.5
    assert longest_gap([1.0]) == 0.0


def test_the_log_summary_counts_close_codes_1011s_and_tracebacks(tmp_path: Path) -> None:
    lines = [
        {"event": "client_closed", "code": 1000, "level": "info"},
        {"event": "client_closed", "code": 1011, "reason": "boom", "level": "info"},
        {"event": "room_failed", "level": "error", "exception": "Traceback ...\nValueError: x"},
    ]
    log = tmp_path / "a.log"
    text = "\n".join(json.dumps(line) for line in lines)
    log.write_text(text + "\nWARNING:asyncpg.pool:retrying\nTraceback (most recent call last):\n")
    summary = LogSummary.read([log])
    assert summary.close_codes == {1000: 1, 1011: 1}
    assert summary.internal_errors == ["a: boom"]
    assert summary.tracebacks == ["a: room_failed: ValueError: x"]
    assert summary.foreign_tracebacks == ["a: WARNING:asyncpg.pool:retrying"]
    assert summary.errors == {"room_failed": 1}
