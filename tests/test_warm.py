"""Warm weddings and wedding-day priority (issue 16 item 4), on the real Postgres store.

The calendar is injected (``today``): nothing here depends on the day the tests run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway import metrics
from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.postgres_store import PostgresStore
from gateway.adapters.sqlite_store import SqliteStore
from gateway.core.limits import Limits
from gateway.core.session import Session
from gateway.errors import Overloaded
from gateway.node import Node
from gateway.overload import LoopLag, ShedSettings
from gateway.ports import Append
from gateway.types import NodeId, RoomId
from gateway.warm import WarmSettings
from tests.helpers import eventually
from tests.test_node import FakeOutlet
from wedsync_protocol.messages import SyncStep1, SyncUpdate

TODAY = date(2031, 6, 14)  # a Saturday, far from whenever the suite runs
LIMITS = Limits()


def wedding(day: date | None, client_id: int = 7) -> bytes:
    doc: Doc[Any] = Doc(client_id=client_id)
    core = {"partner_a": "Ana", "partner_b": "Bea", "status": "planning"}
    if day is not None:
        core["wedding_date"] = day.isoformat()
    doc.get("core", type=Map).update(core)
    return doc.get_update()


@pytest.fixture
async def store(postgres_dsn: str, postgres_schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore.connect(postgres_dsn, schema=postgres_schema, create=True) as store:
        yield store


async def add_wedding(store: PostgresStore, name: str, day: date | None) -> RoomId:
    room = RoomId(name)
    await store.append([Append(room, wedding(day))])
    await store.set_wedding_date(room, day)
    return room


def node_of(store: Any, node: str = "node-1", **options: Any) -> Node:
    return Node(
        node_id=NodeId(node),
        bus=MemoryBus(NodeId(node)),
        store=store,
        limits=LIMITS,
        room_idle_seconds=0.01,  # an unpinned empty room unloads at once
        leases=store if isinstance(store, PostgresStore) else None,
        lease_seconds=3.0,
        warm=options.pop("warm", WarmSettings(days=7, max_rooms=100, refresh_seconds=3600)),
        today=options.pop("today", lambda: TODAY),
        **options,
    )


async def member(node: Node, room: RoomId) -> tuple[Any, Session]:
    session = Session(max_message_bytes=LIMITS.max_message_bytes, limits=LIMITS)
    slot = await node.join(room, session, FakeOutlet())
    node.receive(slot, session, SyncStep1(b"\x00"))
    return slot, session


async def test_the_index_finds_weddings_by_date_soonest_first(store: PostgresStore) -> None:
    for name, offset in [("c", 3), ("a", 0), ("far", 30), ("b", 0), ("past", -5)]:
        await add_wedding(store, name, TODAY + timedelta(days=offset))
    found = await store.weddings_between(TODAY, TODAY + timedelta(days=7), limit=10)
    assert found == [("a", TODAY), ("b", TODAY), ("c", TODAY + timedelta(days=3))]
    assert len(await store.weddings_between(TODAY, TODAY, limit=1)) == 1  # the bound
    await store.set_wedding_date(RoomId("a"), None)
    assert [r for r, _ in await store.weddings_between(TODAY, TODAY, limit=10)] == ["b"]


async def test_the_index_offers_only_weddings_whose_lease_is_free_or_ours(
    store: PostgresStore,
) -> None:
    for name in ("ours", "theirs", "free"):
        await add_wedding(store, name, TODAY)
    await store.acquire(RoomId("ours"), NodeId("node-1"), 30)
    await store.acquire(RoomId("theirs"), NodeId("node-2"), 30)
    found = await store.weddings_between(TODAY, TODAY, limit=10, free_or_held_by=NodeId("node-1"))
    assert [r for r, _ in found] == ["free", "ours"]


async def test_a_node_keeps_the_weddings_of_the_next_week_loaded_wedding_day_first(
    store: PostgresStore,
) -> None:
    days = {"next-friday": 6, "today": 0, "in-3-days": 3, "next-month": 30, "last-week": -7}
    for name, offset in days.items():
        await add_wedding(store, name, TODAY + timedelta(days=offset))
    loads: list[RoomId] = []
    async with node_of(store) as node:
        node.rooms.on_loaded = lambda slot, noted=node.rooms.on_loaded: (
            loads.append(slot.id),
            noted(slot),
        )[-1]
        assert node.warmer is not None
        await eventually(lambda: node.warmer is not None and node.warmer.refreshes >= 1)
        assert loads == ["today", "in-3-days", "next-friday"]  # soonest first
        assert set(node.rooms.slots) == {"today", "in-3-days", "next-friday"}
        # a warm room without members stays loaded; a join to it is served from memory
        slot, session = await member(node, RoomId("today"))
        node.leave(slot, session)
        cold, cold_session = await member(node, RoomId("next-month"))  # not warm: from the store
        assert (node.rooms.joins_from_memory, node.rooms.joins_from_store) == (1, 1)
        exported = metrics.render(node).decode()
        assert 'gateway_room_joins_total{source="memory"} 1.0' in exported
        assert 'gateway_room_joins_total{source="store"} 1.0' in exported
        assert "gateway_rooms_warm 3.0" in exported
        node.leave(cold, cold_session)
        await eventually(lambda: "next-month" not in node.rooms.slots)  # idle: unloaded
        assert "today" in node.rooms.slots  # left as long ago: kept, it is warm


async def test_the_warm_set_is_bounded_and_follows_the_calendar(store: PostgresStore) -> None:
    for offset in range(7):
        await add_wedding(store, f"w{offset}", TODAY + timedelta(days=offset))
    calendar = {"today": TODAY}
    warm = WarmSettings(days=7, max_rooms=3, refresh_seconds=3600)
    async with node_of(store, warm=warm, today=lambda: calendar["today"]) as node:
        assert node.warmer is not None
        await eventually(lambda: node.warmer is not None and node.warmer.refreshes >= 1)
        assert node.warmer.warm == ["w0", "w1", "w2"]
        calendar["today"] = TODAY + timedelta(days=4)  # w0..w2 are past (more than a day ago)
        await node.warmer.refresh()
        assert node.warmer.warm == ["w3", "w4", "w5"]
        await eventually(lambda: set(node.rooms.slots) == {"w3", "w4", "w5"})  # unpinned: gone


async def test_a_wedding_with_members_stays_loaded_when_it_leaves_the_warm_set(
    store: PostgresStore,
) -> None:
    await add_wedding(store, "saturday", TODAY)
    await add_wedding(store, "sunday", TODAY + timedelta(days=1))
    calendar = {"today": TODAY}
    async with node_of(store, today=lambda: calendar["today"]) as node:
        assert node.warmer is not None
        await eventually(lambda: node.warmer is not None and node.warmer.refreshes >= 1)
        slot, session = await member(node, RoomId("saturday"))  # the wedding day, in use
        calendar["today"] = TODAY + timedelta(days=9)  # both leave the window: unpinned
        await node.warmer.refresh()
        assert node.warmer.warm == []
        await eventually(lambda: "sunday" not in node.rooms.slots)  # empty: unloaded
        assert node.rooms.slots["saturday"] is slot  # a member is in: it stays
        node.leave(slot, session)
        await eventually(lambda: "saturday" not in node.rooms.slots)


async def test_an_edit_of_the_date_moves_the_wedding_in_the_index(store: PostgresStore) -> None:
    room = await add_wedding(store, "moved", TODAY + timedelta(days=40))
    async with node_of(store) as node:
        slot, session = await member(node, room)
        doc: Doc[Any] = Doc(client_id=99)
        doc.apply_update((await store.load(room)).blobs()[0])
        before = doc.get_state()
        doc.get("core", type=Map)["wedding_date"] = TODAY.isoformat()
        node.receive(slot, session, SyncUpdate(doc.get_update(before)))

        async def indexed() -> bool:
            return await store.weddings_between(TODAY, TODAY, limit=5) == [(room, TODAY)]

        await eventually(indexed)


async def test_a_restarted_node_loads_todays_weddings_before_any_other(
    store: PostgresStore,
) -> None:
    for name, offset in [("tuesday", 3), ("saturday", 0), ("sunday", 1)]:
        await add_wedding(store, name, TODAY + timedelta(days=offset))
    async with node_of(store) as first:
        await eventually(lambda: first.warmer is not None and first.warmer.refreshes >= 1)
    loads: list[RoomId] = []
    restarted = node_of(store)
    restarted.rooms.on_loaded = lambda slot: loads.append(slot.id)
    async with restarted:
        await eventually(lambda: restarted.warmer is not None and restarted.warmer.refreshes)
    assert loads == ["saturday", "sunday", "tuesday"]


async def test_under_overload_far_weddings_are_refused_first_and_the_wedding_day_served(
    store: PostgresStore,
) -> None:
    today = await add_wedding(store, "today", TODAY)
    soon = await add_wedding(store, "tomorrow", TODAY + timedelta(days=1))
    far = await add_wedding(store, "in-a-month", TODAY + timedelta(days=30))
    undated = await add_wedding(store, "undated", None)
    shed = ShedSettings(pending_appends=5, loop_lag_seconds=0.25)
    warm = WarmSettings(days=7, max_rooms=0, refresh_seconds=3600)  # the priority set only
    async with node_of(store, shed=shed, warm=warm) as node:
        await eventually(lambda: node.warmer is not None and node.warmer.refreshes >= 1)
        far_member = await member(node, far)  # before the overload: it stays
        node.loop_lag = LoopLag()  # a probe that does not run: the overload reads this one
        node.loop_lag.seconds = 0.5  # the loop is behind
        for room in (far, undated):
            with pytest.raises(Overloaded) as refused:
                await member(node, room)
            assert refused.value.close_code == 1013
        await member(node, today)
        await member(node, soon)
        assert node.overload is not None
        assert node.overload.shed == {"pending_appends": 0, "loop_lag": 2}
        exported = metrics.render(node).decode()
        assert 'gateway_connections_shed_total{reason="loop_lag"} 2.0' in exported
        assert "gateway_priority_weddings 2.0" in exported
        assert far_member[1] in node.fanout.outlets  # a member already in is not closed
        node.loop_lag.seconds = 0.0
        await member(node, undated)  # the overload is over: everyone is served again


async def test_the_sqlite_store_keeps_the_index_too(tmp_path: Any) -> None:
    async with SqliteStore.open(tmp_path) as store:
        await store.set_wedding_date(RoomId("a"), TODAY)
        await store.set_wedding_date(RoomId("b"), TODAY + timedelta(days=9))
        await store.set_wedding_date(RoomId("a"), TODAY + timedelta(days=1))
        found = await store.weddings_between(TODAY, TODAY + timedelta(days=7), limit=5)
        assert found == [(RoomId("a"), TODAY + timedelta(days=1))]


def test_either_signal_is_an_overload_and_shedding_must_start_below_the_refusals() -> None:
    from gateway.errors import ConfigError
    from gateway.overload import Overload
    from gateway.settings import Settings

    settings = ShedSettings(pending_appends=5, loop_lag_seconds=0.25)
    state = {"pending": 0, "lag": 0.0}
    overload = Overload(settings, lambda: state["pending"], lambda: state["lag"])
    assert overload.reason() is None
    state["pending"] = 5
    assert overload.reason() == "pending_appends"
    state.update(pending=4, lag=0.25)
    assert overload.reason() == "loop_lag"
    with pytest.raises(ConfigError, match="GATEWAY_SHED_PENDING_APPENDS must be below"):
        Settings.from_env({"GATEWAY_SHED_PENDING_APPENDS": "10000"})
