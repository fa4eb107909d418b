"""Two nodes on one in-memory bus: fan-out across nodes, never republished, never stored twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.types import NodeId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    broker = MemoryBroker()
    one = await start_in_process(tmp_path / "one", bus=MemoryBus(NodeId("one"), broker))
    two = await start_in_process(tmp_path / "two", bus=MemoryBus(NodeId("two"), broker))
    try:
        yield one, two
    finally:
        await stop_in_process(one)
        await stop_in_process(two)


async def test_edits_on_one_node_reach_clients_of_the_other(
    two_nodes: tuple[RunningGateway, RunningGateway],
) -> None:
    one, two = two_nodes
    async with (
        GatewayClient(one.ws_url, "w") as a,
        GatewayClient(two.ws_url, "w") as b,
    ):
        await a.wait_synced()
        await b.wait_synced()
        a.create_wedding("Ana Silva", "Bea Costa", venue="Orangery")
        b.add_timeline_entry(id="t1", start="14:00", end="14:30", title="Photos")
        wedding = {
            "partner_a": "Ana Silva",
            "partner_b": "Bea Costa",
            "status": "planning",
            "venue": "Orangery",
        }
        await eventually(lambda: b.core() == wedding)
        await eventually(lambda: [e["id"] for e in a.timeline()] == ["t1"])
        await a.wait_durable()
        await b.wait_durable()
        stats_one, stats_two = one.node.statistics(), two.node.statistics()
        assert stats_one.updates_persisted == 1  # its own client's edit only
        assert stats_two.updates_persisted == 1
        assert one.node.bus.statistics().published == 1  # bus traffic is never republished
        assert two.node.bus.statistics().published == 1
