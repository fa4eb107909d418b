"""DESIGN.md §6: after kill -9 and a restart, every acknowledged edit is there."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from gateway_client import GatewayClient

from tests.conftest import RunningGateway, spawn_gateway, wait_listening

WRITERS = 3


async def write_until_killed(client: GatewayClient, name: str, sent: list[int]) -> None:
    """Edit as fast as acks allow (up to 100 edits in flight) until the connection dies."""
    await client.wait_synced()
    version = 0
    try:
        while True:
            for _ in range(50):
                version = client.set_core(**{f"{name}_{version + 1}": version + 1})
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

    writers = [GatewayClient(server.ws_url, "kill9", reconnect=False) for _ in range(WRITERS)]
    sent: list[list[int]] = [[] for _ in writers]
    for writer in writers:
        await writer.__aenter__()
    tasks = [
        asyncio.create_task(write_until_killed(w, f"w{i}", sent[i])) for i, w in enumerate(writers)
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
    for i, versions in enumerate(sent):
        present = {int(k.split("_")[1]) for k in core if k.startswith(f"w{i}_")}
        assert set(range(1, acked[i] + 1)) <= present, f"writer {i} lost acknowledged edits"
        assert present <= set(versions), f"writer {i} has edits it never sent"
