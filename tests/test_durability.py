"""DESIGN.md §6: after kill -9 and a restart, every acknowledged edit is there."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Decoder, Doc

from gateway_client import GatewayClient
from tests.conftest import RunningGateway, spawn_gateway, wait_listening

KEYS = ("notes", "venue", "venue_address")
"""One core field per writer: each edit writes the writer's name and its local version there."""


def clocks(doc: Doc[Any]) -> dict[int, int]:
    """The document's state vector as {client id: next clock}."""
    decoder = Decoder(doc.get_state())
    count = decoder.read_var_uint()
    return dict((decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(count))


async def write_until_killed(client: GatewayClient, key: str, sent: list[int]) -> None:
    """Edit as fast as acks allow (up to 100 edits in flight) until the connection dies.

    Edit ``n`` writes ``<key>_<n>`` to ``key``: one struct, at the writer's clock ``n - 1``.
    Yjs integrates a client's structs in clock order, so a document holding edit ``n`` holds
    every earlier edit of that writer, or what overwrote it."""
    await client.wait_synced()
    version = 0
    try:
        while True:
            for _ in range(50):
                version = client.set_core(**{key: f"{key}_{version + 1}"})
                sent.append(version)
            await client.wait_durable(version - 50)
    except Exception:
        return  # the server was killed under us: stop writing


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_edit(
    tmp_path: Path, gateway_processes: list[RunningGateway]
) -> None:
    data = tmp_path / "data"
    # this test writes as fast as acks allow: lift the per-client rate limit
    server = spawn_gateway(data, GATEWAY_SNAPSHOT_EVERY="50", GATEWAY_MESSAGES_PER_SECOND="1e6")
    gateway_processes.append(server)
    await wait_listening(server)

    async with GatewayClient(server.ws_url, "kill9") as planner:  # a wedding has a couple
        await planner.wait_synced()
        await planner.wait_durable(planner.create_wedding("Ana Silva", "Bea Costa"))
    writers = [GatewayClient(server.ws_url, "kill9", reconnect=False) for _ in KEYS]
    sent: list[list[int]] = [[] for _ in writers]
    for writer in writers:
        await writer.__aenter__()
    tasks = [
        asyncio.create_task(write_until_killed(w, KEYS[i], sent[i])) for i, w in enumerate(writers)
    ]
    try:
        while sum(w.protocol.durable_version for w in writers) < 3000:
            await asyncio.wait(tasks, timeout=0.01)  # poll the ack counters
            assert not all(t.done() for t in tasks), "writers stopped before the kill"
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        acked = [w.protocol.durable_version for w in writers]  # nothing can be acked after this
        server.process.wait()
        await asyncio.gather(*tasks)
    finally:
        for writer in writers:
            await writer.__aexit__(None, None, None)
    assert all(versions for versions in sent)

    restarted = spawn_gateway(data, port=server.port)
    gateway_processes.append(restarted)
    await wait_listening(restarted)
    async with GatewayClient(restarted.ws_url, "kill9", acks=False) as reader:
        await reader.wait_synced()
        core = reader.core()
        stored = clocks(reader.doc)
    assert (core["partner_a"], core["partner_b"]) == ("Ana Silva", "Bea Costa")
    for i, (writer, key, versions) in enumerate(zip(writers, KEYS, sent, strict=True)):
        present = int(core[key].removeprefix(f"{key}_"))  # the newest edit the store holds
        assert stored[writer.doc.client_id] >= acked[i], f"writer {i} lost acknowledged edits"
        assert present >= acked[i], f"writer {i} lost acknowledged edits"
        assert present in versions, f"writer {i} has an edit it never sent"
        assert stored[writer.doc.client_id] == present, f"writer {i}: clocks and values differ"
