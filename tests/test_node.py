"""The node's parts without uvicorn: fake outlets, the memory bus and a temporary SQLite store.

Each test asserts the order in which the node carries out the core's effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.core.guard import Guard
from gateway.core.limits import Limits
from gateway.core.policy import Grant, Role
from gateway.core.session import Session
from gateway.core.update_check import check_update
from gateway.crash_journal import CrashJournal
from gateway.errors import BackendUnavailable, GatewayError, RoomReset, ShuttingDown
from gateway.node import Node
from gateway.ports import Append, AuditEntry, History, Store
from gateway.relay import message_envelope
from gateway.types import NodeId, RoomId
from tests.core import update_builder as ub
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EXTENSION_VERSION,
    Ack,
    Drain,
    Feature,
    Hello,
    Message,
    Reject,
    SyncStep1,
    SyncUpdate,
)

LIMITS = Limits()
NO_FEATURES = Feature(0)
ROOM = RoomId("wedding-1")
HELD_FOR_THE_TEST_MS = 600_000.0
"""Longer than any test runs: what is held comes out only when something flushes it."""


# -- the harness ------------------------------------------------------------------------------


@dataclass
class FakeOutlet:
    """Records what the node writes to one client, as the connection's driver would: after a
    close nothing more is written, and only the first close counts."""

    store: GatedStore | None = None
    events: list[Message | GatewayError] = field(default_factory=list)
    durable_when_sent: list[int] = field(default_factory=list)
    """For each message written, how many appends the store had completed by then."""
    closed: GatewayError | None = None

    def send_nowait(self, data: bytes) -> None:
        if self.closed is None:
            self.events.append(codec.decode_server_message(data))
            self.durable_when_sent.append(self.store.appended if self.store else 0)

    def close_nowait(self, error: GatewayError) -> None:
        if self.closed is None:
            self.closed = error
            self.events.append(error)

    def messages(self, kind: type[Message]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class GatedStore:
    """A real SqliteStore whose appends wait while ``gate`` is clear, and whose next
    ``fail_loads`` loads raise BackendUnavailable (the store is down)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0
        self.appended = 0
        self.fail_loads = 0
        self.loads: list[RoomId] = []

    async def load(self, room: RoomId) -> History:
        self.loads.append(room)
        if self.fail_loads:
            self.fail_loads -= 1
            raise BackendUnavailable("the test's store is down")
        return await self.inner.load(room)

    async def append(self, batch: Sequence[Append]) -> list[int]:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        offsets = await self.inner.append(batch)
        self.appended += len(batch)
        return offsets

    async def compact(self, room: RoomId, snapshot: bytes, through: int) -> None:
        await self.inner.compact(room, snapshot, through)

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        return await self.inner.audit(room, limit=limit)

    async def load_since(self, room: RoomId, offset: int) -> History:
        return await self.inner.load_since(room, offset)

    async def reset(self, room: RoomId) -> int:
        return await self.inner.reset(room)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[GatedStore]:
    async with SqliteStore.open(tmp_path) as inner:
        yield GatedStore(inner)


def started(store: Store, bus: MemoryBus | None = None, **settings: Any) -> Node:
    return Node(
        node_id=NodeId("node-1"),
        bus=bus or MemoryBus(NodeId("node-1")),
        store=store,
        limits=LIMITS,
        room_idle_seconds=60.0,
        **settings,
    )


async def member(
    node: Node,
    outlet: FakeOutlet,
    features: Feature = NO_FEATURES,
    grant: Grant | None = None,
    room: RoomId = ROOM,
) -> tuple[Any, Session]:
    """A LIVE member of ``room`` (its HELLO and step 1 answered); returns its slot and session."""
    session = Session(max_message_bytes=LIMITS.max_message_bytes, limits=LIMITS)
    if grant is not None:
        session.grant = grant
    slot = await node.join(room, session, outlet)
    if features:
        assert node.receive(slot, session, Hello(EXTENSION_VERSION, features)) is None
    assert node.receive(slot, session, SyncStep1(b"\x00")) is None
    return slot, session


def created_wedding(client_id: int = 7) -> bytes:
    """The wedding's first update, with its required core fields (proto/schema.md)."""
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("core", type=Map).update({"partner_a": "Ana", "partner_b": "Bea", "status": "planning"})
    return doc.get_update()


def core_edit(history: bytes, client_id: int, **values: Any) -> bytes:
    """An update of client ``client_id`` setting core fields after ``history``."""
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.apply_update(history)
    before = doc.get_state()
    doc.get("core", type=Map).update(values)
    return doc.get_update(before)


def core_of(update: bytes) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return dict(doc.get("core", type=Map).to_py() or {})


# -- durability -------------------------------------------------------------------------------


async def test_an_ack_is_sent_only_once_the_append_is_durable(store: GatedStore) -> None:
    outlet = FakeOutlet(store)
    async with started(store) as node:
        slot, session = await member(node, outlet, Feature.ACKS)
        store.gate.clear()
        update = created_wedding()
        assert node.receive(slot, session, SyncUpdate(update)) is None
        await eventually(lambda: store.waiting == 1, message="the append reached the store")
        for _ in range(10):
            await asyncio.sleep(0)  # give any early ack every chance to be written
        assert outlet.messages(Ack) == []
        store.gate.set()
        await eventually(lambda: outlet.messages(Ack) == [Ack(1)])
        (ack_index,) = [i for i, e in enumerate(outlet.events) if isinstance(e, Ack)]
        assert outlet.durable_when_sent[ack_index] == 1  # the append completed before the ACK
        history = await store.load(ROOM)
        assert history.blobs() == [update]


async def test_drain_sends_the_last_acks_before_the_drain_and_the_close(store: GatedStore) -> None:
    outlet = FakeOutlet(store)
    async with started(store) as node:
        slot, session = await member(node, outlet, Feature.ACKS)
        store.gate.clear()
        node.receive(slot, session, SyncUpdate(created_wedding()))
        await eventually(lambda: store.waiting == 1)
        draining = asyncio.create_task(node.drain())
        for _ in range(10):
            await asyncio.sleep(0)
        assert outlet.messages(Drain) == []
        assert outlet.closed is None
        store.gate.set()
        await draining
        ack, drain, close = outlet.events[-3:]
        assert ack == Ack(1)
        assert drain == Drain(0)
        assert isinstance(close, ShuttingDown)
        assert close.close_code == 1012
        node.leave(slot, session)


async def test_a_store_too_far_behind_refuses_updates_before_applying_them(
    store: GatedStore,
) -> None:
    wedding = created_wedding()
    watcher = FakeOutlet()
    async with started(store, max_pending_appends=1) as node:
        await member(node, watcher)
        slot, session = await member(node, FakeOutlet(), Feature.ACKS)
        store.gate.clear()
        node.receive(slot, session, SyncUpdate(wedding))
        await eventually(lambda: store.waiting == 1)  # one append pending: the backlog is full
        with pytest.raises(BackendUnavailable) as refused:
            node.receive(slot, session, SyncUpdate(core_edit(wedding, 7, venue="Barn")))
        assert refused.value.close_code == 4002
        room = node.room(ROOM)
        assert room is not None
        assert "venue" not in room.doc.get("core", type=Map).to_py()  # not applied
        assert [m.update for m in watcher.messages(SyncUpdate)] == [wedding]  # nor broadcast
        assert session.seq == 1  # nor counted
        store.gate.set()
        await eventually(lambda: store.appended == 1)


# -- batching ---------------------------------------------------------------------------------


async def test_a_reject_flushes_the_held_batch_its_undo_is_in(store: GatedStore) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    vendor = Grant("cat", Role.VENDOR, vendor_id="photo-7")
    viewer_outlet, vendor_outlet = FakeOutlet(), FakeOutlet()
    async with started(store, broadcast_batch_ms=HELD_FOR_THE_TEST_MS) as node:
        await member(node, viewer_outlet)
        slot, session = await member(node, vendor_outlet, Feature.REJECTS, grant=vendor)
        refused = core_edit(wedding, 90, venue="Barn")  # a vendor may not write the core
        node.receive(slot, session, SyncUpdate(refused))
        kinds = [type(e) for e in vendor_outlet.events if isinstance(e, SyncUpdate | Reject)]
        assert kinds == [SyncUpdate, Reject]  # the undo, written before the REJECT
        (undo,) = vendor_outlet.messages(SyncUpdate)
        doc: Doc[Any] = Doc()
        doc.apply_update(wedding)
        doc.apply_update(refused)
        doc.apply_update(undo.update)
        assert "venue" not in doc.get("core", type=Map).to_py()
        assert viewer_outlet.messages(SyncUpdate) == [undo]  # flushed for everyone
        assert node.statistics().refusals == 1


# -- a room's failures ------------------------------------------------------------------------


async def test_a_room_that_cannot_load_fails_its_joins_and_not_the_node(
    store: GatedStore,
) -> None:
    async with started(store) as node:
        store.fail_loads = 1
        session = Session(max_message_bytes=LIMITS.max_message_bytes)
        with pytest.raises(BackendUnavailable) as refused:
            await node.join(ROOM, session, FakeOutlet())
        assert refused.value.close_code == 4002
        assert node.readiness()["accepting"]
        other = FakeOutlet()
        await member(node, other, room=RoomId("other"))  # the node still serves other rooms
        outlet = FakeOutlet()
        slot, again = await member(node, outlet)  # the next join loads the room again
        node.receive(slot, again, SyncUpdate(created_wedding()))
        await eventually(lambda: node.statistics().committer.committed == 1)
        assert store.loads.count(ROOM) == 2
        assert outlet.closed is None
        assert other.closed is None


async def test_a_poisoned_room_is_reset_and_its_members_reconnect(
    store: GatedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wedding = created_wedding(client_id=7)
    await store.inner.append([Append(ROOM, wedding)])
    journal = CrashJournal.open(tmp_path / "journal")
    try:
        async with started(store, journal=journal) as node:
            bystander, sender = FakeOutlet(), FakeOutlet()
            await member(node, bystander)
            slot, session = await member(node, sender)
            room = node.room(ROOM)
            nothing = check_update(b"\x00\x00", {})
            monkeypatch.setattr(Guard, "check_client_update", lambda *_, **__: nothing)
            # DESIGN.md §7: a known client id with a clock 2^31 ahead panics yrs mid-apply
            poison = ub.update([ub.section(7, 2**31 + 5, [ub.map_set("core", "notes", "b")])])
            assert node.receive(slot, session, SyncUpdate(poison)) is None
            assert isinstance(bystander.closed, RoomReset)
            assert bystander.closed.close_code == 4003
            assert sender.closed is not None
            assert sender.closed.close_code == 4500
            with pytest.raises(RoomReset):  # the room no longer handles its members' messages
                node.receive(slot, session, SyncUpdate(poison))
            node.leave(slot, session)
            await eventually(lambda: node.room(ROOM) is None)
            monkeypatch.undo()
            rejoined = FakeOutlet()
            await member(node, rejoined)
            assert node.room(ROOM) is not room  # rebuilt from the store, without the poison
            assert node.statistics().resets == 1
            assert journal.is_denied(CrashJournal.digest(poison))
    finally:
        journal.close()


# -- peers ------------------------------------------------------------------------------------


async def test_a_bus_loss_marker_repairs_the_room_from_the_store(store: GatedStore) -> None:
    wedding = created_wedding()
    await store.inner.append([Append(ROOM, wedding)])
    broker = MemoryBroker(queue_limit=1)
    peer = MemoryBus(NodeId("peer"), broker)
    outlet = FakeOutlet()
    async with started(store, MemoryBus(NodeId("node-1"), broker)) as node:
        await member(node, outlet)
        first = core_edit(wedding, 50, venue="Hall")
        lost = core_edit(wedding, 51, guest_count=80)  # the peer stored it; its message is lost
        await store.inner.append([Append(ROOM, first), Append(ROOM, lost)])
        peer.publish_nowait(ROOM, message_envelope(codec.encode(SyncUpdate(first))))
        dropped = message_envelope(codec.encode(SyncUpdate(lost)))
        peer.publish_nowait(ROOM, dropped)  # the queue is full: dropped
        assert peer.statistics().dropped == 1

        def repaired() -> bool:
            received = [core_of(m.update) for m in outlet.messages(SyncUpdate)]
            return any(core.get("guest_count") == 80 for core in received)

        await eventually(repaired, message="the lost update reached the member")
        assert node.statistics().repairs == 1
        room = node.room(ROOM)
        assert room is not None
        assert room.doc.get("core", type=Map).to_py()["guest_count"] == 80
