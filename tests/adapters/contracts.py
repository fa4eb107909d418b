"""The guarantees of gateway/ports.py as tests. Every adapter runs the contract of its port.

A subclass provides one fixture: ``make_bus`` (a coroutine function: node id, and optionally
``queue_limit``, the bound of each of that node's subscriptions → a Bus entered for the test, all
sharing one medium) or ``make_store`` (a coroutine function: → a Store entered for
the test; every call opens another instance on the same storage, as another node would).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

from pycrdt import Array, Doc, Map

from gateway.ports import (
    Append,
    AuditEntry,
    Author,
    Bus,
    BusMessage,
    History,
    Store,
    is_loss_marker,
)
from gateway.types import NodeId, RoomId


class BusFactory(Protocol):
    def __call__(self, node_id: str, *, queue_limit: int | None = None) -> Awaitable[Bus]:
        """A Bus for ``node_id``; ``queue_limit`` bounds each subscription (None: the default)."""
        ...


StoreFactory = Callable[[], Awaitable[Store]]

ROOM = RoomId("wedding-1")
OTHER_ROOM = RoomId("wedding-2")


async def next_message(messages: AsyncIterator[BusMessage], timeout: float = 5.0) -> BusMessage:
    """The next message, failing (not hanging) when none arrives in ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await anext(messages)


class BusContract:
    """What every Bus must do: at most once, ordered per room and publisher, never echoed."""

    async def test_message_reaches_other_node(self, make_bus: BusFactory) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with b.subscribe(ROOM) as messages:
            a.publish_nowait(ROOM, b"hello")
            message = await next_message(messages)
        assert message == BusMessage(ROOM, NodeId("node-a"), 1, b"hello")

    async def test_every_subscriber_of_the_room_gets_the_message(
        self, make_bus: BusFactory
    ) -> None:
        a, b, c = await make_bus("node-a"), await make_bus("node-b"), await make_bus("node-c")
        async with b.subscribe(ROOM) as at_b, c.subscribe(ROOM) as at_c, b.subscribe(ROOM) as at_b2:
            a.publish_nowait(ROOM, b"all")
            received = [await next_message(m) for m in (at_b, at_c, at_b2)]
        assert [m.payload for m in received] == [b"all"] * 3

    async def test_publisher_does_not_get_its_own_message(self, make_bus: BusFactory) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with a.subscribe(ROOM) as at_a, b.subscribe(ROOM) as at_b:
            a.publish_nowait(ROOM, b"mine")
            assert (await next_message(at_b)).payload == b"mine"
            # b answers only after it got "mine", so the bus handled "mine" first: had it been
            # echoed to a, a would see it before "theirs".
            b.publish_nowait(ROOM, b"theirs")
            first = await next_message(at_a)
        assert (first.origin, first.payload) == ("node-b", b"theirs")

    async def test_order_per_room_is_preserved_and_seq_increases_by_one(
        self, make_bus: BusFactory
    ) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with b.subscribe(ROOM) as messages:
            for i in range(200):
                a.publish_nowait(ROOM, b"%d" % i)
            received = [await next_message(messages) for _ in range(200)]
        assert [m.payload for m in received] == [b"%d" % i for i in range(200)]
        assert [m.seq for m in received] == list(range(1, 201))

    async def test_seq_counts_each_room_separately(self, make_bus: BusFactory) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with b.subscribe(ROOM) as first, b.subscribe(OTHER_ROOM) as second:
            a.publish_nowait(ROOM, b"1")
            a.publish_nowait(OTHER_ROOM, b"1")
            a.publish_nowait(ROOM, b"2")
            got_first = [await next_message(first) for _ in range(2)]
            got_second = await next_message(second)
        assert [(m.room, m.seq) for m in got_first] == [(ROOM, 1), (ROOM, 2)]
        assert (got_second.room, got_second.seq) == (OTHER_ROOM, 1)

    async def test_unsubscribed_rooms_get_nothing(self, make_bus: BusFactory) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with b.subscribe(ROOM) as messages:
            a.publish_nowait(OTHER_ROOM, b"not for you")
            a.publish_nowait(ROOM, b"for you")
            assert (await next_message(messages)).payload == b"for you"
        # A later subscriber to the other room does not get what was published before.
        async with b.subscribe(OTHER_ROOM) as messages:
            a.publish_nowait(OTHER_ROOM, b"now")
            message = await next_message(messages)
        assert (message.room, message.payload) == (OTHER_ROOM, b"now")

    async def test_a_room_left_gets_nothing_until_subscribed_again(
        self, make_bus: BusFactory
    ) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b")
        async with b.subscribe(ROOM) as messages:
            a.publish_nowait(ROOM, b"one")
            assert (await next_message(messages)).payload == b"one"
        a.publish_nowait(ROOM, b"while away")
        async with b.subscribe(ROOM) as messages:
            a.publish_nowait(ROOM, b"back")
            payloads = []
            while not payloads or payloads[-1] != b"back":
                message = await next_message(messages)
                if message.seq:  # a Bus may report possible loss (seq 0) on a resubscription
                    payloads.append(message.payload)
        assert payloads == [b"back"]

    # -- loss: a gap must reach the subscriber as a marker, or the room is never repaired ----

    async def test_a_subscriber_that_does_not_read_gets_a_loss_marker_then_messages_again(
        self, make_bus: BusFactory
    ) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b", queue_limit=LIMIT)
        async with b.subscribe(ROOM) as messages, b.subscribe(OTHER_ROOM) as barrier:
            await publish_unread(a, barrier, range(1, SENT + 1))
            overflowed = [await next_message(messages) for _ in range(LIMIT + 1)]
            await publish_unread(a, barrier, range(SENT + 1, SENT + 1 + LIMIT))
            after = [await next_message(messages) for _ in range(LIMIT)]
        assert sum(map(is_loss_marker, overflowed)) == 1  # the queue held LIMIT, then lost
        assert not any(map(is_loss_marker, after))  # one marker per loss, not one per message
        assert [m.seq for m in after] == list(range(SENT + 1, SENT + 1 + LIMIT))
        assert_ordered_and_losses_reported(overflowed + after)

    async def test_each_overflow_gets_its_own_loss_marker(self, make_bus: BusFactory) -> None:
        a, b = await make_bus("node-a"), await make_bus("node-b", queue_limit=LIMIT)
        received: list[BusMessage] = []
        async with b.subscribe(ROOM) as messages, b.subscribe(OTHER_ROOM) as barrier:
            for start in (1, 1 + SENT):
                await publish_unread(a, barrier, range(start, start + SENT))
                drained = [await next_message(messages) for _ in range(LIMIT + 1)]
                assert sum(map(is_loss_marker, drained)) == 1
                received += drained
            await publish_unread(a, barrier, [1 + 2 * SENT])
            received.append(await next_message(messages))
        assert received[-1].seq == 1 + 2 * SENT
        assert_ordered_and_losses_reported(received)

    async def test_only_the_subscriber_that_overflowed_gets_a_loss_marker(
        self, make_bus: BusFactory
    ) -> None:
        a = await make_bus("node-a")
        slow, fast = await make_bus("node-b", queue_limit=LIMIT), await make_bus("node-c")
        async with (
            slow.subscribe(ROOM) as lossy,
            slow.subscribe(OTHER_ROOM) as barrier,
            fast.subscribe(ROOM) as complete,
        ):
            await publish_unread(a, barrier, range(1, SENT + 1))
            got_all = [await next_message(complete) for _ in range(SENT)]
            assert is_loss_marker(await next_message(lossy))
        assert [(m.seq, m.payload) for m in got_all] == [(i, b"%d" % i) for i in range(1, SENT + 1)]


LIMIT = 4  # a slow subscriber's queue bound in the loss tests
SENT = 10  # messages published while it does not read: more than LIMIT


async def publish_unread(
    publisher: Bus, barrier: AsyncIterator[BusMessage], seqs: Iterable[int]
) -> None:
    """Publish one ROOM message per seq (its payload the seq), then wait until they reached the
    subscribing node, without reading them.

    The wait is a message to OTHER_ROOM on that node (``barrier``): both buses deliver one
    publisher's messages to one node in publish order, whatever the room (the memory bus on
    publish, the Redis bus over one publisher connection and one pub/sub connection per node).
    """
    for seq in seqs:
        publisher.publish_nowait(ROOM, b"%d" % seq)
    publisher.publish_nowait(OTHER_ROOM, b"barrier")
    assert (await next_message(barrier)).payload == b"barrier"


def assert_ordered_and_losses_reported(received: list[BusMessage]) -> None:
    """One publisher's messages only move forward, and every gap in their seq was reported: by
    the time a message after a gap arrives, a loss marker has arrived for it (gateway/ports.py
    ``Bus``: a marker before the next message)."""
    last = gaps = markers = 0
    for message in received:
        if is_loss_marker(message):
            markers += 1
            continue
        assert message.seq > last, f"seq {message.seq} after {last}: out of order or repeated"
        assert (message.origin, message.payload) == ("node-a", b"%d" % message.seq)
        gaps += message.seq != last + 1
        assert markers >= gaps, f"seq {message.seq} follows an unreported gap after {last}"
        last = message.seq


def document_updates() -> tuple[Doc[Any], list[bytes]]:
    """A wedding document built by several edits, and the update of each edit."""
    doc: Doc[Any] = Doc()
    doc["core"] = core = Map()
    doc["timeline"] = timeline = Array()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    core["couple"] = "Ada & Grace"
    core["guests"] = 120
    for i in range(5):
        timeline.append(Map({"id": f"e{i}", "title": f"entry {i}"}))
    core["guests"] = 140
    del timeline[1]
    return doc, updates


def rebuild(blobs: list[bytes]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    for blob in blobs:
        doc.apply_update(blob)
    return {
        "core": doc.get("core", type=Map).to_py(),
        "timeline": doc.get("timeline", type=Array).to_py(),
    }


class StoreContract:
    """What every Store must do: a durable, ordered log per room, compacted by snapshots, reset
    into a new epoch without reusing an offset, and read from an offset for catch-up."""

    async def test_append_returns_increasing_offsets_per_room_in_batch_order(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        batch = [Append(ROOM, b"a1"), Append(OTHER_ROOM, b"b1"), Append(ROOM, b"a2")]
        assert await store.append(batch) == [1, 1, 2]
        assert await store.append([Append(ROOM, b"a3"), Append(ROOM, b"a4")]) == [3, 4]
        assert await store.append([]) == []

    async def test_load_after_append_returns_everything_in_order(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"1"), Append(OTHER_ROOM, b"x"), Append(ROOM, b"2")])
        await store.append([Append(ROOM, b"3")])
        history = await store.load(ROOM)
        assert (history.snapshot, history.snapshot_offset) == (None, 0)
        assert history.updates == [(1, b"1"), (2, b"2"), (3, b"3")]
        assert history.last_offset == 3

    async def test_load_of_an_unknown_room_is_empty(self, make_store: StoreFactory) -> None:
        store = await make_store()
        history = await store.load(RoomId("never-seen"))
        assert (history.snapshot, history.updates, history.last_offset) == (None, [], 0)

    async def test_compact_drops_covered_rows_and_keeps_the_rest(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i) for i in range(1, 6)])
        await store.compact(ROOM, b"snapshot-3", 3)
        history = await store.load(ROOM)
        assert (history.snapshot, history.snapshot_offset) == (b"snapshot-3", 3)
        assert history.updates == [(4, b"4"), (5, b"5")]

    async def test_offsets_continue_after_everything_was_compacted(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"1"), Append(ROOM, b"2")])
        await store.compact(ROOM, b"snapshot-2", 2)
        assert await store.append([Append(ROOM, b"3")]) == [3]
        assert (await make_store_and_load(make_store)).updates == [(3, b"3")]

    async def test_an_older_snapshot_never_replaces_a_newer_one(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i) for i in range(1, 6)])
        await store.compact(ROOM, b"snapshot-4", 4)
        await store.compact(ROOM, b"snapshot-2", 2)
        history = await store.load(ROOM)
        assert (history.snapshot, history.snapshot_offset) == (b"snapshot-4", 4)
        assert history.updates == [(5, b"5")]

    async def test_load_after_compact_rebuilds_the_same_document(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        original, updates = document_updates()
        offsets = await store.append([Append(ROOM, update) for update in updates])
        half = len(updates) // 2
        snapshot_doc: Doc[Any] = Doc()
        for update in updates[:half]:
            snapshot_doc.apply_update(update)
        await store.compact(ROOM, snapshot_doc.get_update(), offsets[half - 1])
        history = await store.load(ROOM)
        assert len(history.updates) == len(updates) - half
        assert rebuild(history.blobs()) == rebuild([original.get_update()])

    async def test_concurrent_appends_to_one_room_get_consecutive_offsets(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        batches = [[Append(ROOM, b"%d-%d" % (t, i)) for i in range(3)] for t in range(20)]
        results = await asyncio.gather(*(store.append(batch) for batch in batches))
        await self._assert_consecutive(store, batches, results)

    async def test_appends_from_two_stores_to_one_room_get_distinct_consecutive_offsets(
        self, make_store: StoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        batches = [[Append(ROOM, b"%d-%d" % (t, i)) for i in range(3)] for t in range(20)]
        results = await asyncio.gather(
            *((first if t % 2 else second).append(batch) for t, batch in enumerate(batches))
        )
        await self._assert_consecutive(first, batches, results)

    async def test_appends_alternating_between_two_stores_continue_each_others_offsets(
        self, make_store: StoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        assert await first.append([Append(ROOM, b"1")]) == [1]
        assert await second.append([Append(ROOM, b"2"), Append(ROOM, b"3")]) == [2, 3]
        assert await first.append([Append(ROOM, b"4")]) == [4]
        assert (await second.load(ROOM)).updates == [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")]

    # -- the audit trail -----------------------------------------------------------------------

    async def test_audit_lists_who_changed_which_fields_in_offset_order(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        before = time.time()
        await store.append(
            [
                Append(ROOM, b"1", PLANNER, ("core.venue",)),
                Append(ROOM, b"2", COUPLE, ("timeline[dinner].notes", "timeline[dinner]")),
            ]
        )
        await store.append([Append(ROOM, b"3", COUPLE, (ODD_FIELD,))])
        entries = await (await make_store()).audit(ROOM)  # what another node would read
        assert [without_time(e) for e in entries] == [
            (1, "ada", "planner", ("core.venue",)),
            (2, "grace", "couple", ("timeline[dinner].notes", "timeline[dinner]")),
            (3, "grace", "couple", (ODD_FIELD,)),
        ]
        times = [e.at for e in entries]
        assert times == sorted(times)
        assert before - CLOCK_SLACK <= times[0] <= times[-1] <= time.time() + CLOCK_SLACK

    async def test_an_append_without_author_or_fields_is_audited_without_them(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"repair"), Append(ROOM, b"pending", PLANNER)])
        assert [without_time(e) for e in await store.audit(ROOM)] == [
            (1, None, None, ()),
            (2, "ada", "planner", ()),
        ]

    async def test_compaction_keeps_the_audit_trail(self, make_store: StoreFactory) -> None:
        store = await make_store()
        fields = [(f"core.field{i}",) for i in range(1, 6)]
        await store.append([Append(ROOM, b"%d" % i, PLANNER, fields[i - 1]) for i in range(1, 6)])
        before = await store.audit(ROOM)
        await store.compact(ROOM, b"snapshot-5", 5)
        assert (await store.load(ROOM)).updates == []
        assert await store.audit(ROOM) == before
        assert [e.fields for e in before] == fields
        await store.append([Append(ROOM, b"6", COUPLE, ("core.venue",))])
        assert [e.offset for e in await store.audit(ROOM)] == [1, 2, 3, 4, 5, 6]

    async def test_audit_limit_returns_the_newest_entries_oldest_first(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        for i in range(1, 8):
            await store.append([Append(ROOM, b"%d" % i, PLANNER, (f"core.f{i}",))])
        newest = await store.audit(ROOM, limit=3)
        assert [(e.offset, e.fields) for e in newest] == [
            (5, ("core.f5",)),
            (6, ("core.f6",)),
            (7, ("core.f7",)),
        ]
        assert len(await store.audit(ROOM, limit=100)) == 7
        assert await store.audit(ROOM, limit=0) == []

    async def test_audit_of_a_room_lists_only_that_rooms_appends(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append(
            [
                Append(ROOM, b"a1", PLANNER, ("core.venue",)),
                Append(OTHER_ROOM, b"b1", COUPLE, ("core.couple",)),
                Append(ROOM, b"a2", PLANNER, ("core.date",)),
            ]
        )
        assert [(e.offset, e.fields) for e in await store.audit(ROOM)] == [
            (1, ("core.venue",)),
            (2, ("core.date",)),
        ]
        assert [without_time(e) for e in await store.audit(OTHER_ROOM)] == [
            (1, "grace", "couple", ("core.couple",))
        ]
        assert await store.audit(RoomId("never-seen")) == []

    async def test_audit_offsets_are_the_offsets_append_returned(
        self, make_store: StoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        rooms = (ROOM, OTHER_ROOM)
        batches = [
            [Append(rooms[(t + i) % 2], b"x", Author(f"user-{t}-{i}", "planner")) for i in range(3)]
            for t in range(20)
        ]
        results = await asyncio.gather(
            *((first if t % 2 else second).append(batch) for t, batch in enumerate(batches))
        )
        expected = {
            room: {
                offset: item.author.subject if item.author else None
                for batch, offsets in zip(batches, results, strict=True)
                for item, offset in zip(batch, offsets, strict=True)
                if item.room == room
            }
            for room in rooms
        }
        for room in rooms:
            entries = await first.audit(room)
            assert [e.offset for e in entries] == sorted(expected[room])
            assert {e.offset: e.subject for e in entries} == expected[room]

    # -- epochs and catch-up reads ------------------------------------------------------------

    async def test_a_room_starts_in_epoch_one(self, make_store: StoreFactory) -> None:
        store = await make_store()
        assert (await store.load(ROOM)).epoch == 1
        assert (await store.load_since(ROOM, 0)).epoch == 1
        await store.append([Append(ROOM, b"1")])
        assert (await store.load(ROOM)).epoch == 1
        assert (await store.load_since(ROOM, 1)).epoch == 1

    async def test_reset_empties_the_history_and_starts_the_next_epoch(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i) for i in range(1, 5)])
        await store.compact(ROOM, b"snapshot-2", 2)
        assert await store.reset(ROOM) == 2
        # the empty log starts after offset 4: a reader's position follows on from there
        assert await store.load(ROOM) == History(ROOM, snapshot_offset=4, epoch=2)
        assert await make_store_and_load(make_store) == History(ROOM, snapshot_offset=4, epoch=2)
        assert await store.load_since(ROOM, 4) == History(ROOM, snapshot_offset=4, epoch=2)
        assert await store.load_since(ROOM, 1) == History(ROOM, snapshot_offset=4, epoch=2)
        assert await store.reset(ROOM) == 3
        assert (await store.load(ROOM)).epoch == 3

    async def test_appends_after_a_reset_get_larger_offsets_and_both_epochs_are_audited(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i, PLANNER) for i in range(1, 4)])
        await store.reset(ROOM)
        assert await store.append([Append(ROOM, b"4", COUPLE), Append(ROOM, b"5")]) == [4, 5]
        assert await make_store_and_load(make_store) == History(
            ROOM, snapshot_offset=3, updates=[(4, b"4"), (5, b"5")], epoch=2
        )
        assert [(e.offset, e.subject) for e in await store.audit(ROOM)] == [
            (1, "ada"),
            (2, "ada"),
            (3, "ada"),
            (4, "grace"),
            (5, None),
        ]

    async def test_offsets_continue_after_a_reset_of_a_fully_compacted_room(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"1"), Append(ROOM, b"2"), Append(ROOM, b"3")])
        await store.compact(ROOM, b"snapshot-3", 3)  # no log row left: only the snapshot knows 3
        await store.reset(ROOM)
        await store.reset(ROOM)  # nothing left at all: the second reset must still know 3
        assert await (await make_store()).append([Append(ROOM, b"4")]) == [4]
        assert [e.offset for e in await store.audit(ROOM)] == [1, 2, 3, 4]

    async def test_reset_of_a_room_never_seen_starts_epoch_two_at_offset_one(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        assert await store.reset(ROOM) == 2
        assert await store.append([Append(ROOM, b"1")]) == [1]
        assert await store.load(ROOM) == History(ROOM, updates=[(1, b"1")], epoch=2)

    async def test_reset_leaves_other_rooms_alone(self, make_store: StoreFactory) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"a1"), Append(OTHER_ROOM, b"b1")])
        await store.compact(OTHER_ROOM, b"snapshot-b1", 1)
        await store.append([Append(ROOM, b"a2"), Append(OTHER_ROOM, b"b2")])
        await store.reset(ROOM)
        assert await store.load(OTHER_ROOM) == History(OTHER_ROOM, b"snapshot-b1", 1, [(2, b"b2")])
        assert await store.append([Append(OTHER_ROOM, b"b3"), Append(ROOM, b"a3")]) == [3, 3]
        assert [e.offset for e in await store.audit(OTHER_ROOM)] == [1, 2, 3]
        assert (await store.load(ROOM)).updates == [(3, b"a3")]

    async def test_resets_racing_appends_never_reuse_an_offset(
        self, make_store: StoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        batches = [[Append(ROOM, b"%d-%d" % (t, i)) for i in range(3)] for t in range(20)]
        appends = [(first if t % 2 else second).append(b) for t, b in enumerate(batches)]
        resets = [(second if t % 2 else first).reset(ROOM) for t in range(5)]
        *results, epochs = await asyncio.gather(*appends, asyncio.gather(*resets))
        every = sorted(o for offsets in results for o in offsets)
        assert every == list(range(1, 61))
        assert [e.offset for e in await first.audit(ROOM)] == every
        assert sorted(epochs) == [2, 3, 4, 5, 6]
        history = await second.load(ROOM)
        assert history.epoch == 6
        left = [o for o, _ in history.updates]  # what the last reset did not drop: a suffix
        assert left == every[len(every) - len(left) :]

    async def test_load_since_returns_the_updates_after_the_offset(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i) for i in range(1, 6)])
        since = await (await make_store()).load_since(ROOM, 2)
        assert since == History(ROOM, None, 2, [(3, b"3"), (4, b"4"), (5, b"5")])
        assert since.last_offset == 5
        assert await store.load_since(ROOM, 0) == await store.load(ROOM)

    async def test_load_since_after_compaction(self, make_store: StoreFactory) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"%d" % i) for i in range(1, 6)])
        await store.compact(ROOM, b"snapshot-3", 3)
        loaded = await store.load(ROOM)
        for covered in (0, 1, 2):  # the snapshot covers updates the client lacks: all of it
            assert await store.load_since(ROOM, covered) == loaded
        assert loaded == History(ROOM, b"snapshot-3", 3, [(4, b"4"), (5, b"5")])
        assert await store.load_since(ROOM, 3) == History(ROOM, None, 3, [(4, b"4"), (5, b"5")])
        since = await store.load_since(ROOM, 4)
        assert (since.snapshot, since.updates, since.last_offset) == (None, [(5, b"5")], 5)

    async def test_load_since_the_last_offset_or_beyond_returns_no_updates(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"1"), Append(ROOM, b"2")])
        assert await store.load_since(ROOM, 2) == History(ROOM, None, 2)
        await store.compact(ROOM, b"snapshot-2", 2)
        assert await store.load_since(ROOM, 2) == History(ROOM, None, 2)
        for beyond in (3, 100, 2**64):  # 2**64: beyond a 64-bit column, still just "beyond"
            since = await store.load_since(ROOM, beyond)
            assert (since.snapshot, since.updates) == (None, [])

    async def test_load_since_reads_only_that_room(self, make_store: StoreFactory) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"a1"), Append(OTHER_ROOM, b"b1")])
        await store.append([Append(OTHER_ROOM, b"b2"), Append(ROOM, b"a2")])
        await store.compact(ROOM, b"snapshot-a2", 2)
        await store.reset(ROOM)
        assert await store.load_since(OTHER_ROOM, 1) == History(OTHER_ROOM, None, 1, [(2, b"b2")])
        assert await store.load_since(RoomId("never-seen"), 0) == History(RoomId("never-seen"))

    @staticmethod
    async def _assert_consecutive(
        store: Store, batches: list[list[Append]], results: list[list[int]]
    ) -> None:
        for offsets in results:  # each batch is one consecutive run, in batch order
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        every = sorted(o for offsets in results for o in offsets)
        assert every == list(range(1, sum(map(len, batches)) + 1))
        stored = dict((await store.load(ROOM)).updates)
        for batch, offsets in zip(batches, results, strict=True):
            assert [stored[o] for o in offsets] == [item.update for item in batch]


PLANNER = Author("ada", "planner")
COUPLE = Author("grace", "couple")
ODD_FIELD = 'timeline[a,b "c" \\ é].notes'  # the store must not split or mangle a field
CLOCK_SLACK = 5.0  # seconds: Postgres stamps with its own clock (same machine in tests)


def without_time(entry: AuditEntry) -> tuple[int, str | None, str | None, tuple[str, ...]]:
    return (entry.offset, entry.subject, entry.role, entry.fields)


async def make_store_and_load(make_store: StoreFactory) -> Any:
    """Load ROOM through a fresh store instance: what another node would read."""
    return await (await make_store()).load(ROOM)
