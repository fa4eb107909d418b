"""The guarantees of ``Versions``, ``Webhooks`` and ``Cursors`` (gateway/ports.py) as tests.

A subclass provides ``make_store`` (as for tests/adapters/contracts.py): every store that keeps
version history runs them, the embedded SQLite one and Postgres alike.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.ports import Append, Author, Cursors, Retention, Versions, WebhookEndpoint, Webhooks
from gateway.types import NodeId, RoomId
from tests.adapters.contracts import ROOM, StoreFactory
from tests.helpers import eventually

PLANNER = Author("ada", "planner")
RESTORER = Author("ada", "planner", "restore")
WINDOW = Retention(seconds=3600.0, checkpoint_seconds=0.0)  # every snapshot a checkpoint
NO_WINDOW = Retention(seconds=1e-6, checkpoint_seconds=0.0)  # everything older than the window


async def versions(make_store: StoreFactory) -> Any:
    store = await make_store()
    assert isinstance(store, Versions)
    return store


async def append_numbered(store: Any, first: int, last: int) -> None:
    await store.append(
        [Append(ROOM, b"%d" % i, PLANNER, (f"core.f{i}",)) for i in range(first, last + 1)]
    )


class VersionsContract:
    """Past states stay rebuildable for the window; the audit answers by offset and time."""

    async def test_a_state_inside_the_window_is_rebuilt_from_the_kept_log(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 5)
        await store.compact(ROOM, b"snapshot-5", 5, retention=WINDOW)
        past = await store.load_at(ROOM, 2)
        assert past is not None
        assert (past.snapshot, past.snapshot_offset, past.updates) == (
            None,
            0,
            [(1, b"1"), (2, b"2")],
        )
        newest = await store.load(ROOM)  # a room still loads from its newest snapshot
        assert (newest.snapshot, newest.updates) == (b"snapshot-5", [])
        assert (await store.load_at(ROOM, 5)).snapshot == b"snapshot-5"

    async def test_a_later_state_starts_from_the_newest_checkpoint_before_it(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 3)
        await store.compact(ROOM, b"snapshot-3", 3, retention=WINDOW)
        await append_numbered(store, 4, 6)
        await store.compact(ROOM, b"snapshot-6", 6, retention=WINDOW)
        past = await store.load_at(ROOM, 5)
        assert past is not None
        assert (past.snapshot, past.snapshot_offset) == (b"snapshot-3", 3)
        assert past.updates == [(4, b"4"), (5, b"5")]
        through = await store.load_at(ROOM, 4, through=6)
        assert through is not None
        assert [o for o, _ in through.updates] == [4, 5, 6]

    async def test_compaction_without_retention_keeps_no_past_state(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 5)
        await store.compact(ROOM, b"snapshot-5", 5)
        assert await store.load_at(ROOM, 2) is None
        assert (await store.load_at(ROOM, 5)).snapshot == b"snapshot-5"

    async def test_states_older_than_the_window_are_dropped_at_the_next_compaction(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 3)
        await store.compact(ROOM, b"snapshot-3", 3, retention=WINDOW)
        await append_numbered(store, 4, 5)
        await store.compact(ROOM, b"snapshot-5", 5, retention=NO_WINDOW)
        assert await store.load_at(ROOM, 4) is None  # rows 4-5 went with the window
        assert (await store.load_at(ROOM, 5)).snapshot == b"snapshot-5"

    async def test_a_state_before_a_reset_is_gone_and_the_new_epoch_is_kept(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 3)
        epoch = await store.reset(ROOM)
        await append_numbered(store, 4, 5)
        assert await store.load_at(ROOM, 2) is None
        past = await store.load_at(ROOM, 4)
        assert past is not None
        assert (past.epoch, past.snapshot, past.updates) == (epoch, None, [(4, b"4")])

    async def test_audit_range_pages_both_ways_and_records_how_an_update_was_made(
        self, make_store: StoreFactory
    ) -> None:
        store = await versions(make_store)
        await append_numbered(store, 1, 4)
        await store.append([Append(ROOM, b"5", RESTORER, ("core.venue",))])
        ascending = await store.audit_range(ROOM, after=1, limit=2)
        assert [e.offset for e in ascending] == [2, 3]
        newest = await store.audit_range(ROOM, before=5, limit=3, newest_first=True)
        assert [e.offset for e in newest] == [4, 3, 2]
        (last,) = await store.audit_range(ROOM, after=4)
        assert (last.subject, last.role, last.via, last.fields) == (
            "ada",
            "planner",
            "restore",
            ("core.venue",),
        )
        assert (await store.audit(ROOM))[-1].via == "restore"

    async def test_offset_at_a_time_and_rooms_changed_since(self, make_store: StoreFactory) -> None:
        store = await versions(make_store)
        before = time.time() - 60
        assert await store.offset_at(ROOM, time.time()) == 0
        await append_numbered(store, 1, 3)
        entries = await store.audit_range(ROOM)
        assert await store.offset_at(ROOM, entries[1].at) >= 2
        assert await store.offset_at(ROOM, time.time() + 60) == 3
        assert await store.offset_at(ROOM, before) == 0
        assert ROOM in await store.rooms_changed_since(before)
        assert ROOM not in await store.rooms_changed_since(time.time() + 60)


class WebhooksContract:
    """Endpoints, one delivering node at a time, and cursors that never move back."""

    async def test_endpoints_are_registered_replaced_and_removed(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        assert isinstance(store, Webhooks)
        await store.register(WebhookEndpoint("hook-1", "http://a/", "s" * 16, 1000.0))
        await store.register(WebhookEndpoint("hook-1", "http://b/", "t" * 16, 2000.0))
        (endpoint,) = await store.endpoints()
        assert (endpoint.url, endpoint.secret, endpoint.created_at) == (
            "http://b/",
            "t" * 16,
            1000.0,
        )
        await store.mark_dead("hook-1")
        assert (await store.endpoints())[0].dead_since is not None
        await store.register(WebhookEndpoint("hook-1", "http://b/", "t" * 16))
        assert (await store.endpoints())[0].dead_since is None  # registered again: alive
        assert await store.remove("hook-1")
        assert not await store.remove("hook-1")
        assert await store.endpoints() == []

    async def test_one_node_holds_an_endpoints_claim_until_it_expires(
        self, make_store: StoreFactory
    ) -> None:
        store, other = await make_store(), await make_store()
        assert isinstance(store, Webhooks)
        assert isinstance(other, Webhooks)
        await store.register(WebhookEndpoint("hook-1", "http://a/", "s" * 16))
        assert await store.claim("hook-1", NodeId("a"), 60)
        assert not await other.claim("hook-1", NodeId("b"), 60)
        assert await store.claim("hook-1", NodeId("a"), 1e-6)  # renewed by its holder, briefly
        await eventually(lambda: other.claim("hook-1", NodeId("b"), 60), message="expired")
        assert not await store.claim("hook-1", NodeId("a"), 60)

    async def test_cursors_only_move_forward(self, make_store: StoreFactory) -> None:
        store = await make_store()
        assert isinstance(store, Cursors)
        await store.advance("hook-1", ROOM, 5)
        await store.advance("hook-1", ROOM, 3)
        await store.advance("hook-1", RoomId("other"), 1)
        assert await store.cursors("hook-1") == {ROOM: 5, RoomId("other"): 1}
        assert await store.cursors("hook-2") == {}
