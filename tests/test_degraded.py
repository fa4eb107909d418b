"""Degraded states are visible (issue 18): "store down" pauses acks and says so to the clients
that asked for them (STATUS, proto/spec.md §4.7) and on /readyz; "bus down" — Redis unreachable
or stalled — shows as delayed cross-node delivery on /readyz and in the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway import metrics
from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.redis_bus import RedisBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.errors import BackendUnavailable
from gateway.node import Node
from gateway.ports import Append
from gateway.types import NodeId, RoomId
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy
from tests.test_node import LIMITS, FakeOutlet, GatedStore, created_wedding, member
from wedsync_protocol.messages import Ack, Feature, Hello, Status, SyncUpdate

ACKS = Feature.ACKS | Feature.REJECTS


class FailingStore(GatedStore):
    """Appends fail as in an outage (BackendUnavailable) while ``down`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.down = False
        self.refused = 0

    async def append(self, batch: Sequence[Append]) -> list[int]:
        if self.down:
            self.refused += 1
            raise BackendUnavailable("the test's store is down")
        return await super().append(batch)


@pytest.fixture
async def failing_store(tmp_path: Path) -> AsyncIterator[FailingStore]:
    async with SqliteStore.open(tmp_path) as inner:
        yield FailingStore(inner)


def statuses(outlet: FakeOutlet) -> list[bool]:
    return [status.acks_paused for status in outlet.messages(Status)]


async def test_a_failing_store_pauses_acks_tells_the_clients_that_want_them_and_resumes(
    failing_store: FailingStore,
) -> None:
    async with Node(
        node_id=NodeId("n"), bus=MemoryBus(NodeId("n")), store=failing_store, limits=LIMITS
    ) as node:
        writer, stock = FakeOutlet(), FakeOutlet()
        slot, session = await member(node, writer, ACKS)
        await member(node, stock)  # a stock y-websocket client: no extension message, ever
        failing_store.down = True
        node.receive(slot, session, SyncUpdate(created_wedding()))
        await eventually(lambda: statuses(writer) == [True])
        assert not writer.messages(Ack)
        assert node.readiness()["store"] is False
        assert node.degraded() == {
            "store": "acks paused: appends to the store fail and are retried"
        }
        assert "gateway_store_up 0.0" in metrics.render(node).decode()

        late = FakeOutlet()
        await member(node, late, ACKS)  # joins while acks are paused: told after its HELLO
        kinds = [type(m) for m in late.events]
        assert kinds.index(Status) == kinds.index(Hello) + 1
        assert statuses(late) == [True]

        failing_store.down = False  # the committer's retry succeeds on its own
        await eventually(lambda: len(writer.messages(Ack)) == 1)
        assert statuses(writer) == [True, False]
        assert statuses(late) == [True, False]
        assert writer.events.index(writer.messages(Status)[1]) < writer.events.index(
            writer.messages(Ack)[0]
        )  # "resumed" comes before the acks it releases
        assert not stock.messages(Status)
        assert node.readiness()["store"] is True
        assert node.degraded() == {}


@pytest.mark.redis
async def test_a_stalled_redis_shows_as_delayed_delivery_then_recovers(
    redis_url: str, failing_store: FailingStore
) -> None:
    target = urlsplit(redis_url)
    assert target.hostname is not None
    async with TcpProxy(target.hostname, target.port or 6379) as proxy:
        url = redis_url.replace(target.netloc, f"127.0.0.1:{proxy.port}", 1)
        bus = RedisBus(
            url,
            node_id=NodeId("stall-test"),
            prefix=f"test-stall-{proxy.port}",
            probe_interval=0.05,
            stall_seconds=0.3,
            health_check_interval=60.0,  # long: the stall must show before any reconnect
        )
        async with (
            bus,
            Node(node_id=NodeId("stall-test"), bus=bus, store=failing_store, limits=LIMITS) as node,
        ):
            await member(node, FakeOutlet(), room=RoomId("stalled"))
            assert node.readiness()["bus"] is True
            proxy.stall()  # Redis stopped with SIGSTOP, as the node sees it
            await eventually(lambda: node.readiness()["bus"] is False, timeout=20)
            assert bus.statistics().connected  # nothing was closed: it just does not answer
            assert node.degraded() == {
                "bus": "cross-node delivery delayed: the bus does not answer"
            }
            assert "gateway_bus_up 0.0" in metrics.render(node).decode()
            proxy.resume()
            await eventually(lambda: node.readiness()["bus"] is True, timeout=20)
            assert node.degraded() == {}
