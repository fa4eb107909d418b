"""Memory that plateaus: what a room, a session or a connection holds is freed when it goes.

Each test joins and leaves rooms, lets them unload and asserts that the node's structures keyed
by room or session are empty and that weak references to the rooms, their Docs and the sessions
are dead: no wall clock, no RSS threshold (``python -m loadtest.soak`` measures RSS).
"""

from __future__ import annotations

import gc
import os
import signal
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

from pycrdt import Doc

from gateway import memory_debug
from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.core.callbacks import weak_callback
from gateway.core.enforcer import Enforcer
from gateway.core.limits import Limits
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.node import Node
from gateway.types import NodeId, RoomId
from tests.helpers import eventually
from tests.test_node import LIMITS, FakeOutlet, core_edit, created_wedding, member
from wedsync_protocol.messages import Feature, SyncUpdate

ROOMS = 12
MEMBERS = 3


def test_a_room_dropped_is_freed_without_the_cycle_collector() -> None:
    # pycrdt keeps a Doc's callbacks in Rust, where the cycle collector cannot see them: a Room
    # whose Doc observed a bound method of the Room was never freed, nor its Doc (which its own
    # observer holds), nor its Enforcer (whose callbacks on the Doc's maps held it).
    room = Room(RoomId("w"), [created_wedding()], limits=Limits())
    assert room.enforcer is not None
    refs = [weakref.ref(room), weakref.ref(room.doc), weakref.ref(room.enforcer)]
    gc.disable()
    try:
        del room
        assert [ref() for ref in refs] == [None, None, None]
    finally:
        gc.enable()


def test_an_enforcer_dropped_is_freed() -> None:
    doc: Doc[Any] = Doc()
    enforcer = Enforcer(doc)
    ref = weakref.ref(enforcer)
    del enforcer
    gc.collect()
    assert ref() is None


def test_a_weak_callback_outliving_its_object_does_nothing() -> None:
    calls: list[object] = []

    class Owner:
        def seen(self, event: object) -> None:
            calls.append(event)

    owner = Owner()
    callback = weak_callback(owner.seen)
    callback("first")
    del owner
    callback("second")
    assert calls == ["first"]


async def test_rooms_that_unload_leave_nothing_on_the_node(tmp_path: Path) -> None:
    earlier = Alive(Session)  # sessions other tests' failure reports still hold
    async with SqliteStore.open(tmp_path) as store:
        bus = MemoryBus(NodeId("node-1"))
        node = Node(
            node_id=NodeId("node-1"), bus=bus, store=store, limits=LIMITS, room_idle_seconds=0.01
        )
        async with node:
            refs: list[weakref.ref[Any]] = []
            for generation in range(2):  # the second loads every room again from the store
                for n in range(ROOMS):
                    room_id = RoomId(f"wedding-{n}")
                    joined = []
                    for _ in range(MEMBERS):
                        outlet = FakeOutlet()
                        slot, session = await member(node, outlet, Feature.ACKS, room=room_id)
                        joined.append((slot, session, outlet))
                    slot, session, _ = joined[0]
                    history = created_wedding()
                    if generation == 0:
                        node.receive(slot, session, SyncUpdate(history))
                    edit = core_edit(history, 100 + generation, notes=f"g{generation}")
                    node.receive(slot, session, SyncUpdate(edit))
                    assert slot.room is not None
                    refs += [weakref.ref(slot.room), weakref.ref(slot.room.doc)]
                    for slot, session, _ in joined:
                        node.leave(slot, session)
                    del slot, session, joined, outlet
                await eventually(lambda: not node.rooms.every_slot(), message="every room unloaded")
            gc.collect()
            assert [ref() for ref in refs if ref() is not None] == []
            assert earlier.new() == []
            assert node.fanout.outlets == {}
            assert node.fanout.proxies == set()
            assert node.relay._proxy_of == {}
            assert bus.broker.subscribers == {}
            assert dict(bus._seq) == {}


class Alive:
    """The objects of a class without ``__weakref__`` (Session) alive now, to tell apart the
    ones made later: a test asserts on its own objects, not on what earlier tests left (pytest
    keeps a failed or xfailed test's traceback, and with it the frames' locals)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.before = instances(kind)  # held, so their ids are not reused
        self.ids = {id(o) for o in self.before}

    def new(self) -> list[Any]:
        return [o for o in instances(self.kind) if id(o) not in self.ids]


def instances(kind: type) -> list[Any]:
    return [o for o in gc.get_objects() if isinstance(o, kind)]


def test_sigusr2_dumps_a_tracemalloc_snapshot_only_while_tracing(tmp_path: Path) -> None:
    assert not tracemalloc.is_tracing()
    assert memory_debug.install_snapshot_signal(tmp_path) is False
    previous = signal.getsignal(signal.SIGUSR2)
    tracemalloc.start(5)
    try:
        assert memory_debug.install_snapshot_signal(tmp_path) is True
        os.kill(os.getpid(), signal.SIGUSR2)  # the handler runs before the next bytecode
        snapshot = tmp_path / f"tracemalloc-{os.getpid()}-1.snapshot"
        assert tracemalloc.Snapshot.load(str(snapshot)).traces
        summary = snapshot.with_suffix(".txt").read_text()
        assert summary.startswith("traced: ")
        assert "after malloc_trim" in summary
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, previous)


async def test_the_heap_is_trimmed_after_rooms_unload(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path) as store:
        node = Node(
            node_id=NodeId("node-1"),
            bus=MemoryBus(NodeId("node-1")),
            store=store,
            limits=LIMITS,
            room_idle_seconds=0.01,
            malloc_trim_seconds=0.01,
        )
        async with node:
            assert node.trimmer is not None
            assert node.trimmer.trims == 0  # nothing unloaded yet: nothing to give back
            slot, session = await member(node, FakeOutlet(), Feature.ACKS, room=RoomId("w"))
            node.receive(slot, session, SyncUpdate(created_wedding()))
            node.leave(slot, session)
            await eventually(lambda: node.trimmer is not None and node.trimmer.trims == 1)
            assert memory_debug.rss_bytes() > 0


async def test_no_trimmer_runs_when_it_is_off(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path) as store:
        node = Node(node_id=NodeId("n"), bus=MemoryBus(NodeId("n")), store=store, limits=LIMITS)
        async with node:
            assert node.trimmer is None
