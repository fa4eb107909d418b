"""RedisBus against the real Redis: the Bus contract (plain and sharded), wire format, loss.

Every test uses a key prefix of its own (``test-<uuid12>``); nothing is flushed. Connections are
killed only by their own CLIENT ID, never by type alone. Slots are moved only on a private
one-node cluster that the test starts and stops (``cluster_url``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgpack
import pytest
import redis
from redis.asyncio import Redis

from gateway.adapters.redis_bus import RedisBus
from gateway.errors import BackendUnavailable
from gateway.ports import Bus, BusMessage, is_loss_marker
from gateway.types import NodeId, RoomId
from tests.adapters.contracts import (
    OTHER_ROOM,
    ROOM,
    BusContract,
    BusFactory,
    assert_ordered_and_losses_reported,
    next_message,
)
from tests.conftest import free_port
from tests.helpers import eventually

pytestmark = pytest.mark.redis

RedisBusFactory = Callable[..., Awaitable[RedisBus]]


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid4().hex[:12]}"


@pytest.fixture
async def connect_bus(redis_url: str, prefix: str) -> AsyncIterator[RedisBusFactory]:
    """Opens RedisBus nodes sharing this test's prefix; closes them after the test."""
    async with AsyncExitStack() as stack:

        async def connect(node_id: str, *, url: str | None = None, **options: Any) -> RedisBus:
            bus = RedisBus(url or redis_url, node_id=NodeId(node_id), prefix=prefix, **options)
            return await stack.enter_async_context(bus)

        yield connect


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster_url(redis_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A private one-node Redis Cluster serving every slot, stopped after the test.

    Only a cluster takes a shard channel's subscription away on its own (a slot leaving the
    node); the shared Redis is standalone, and its slots are not ours to move.
    """
    server = shutil.which("redis-server")
    if server is None or not supports_sharded_pubsub(redis_url):
        pytest.skip("a private Redis Cluster needs redis-server 7 on this machine")
    port = free_port()
    options = {
        "bind": "127.0.0.1",
        "port": str(port),
        "cluster-port": str(free_port()),
        "cluster-enabled": "yes",
        "cluster-config-file": str(tmp_path / "nodes.conf"),
        "dir": str(tmp_path),
        "save": "",
        "appendonly": "no",
    }
    args = [part for name, value in options.items() for part in (f"--{name}", value)]
    process = await asyncio.create_subprocess_exec(server, *args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    client = Redis.from_url(url)
    try:
        await eventually(lambda: cluster_info(client, "ready"), timeout=20)
        await client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        # A master leaving cluster_state:fail waits CLUSTER_WRITABLE_DELAY (2 s, cluster.c).
        await eventually(lambda: cluster_info(client, "ok"), timeout=20)
        yield url
    finally:
        await client.aclose()
        process.terminate()  # our own server, by its process
        await process.wait()


async def cluster_info(client: Redis, want: str) -> bool:
    """``ready``: the server answers; ``ok``: it serves every slot (cluster_state:ok)."""
    try:
        info = await client.execute_command("CLUSTER", "INFO")
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False
    return want == "ready" or b"cluster_state:ok" in info


def limit(queue_limit: int | None) -> dict[str, int]:
    """RedisBus options for a contract's ``queue_limit`` (None: the bus's default)."""
    return {} if queue_limit is None else {"queue_limit": queue_limit}


def supports_sharded_pubsub(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return int(version.split(".")[0]) >= 7


class TestRedisBus(BusContract):
    @pytest.fixture
    def make_bus(self, connect_bus: RedisBusFactory) -> BusFactory:
        async def make(node_id: str, *, queue_limit: int | None = None) -> Bus:
            return await connect_bus(node_id, **limit(queue_limit))

        return make


class TestShardedRedisBus(BusContract):
    @pytest.fixture
    def make_bus(self, connect_bus: RedisBusFactory, redis_url: str) -> BusFactory:
        if not supports_sharded_pubsub(redis_url):
            pytest.skip("this Redis has no SPUBLISH (sharded pub/sub needs Redis 7)")

        async def make(node_id: str, *, queue_limit: int | None = None) -> Bus:
            return await connect_bus(node_id, sharded=True, **limit(queue_limit))

        return make


async def raw_envelope(admin: Redis, bus: RedisBus, payload: bytes) -> list[Any]:
    """What ``bus`` writes to Redis when it publishes ``payload`` in ROOM, unpacked."""
    async with admin.pubsub() as raw:
        await raw.subscribe(bus.channel(ROOM))
        bus.publish_nowait(ROOM, payload)
        message = None
        while message is None or message["type"] != "message":
            message = await raw.get_message(timeout=5)
            assert message is not None
    envelope: list[Any] = msgpack.unpackb(message["data"])
    return envelope


async def test_a_room_is_one_hash_tagged_channel_of_msgpack_envelopes(
    connect_bus: RedisBusFactory, admin: Redis, prefix: str
) -> None:
    bus = await connect_bus("node-a", send_time=False)
    assert bus.channel(ROOM) == f"{prefix}:room:{{{ROOM}}}"
    assert await raw_envelope(admin, bus, b"\x00update") == [1, "node-a", 1, b"\x00update"]


async def test_an_envelope_carries_its_send_time_and_the_receiver_observes_the_lag(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")
    before = time.time()
    envelope = await raw_envelope(admin, a, b"first")
    assert envelope[:4] == [1, "node-a", 1, b"first"]
    assert before <= envelope[4] <= time.time()
    lags: list[float] = []
    b.lag_observer = lags.append
    async with b.subscribe(ROOM) as messages:
        a.publish_nowait(ROOM, b"stamped")
        await admin.publish(b.channel(ROOM), msgpack.packb([1, "old-node", 1, b"unstamped"]))
        received = [await next_message(messages), await next_message(messages)]
    assert [m.payload for m in received] == [b"stamped", b"unstamped"]  # both read
    assert len(lags) == 1  # only the stamped one has a lag
    assert 0 <= lags[0] < 60  # a bound against garbage, not a performance assert


async def test_one_pubsub_connection_serves_every_room_of_a_node(
    connect_bus: RedisBusFactory, admin: Redis, prefix: str
) -> None:
    bus = await connect_bus("node-b")
    async with bus.subscribe(ROOM), bus.subscribe(ROOM), bus.subscribe(ROOM + "-2"):
        clients = await admin.client_list(_type="pubsub")
        ours = [c for c in clients if c["name"] == f"{prefix}-bus-node-b"]
        assert [int(c["id"]) for c in ours] == [bus.subscriber_client_id]
        assert int(ours[0]["sub"]) == 2
        assert bus.statistics().rooms == 2
    await eventually(lambda: bus.statistics().rooms == 0)


async def test_a_lost_pubsub_connection_is_reported_then_repaired(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        a.publish_nowait(ROOM, b"before")
        assert (await next_message(messages)).payload == b"before"
        killed = await admin.execute_command(
            "CLIENT", "KILL", "ID", str(b.subscriber_client_id), "TYPE", "pubsub"
        )
        assert killed == 1
        assert is_loss_marker(await next_message(messages))  # after resubscribing
        assert b.statistics().reconnects == 1
        a.publish_nowait(ROOM, b"after")
        message = await next_message(messages)
    assert (message.payload, message.seq) == (b"after", 2)


async def test_every_room_of_a_node_gets_a_loss_marker_once_its_connection_is_back(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")
    received: dict[str, list[BusMessage]] = {ROOM: [], OTHER_ROOM: []}
    async with b.subscribe(ROOM) as first, b.subscribe(OTHER_ROOM) as second:
        inboxes = {ROOM: first, OTHER_ROOM: second}
        killed = await admin.execute_command(
            "CLIENT", "KILL", "ID", str(b.subscriber_client_id), "TYPE", "pubsub"
        )
        assert killed == 1
        for room in inboxes:
            a.publish_nowait(room, b"1")  # lost if Redis gets it before b is subscribed again
        for room, messages in inboxes.items():
            received[room].append(await next_message(messages))  # the marker, first
        for room in inboxes:
            a.publish_nowait(room, b"2")
        for room, messages in inboxes.items():
            while received[room][-1].seq != 2:
                received[room].append(await next_message(messages))
    assert b.statistics().reconnects == 1
    for got in received.values():
        assert is_loss_marker(got[0])
        assert_ordered_and_losses_reported(got)


async def test_a_subscribe_that_returns_before_redis_confirmed_it_yields_a_loss_marker_first(
    connect_bus: RedisBusFactory,
) -> None:
    a = await connect_bus("node-a")
    b = await connect_bus("node-b", subscribe_timeout=0)  # returns before any reply can arrive
    async with b.subscribe(ROOM) as messages:
        a.publish_nowait(ROOM, b"1")  # lost if Redis gets it before the SUBSCRIBE
        received = [await next_message(messages)]  # the marker, once Redis confirmed
        a.publish_nowait(ROOM, b"2")
        while received[-1].seq != 2:
            received.append(await next_message(messages))
    assert is_loss_marker(received[0])
    assert_ordered_and_losses_reported(received)


async def test_a_peer_that_restarts_its_seq_yields_a_loss_marker_before_its_first_message(
    connect_bus: RedisBusFactory,
) -> None:
    b = await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        before = await connect_bus("node-a")
        before.publish_nowait(ROOM, b"1")
        before.publish_nowait(ROOM, b"2")
        received = [await next_message(messages) for _ in range(2)]
        await before.aclose()  # what it had not sent when it stopped is lost to b
        restarted = await connect_bus("node-a")  # the same node id: its seq starts again at 1
        restarted.publish_nowait(ROOM, b"1")
        received += [await next_message(messages) for _ in range(2)]
    assert [(m.seq, m.payload) for m in received] == [(1, b"1"), (2, b"2"), (0, b""), (1, b"1")]
    assert b.statistics().gaps == 1


async def test_a_shard_channel_that_redis_drops_is_subscribed_again_with_a_loss_marker(
    cluster_url: str, connect_bus: RedisBusFactory
) -> None:
    # cluster_url comes first so that it is torn down last: the buses close while it runs.
    a = await connect_bus("node-a", url=cluster_url, sharded=True)
    b = await connect_bus("node-b", url=cluster_url, sharded=True)
    async with b.subscribe(ROOM) as messages, Redis.from_url(cluster_url) as admin:
        a.publish_nowait(ROOM, b"1")
        received = [await next_message(messages)]
        slot = await admin.execute_command("CLUSTER", "KEYSLOT", b.channel(ROOM))
        # The slot leaves the node and comes back at once, as in a migration: Redis sends b an
        # SUNSUBSCRIBE for the room, on a connection that stays up.
        async with admin.pipeline(transaction=False) as pipe:
            pipe.execute_command("CLUSTER", "DELSLOTS", slot)
            pipe.execute_command("CLUSTER", "ADDSLOTS", slot)
            await pipe.execute()
        received.append(await next_message(messages))  # the marker, once subscribed again
        a.publish_nowait(ROOM, b"2")
        while received[-1].seq != 2:
            received.append(await next_message(messages))
    assert is_loss_marker(received[1])
    assert_ordered_and_losses_reported(received)
    assert b.statistics().reconnects == 0  # the dropped subscription alone was reported


async def test_a_room_subscribed_while_the_connection_is_lost_is_subscribed_after_it(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")
    async with b.subscribe(ROOM):
        await admin.execute_command(
            "CLIENT", "KILL", "ID", str(b.subscriber_client_id), "TYPE", "pubsub"
        )
        async with b.subscribe(OTHER_ROOM) as messages:  # returns once subscribed again
            a.publish_nowait(OTHER_ROOM, b"hello")
            message = await next_message(messages)
    assert (message.seq, message.payload) == (1, b"hello")
    await eventually(lambda: b.statistics().reconnects == 1)


async def test_subscribing_and_leaving_a_room_many_times_at_once_leaves_it_consistent(
    connect_bus: RedisBusFactory,
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")

    async def join_and_leave() -> None:
        async with b.subscribe(ROOM):
            pass

    for _ in range(3):
        await asyncio.gather(*(join_and_leave() for _ in range(10)))
    async with b.subscribe(ROOM) as messages:
        a.publish_nowait(ROOM, b"still works")
        assert (await next_message(messages)).payload == b"still works"
    await eventually(lambda: b.statistics().rooms == 0)


async def test_a_gap_in_seq_yields_a_loss_marker_before_the_next_message(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    b = await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        received = []
        for seq in (1, 3):  # a peer whose seq 2 never arrived
            await admin.publish(b.channel(ROOM), msgpack.packb([1, "ghost", seq, b"%d" % seq]))
            if seq == 1:  # read before the gap: a marker owed goes ahead of what is still queued
                received.append(await next_message(messages))
        received += [await next_message(messages) for _ in range(2)]
    assert [(m.seq, m.payload) for m in received] == [(1, b"1"), (0, b""), (3, b"3")]
    assert b.statistics().gaps == 1


async def test_an_unreadable_envelope_yields_a_loss_marker(
    connect_bus: RedisBusFactory, admin: Redis
) -> None:
    b = await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        await admin.publish(b.channel(ROOM), b"\xc1 not msgpack")
        await admin.publish(b.channel(ROOM), msgpack.packb([2, "future", 1, b"v2"]))
        await admin.publish(b.channel(ROOM), msgpack.packb([1, "peer", 1, b"ok"]))
        received = [await next_message(messages)]
        while received[-1].payload != b"ok":
            received.append(await next_message(messages))
    # One or two markers (losses coalesce until the subscriber reads), then the readable one.
    assert all(is_loss_marker(m) for m in received[:-1])
    assert 1 <= len(received) - 1 <= 2
    assert b.statistics().gaps == 2


async def test_outbound_overflow_is_dropped_and_peers_see_the_gap(
    connect_bus: RedisBusFactory,
) -> None:
    a, b = await connect_bus("node-a", queue_limit=2), await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        for i in range(1, 6):  # no await in between: the publisher task cannot drain
            a.publish_nowait(ROOM, b"%d" % i)
        assert a.statistics().dropped == 3
        await eventually(lambda: a.statistics().published == 2)
        a.publish_nowait(ROOM, b"6")
        received = [await next_message(messages) for _ in range(4)]
    assert [(m.seq, m.payload) for m in received] == [(1, b"1"), (2, b"2"), (0, b""), (6, b"6")]


async def test_a_slow_subscriber_loses_messages_and_gets_a_loss_marker(
    connect_bus: RedisBusFactory,
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b", queue_limit=2)
    async with b.subscribe(ROOM) as messages:
        for i in range(1, 6):
            a.publish_nowait(ROOM, b"%d" % i)
        await eventually(lambda: b.statistics().dropped == 3)
        received = [await next_message(messages) for _ in range(3)]
        a.publish_nowait(ROOM, b"6")
        received.append(await next_message(messages))
    assert [m.seq for m in received] == [0, 1, 2, 6]


async def test_closing_the_bus_sends_what_is_queued(
    redis_url: str, prefix: str, connect_bus: RedisBusFactory
) -> None:
    b = await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        async with RedisBus.connect(redis_url, node_id=NodeId("node-a"), prefix=prefix) as a:
            for i in range(100):
                a.publish_nowait(ROOM, b"%d" % i)
        received: list[BusMessage] = [await next_message(messages) for _ in range(100)]
    assert [m.seq for m in received] == list(range(1, 101))


async def test_unreachable_redis_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="unreachable"):
        async with RedisBus.connect("redis://127.0.0.1:1/0", node_id=NodeId("node-a")):
            pass


async def test_a_room_that_leaves_the_node_leaves_no_seq_behind(
    connect_bus: RedisBusFactory,
) -> None:
    a, b = await connect_bus("node-a"), await connect_bus("node-b")
    async with b.subscribe(ROOM) as messages:
        for n in range(20):
            room = RoomId(f"other-{n}")
            async with a.subscribe(room):
                a.publish_nowait(room, b"update")
        async with a.subscribe(ROOM):
            a.publish_nowait(ROOM, b"update")
            assert (await next_message(messages)).payload == b"update"
    assert a._seq == {}
    await eventually(lambda: a.statistics().rooms == 0)
