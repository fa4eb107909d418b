"""One judge per wedding (DESIGN.md §2, gateway/ownership.py, gateway/relay.py): two nodes in
this process on the memory bus, sharing one Postgres store (a schema per test), which holds
the rooms' leases. The first node to load a room owns it; the other relays its clients'
updates to it. Processes, kill -9 and SIGSTOP are in tests/test_one_judge.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.adapters.postgres_store import PostgresStore
from gateway.core.policy import Grant, Role
from gateway.errors import RoomReset
from gateway.node import Node
from gateway.ports import Append, AuditEntry, History, Lease
from gateway.relay import RelaySettings, message_envelope
from gateway.types import NodeId, RoomId
from tests.helpers import eventually
from tests.test_node import LIMITS, FakeOutlet, core_of, created_wedding, member
from wedsync_protocol import codec
from wedsync_protocol.messages import Ack, Feature, Reject, SyncUpdate

pytestmark = [pytest.mark.postgres]

ROOM = RoomId("wedding-1")
COUPLE = Grant("ana", Role.COUPLE)
VENDOR = Grant("cat", Role.VENDOR, vendor_id="caterer-1")
LONG_LEASE = 60.0
"""Seconds: a lease that does not expire while a test runs (no takeover unless released)."""


class SharedStore:
    """The Postgres store both nodes use, with gates a test closes: appends wait while
    ``appending`` is clear, lease renewals while ``renewing`` is clear (a paused owner)."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.appending = asyncio.Event()
        self.appending.set()
        self.renewing = asyncio.Event()
        self.renewing.set()
        self.waiting = 0
        self.fenced = 0

    async def load(self, room: RoomId) -> History:
        return await self.inner.load(room)

    async def load_since(self, room: RoomId, offset: int) -> History:
        return await self.inner.load_since(room, offset)

    async def append(self, batch: Sequence[Append]) -> list[int | None]:
        self.waiting += 1
        await self.appending.wait()
        self.waiting -= 1
        offsets = await self.inner.append(batch)
        self.fenced += offsets.count(None)
        return offsets

    async def compact(self, room: RoomId, snapshot: bytes, through: int) -> None:
        await self.inner.compact(room, snapshot, through)

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        return await self.inner.audit(room, limit=limit)

    async def reset(self, room: RoomId) -> int:
        return await self.inner.reset(room)

    async def acquire(self, room: RoomId, node: NodeId, ttl: float) -> Lease:
        return await self.inner.acquire(room, node, ttl)

    async def renew(
        self, leases: Sequence[tuple[RoomId, int]], node: NodeId, ttl: float
    ) -> set[RoomId]:
        await self.renewing.wait()
        return await self.inner.renew(leases, node, ttl)

    async def release(self, room: RoomId, node: NodeId, fence: int) -> None:
        await self.inner.release(room, node, fence)

    async def holder(self, room: RoomId) -> Lease:
        return await self.inner.holder(room)


@pytest.fixture
async def store(postgres_dsn: str, postgres_schema: str) -> AsyncIterator[SharedStore]:
    connecting = PostgresStore.connect(postgres_dsn, schema=postgres_schema, create=True)
    async with connecting as inner:
        yield SharedStore(inner)


def make_node(
    name: str,
    store: SharedStore,
    broker: MemoryBroker,
    lease_seconds: float = LONG_LEASE,
    bus_queue_limit: int | None = None,
) -> Node:
    return Node(
        node_id=NodeId(name),
        bus=MemoryBus(NodeId(name), broker, queue_limit=bus_queue_limit),
        store=store,
        limits=LIMITS,
        room_idle_seconds=60.0,
        leases=store,
        lease_seconds=lease_seconds,
        relay=RelaySettings(resend_seconds=0.2, timeout_seconds=30.0),
    )


def edit(history: Sequence[bytes], client_id: int, **values: Any) -> bytes:
    """An update of ``client_id`` setting core fields, made on a replica holding ``history``."""
    doc: Doc[Any] = Doc(client_id=client_id)
    for update in history:
        doc.apply_update(update)
    before = doc.get_state()
    doc.get("core", type=Map).update(values)
    return doc.get_update(before)


def core(node: Node) -> dict[str, Any]:
    room = node.room(ROOM)
    assert room is not None
    return dict(room.doc.get("core", type=Map).to_py() or {})


async def stored_core(store: SharedStore) -> dict[str, Any]:
    history = await store.load(ROOM)
    doc: Doc[Any] = Doc()
    for blob in history.blobs():
        doc.apply_update(blob)
    return dict(doc.get("core", type=Map).to_py() or {})


async def nodes(
    stack: AsyncExitStack, store: SharedStore, broker: MemoryBroker, **settings: Any
) -> tuple[Node, Node]:
    first = await stack.enter_async_context(make_node("node-a", store, broker, **settings))
    second = await stack.enter_async_context(make_node("node-b", store, broker, **settings))
    return first, second


# -- one judge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor_first", [False, True], ids=["couple-first", "vendor-first"])
@pytest.mark.parametrize("vendor_client", [3, 900], ids=["vendor-id-lower", "vendor-id-higher"])
async def test_a_refused_vendor_write_relayed_to_the_owner_never_reverts_a_couples_edit(
    store: SharedStore, vendor_client: int, vendor_first: bool
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    broker = MemoryBroker()
    async with AsyncExitStack() as stack:
        owner, relay = await nodes(stack, store, broker)
        couple_outlet, vendor_outlet = FakeOutlet(), FakeOutlet()
        couple_slot, couple = await member(owner, couple_outlet, grant=COUPLE)
        vendor_slot, vendor = await member(
            relay, vendor_outlet, Feature.ACKS | Feature.REJECTS, grant=VENDOR
        )
        assert couple_slot.owning
        assert not vendor_slot.owning
        for round_ in range(5):
            history = (await store.load(ROOM)).blobs()  # both write on the same old state
            mine = edit(history, 500 + round_, venue=f"Couple venue {round_}")
            theirs = edit(history, vendor_client + round_, venue=f"Vendor venue {round_}")
            if vendor_first:  # the owner judges the vendor's write before it sees the couple's
                assert relay.receive(vendor_slot, vendor, SyncUpdate(theirs)) is None
                await eventually(lambda: Ack(round_ + 1) in vendor_outlet.messages(Ack))  # noqa: B023
                assert owner.receive(couple_slot, couple, SyncUpdate(mine)) is None
            else:
                assert owner.receive(couple_slot, couple, SyncUpdate(mine)) is None
                assert relay.receive(vendor_slot, vendor, SyncUpdate(theirs)) is None
                await eventually(lambda: Ack(round_ + 1) in vendor_outlet.messages(Ack))  # noqa: B023
            expected = f"Couple venue {round_}"
            await eventually(lambda: core(relay).get("venue") == expected)  # noqa: B023
            assert core(owner)["venue"] == expected
            await owner.durability.wait_flushed(ROOM)
            assert (await stored_core(store))["venue"] == expected
        if vendor_first or vendor_client > 500:  # its write was visible: refused, undone
            (reject, *_) = vendor_outlet.messages(Reject)
            assert reject.field == "core.venue"
        assert relay.statistics().relayed_updates == 5
        assert owner.statistics().owned_rooms == 1
        assert relay.statistics().owned_rooms == 0


async def test_a_relayed_update_is_acknowledged_only_once_the_owner_stored_it(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    async with AsyncExitStack() as stack:
        owner, relay = await nodes(stack, store, MemoryBroker())
        await member(owner, FakeOutlet(), grant=COUPLE)
        outlet = FakeOutlet()
        slot, session = await member(relay, outlet, Feature.ACKS, grant=COUPLE)
        store.appending.clear()
        update = edit([wedding], 60, guest_count=120)
        assert relay.receive(slot, session, SyncUpdate(update)) is None
        await eventually(lambda: store.waiting == 1, message="the owner's append is waiting")
        await eventually(lambda: core(relay).get("guest_count") == 120)  # fan-out did not wait
        assert outlet.messages(Ack) == []
        store.appending.set()
        await eventually(lambda: outlet.messages(Ack) == [Ack(1)])
        assert (await stored_core(store))["guest_count"] == 120
        # its own edit is not written back to the client that sent it
        assert all(
            core_of(m.update).get("guest_count") is None for m in outlet.messages(SyncUpdate)
        )


async def test_an_update_resent_while_the_owner_stores_it_is_acknowledged_once(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    async with AsyncExitStack() as stack:
        owner, relay = await nodes(stack, store, MemoryBroker())
        await member(owner, FakeOutlet(), grant=COUPLE)
        outlet = FakeOutlet()
        slot, session = await member(relay, outlet, Feature.ACKS, grant=COUPLE)
        store.appending.clear()  # the owner's store is slow: the relay resends meanwhile
        assert relay.receive(slot, session, SyncUpdate(edit([wedding], 61, venue="Mill"))) is None
        await eventually(lambda: store.waiting == 1, message="the owner's append is waiting")
        for _ in range(2):  # as after a loss marker, or the resend timer
            relay.relay.resend(slot, session)
        await eventually(lambda: owner.committer.statistics().pending >= 3, message="two owed")
        store.appending.set()
        await eventually(lambda: outlet.messages(Ack) == [Ack(1)])
        second = edit([wedding], 62, guest_count=80)
        assert relay.receive(slot, session, SyncUpdate(second)) is None
        await eventually(lambda: outlet.messages(Ack)[-1:] == [Ack(2)])
        assert outlet.messages(Ack) == [Ack(1), Ack(2)]  # ACKs only grow (spec §4.2)


async def test_a_relaying_node_that_missed_an_update_unflagged_repairs_on_the_heartbeat(
    store: SharedStore,
) -> None:
    """The owner's OWNER heartbeat carries its state vector: a relaying node still lacking part
    of it a heartbeat later lost a message no loss marker flagged (one the owner published while
    this node resubscribed, stored after this node's repair read the log) and repairs."""
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    async with AsyncExitStack() as stack:
        owner, relay = await nodes(stack, store, MemoryBroker(), lease_seconds=0.6)
        await member(owner, FakeOutlet(), grant=COUPLE)
        outlet = FakeOutlet()
        await member(relay, outlet, grant=COUPLE)
        missed = edit([wedding], 63, venue="Old Mill")
        await store.inner.append([Append(ROOM, missed)])  # stored, and its publish was lost:
        owner_room = owner.room(ROOM)
        assert owner_room is not None
        owner_room.doc.apply_update(missed)  # the owner holds it; nothing reached node-b
        await eventually(lambda: core(relay).get("venue") == "Old Mill", timeout=10)
        assert relay.relay.behind >= 1
        assert any(
            core_of(m.update).get("venue") == "Old Mill" for m in outlet.messages(SyncUpdate)
        )


async def test_forwards_lost_on_the_bus_are_resent_and_judged_in_order(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    broker = MemoryBroker()
    async with AsyncExitStack() as stack:
        # the owner's queue holds one message: the rest drop. (The relaying node's queue is a
        # normal one: were it one message long too, its ACKs would be lost as well and every
        # round of resends could make as little as one forward's progress.)
        owner = await stack.enter_async_context(
            make_node("node-a", store, broker, bus_queue_limit=1)
        )
        relay = await stack.enter_async_context(make_node("node-b", store, broker))
        await member(owner, FakeOutlet(), grant=COUPLE)
        outlet = FakeOutlet()
        slot, session = await member(relay, outlet, Feature.ACKS, grant=COUPLE)
        history = [wedding]
        for n in range(4):  # published in one go: the owner reads one, the others are lost
            update = edit(history, 70 + n, guest_count=100 + n)
            history.append(update)
            assert relay.receive(slot, session, SyncUpdate(update)) is None
        await eventually(lambda: outlet.messages(Ack)[-1:] == [Ack(4)], message="all acked")
        assert core(owner)["guest_count"] == 103
        assert (await stored_core(store))["guest_count"] == 103
        assert relay.relay.resends > 0


async def test_an_owner_that_drains_hands_its_room_to_the_node_still_serving_it(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    broker = MemoryBroker()
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(make_node("node-b", store, broker))
        async with make_node("node-a", store, broker) as owner:
            await member(owner, FakeOutlet(), grant=COUPLE)
            outlet = FakeOutlet()
            slot, session = await member(relay, outlet, Feature.ACKS, grant=COUPLE)
            assert not slot.owning
        # node-a drained: it released the lease, node-b took it over and judges now
        await eventually(lambda: slot.owning, message="node-b owns the room")
        assert (await store.holder(ROOM)).holder == "node-b"
        assert outlet.closed is None  # its client stayed connected
        update = edit([wedding], 80, venue="Orangery")
        assert relay.receive(slot, session, SyncUpdate(update)) is None
        await eventually(lambda: outlet.messages(Ack) == [Ack(1)])
        assert (await stored_core(store))["venue"] == "Orangery"


async def test_a_paused_owner_stores_nothing_after_its_lease_is_taken_over(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    async with make_node("node-a", store, MemoryBroker(), lease_seconds=0.6) as owner:
        outlet = FakeOutlet()
        slot, session = await member(owner, outlet, Feature.ACKS, grant=COUPLE)
        assert slot.owning
        store.appending.clear()  # its next append is on its way when it "pauses"
        in_flight = edit([wedding], 90, venue="Written while owning")
        assert owner.receive(slot, session, SyncUpdate(in_flight)) is None
        await eventually(lambda: store.waiting == 1)
        store.renewing.clear()  # paused: no renewal reaches the store
        intruder = NodeId("node-c")

        async def taken_over() -> bool:
            return (await store.acquire(ROOM, intruder, LONG_LEASE)).acquired

        await eventually(taken_over, message="the lease expired and node-c took it")
        late = edit([wedding, in_flight], 91, venue="Written after losing the lease")
        held = owner.receive(slot, session, SyncUpdate(late))
        assert held is not None  # its lease may have expired: the message waits
        store.appending.set()  # the paused node wakes up: its append reaches the store
        store.renewing.set()
        with pytest.raises(RoomReset):
            await held
        await eventually(lambda: isinstance(outlet.closed, RoomReset))
        assert store.fenced == 1
        assert outlet.messages(Ack) == []  # nothing it wrote after the takeover is acknowledged
        stored = await stored_core(store)
        assert stored.get("venue") is None  # nor stored
        assert owner.statistics().committer.fenced == 1


async def test_a_document_update_judged_by_an_older_owner_is_ignored(
    store: SharedStore,
) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    broker = MemoryBroker()
    async with make_node("node-b", store, broker) as relay:
        await store.acquire(ROOM, NodeId("node-a"), LONG_LEASE)  # fence 1, then lost to node-c
        await store.inner.release(ROOM, NodeId("node-a"), 1)
        await store.acquire(ROOM, NodeId("node-c"), LONG_LEASE)  # fence 2
        outlet = FakeOutlet()
        slot, _ = await member(relay, outlet, grant=COUPLE)
        assert slot.known_fence == 2
        assert slot.owner == "node-c"
        stale, current = MemoryBus(NodeId("node-a"), broker), MemoryBus(NodeId("node-c"), broker)
        old = codec.encode(SyncUpdate(edit([wedding], 95, venue="Stale")))
        new = codec.encode(SyncUpdate(edit([wedding], 96, guest_count=40)))
        stale.publish_nowait(ROOM, message_envelope(old, fence=1, node="node-a"))
        current.publish_nowait(ROOM, message_envelope(new, fence=2, node="node-c"))
        await eventually(lambda: core(relay).get("guest_count") == 40)
        assert "venue" not in core(relay)
        assert [core_of(m.update) for m in outlet.messages(SyncUpdate)] == [{"guest_count": 40}]
