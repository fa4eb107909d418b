"""The embedded adapters run the contracts: MemoryBus and SqliteStore (always, no services)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.ports import Append, Author, Bus, History, Store
from gateway.types import NodeId, RoomId
from tests.adapters.contracts import ROOM, BusContract, BusFactory, StoreContract, StoreFactory
from tests.adapters.history_contracts import VersionsContract, WebhooksContract


class TestMemoryBus(BusContract):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        broker = MemoryBroker()

        async def make(node_id: str, *, queue_limit: int | None = None) -> Bus:
            return MemoryBus(NodeId(node_id), broker, queue_limit=queue_limit)

        return make


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        async with AsyncExitStack() as stack:

            async def make() -> Store:
                return await stack.enter_async_context(SqliteStore.open(tmp_path))

            yield make

    async def test_a_data_dir_from_before_the_audit_trail_keeps_working(
        self, tmp_path: Path
    ) -> None:
        db = sqlite3.connect(tmp_path / "gateway.sqlite3")
        with db:  # the schema and a row of the previous release
            db.execute(
                "CREATE TABLE updates (room TEXT, offset INTEGER, data BLOB,"
                " PRIMARY KEY (room, offset)) WITHOUT ROWID"
            )
            db.execute("CREATE TABLE snapshots (room TEXT PRIMARY KEY, offset INTEGER, data BLOB)")
            db.execute("INSERT INTO updates VALUES (?, 1, ?)", (ROOM, b"1"))
        db.close()
        async with SqliteStore.open(tmp_path) as store:
            assert await store.append([Append(ROOM, b"2", Author("ada", "planner"))]) == [2]
            assert (await store.load(ROOM)).updates == [(1, b"1"), (2, b"2")]
            assert [(e.offset, e.subject) for e in await store.audit(ROOM)] == [(2, "ada")]

    async def test_a_data_dir_from_before_epochs_starts_at_epoch_one_and_keeps_its_offsets(
        self, tmp_path: Path
    ) -> None:
        async with SqliteStore.open(tmp_path) as store:
            await store.append([Append(ROOM, b"1"), Append(ROOM, b"2"), Append(ROOM, b"3")])
            await store.compact(ROOM, b"snapshot-2", 2)
        db = sqlite3.connect(tmp_path / "gateway.sqlite3")
        with db:  # what the previous release had: no rooms table
            db.execute("DROP TABLE rooms")
        db.close()
        async with SqliteStore.open(tmp_path) as store:
            assert await store.load(ROOM) == History(ROOM, b"snapshot-2", 2, [(3, b"3")])
            assert await store.reset(ROOM) == 2
            assert await store.append([Append(ROOM, b"4")]) == [4]
            expected = History(ROOM, snapshot_offset=3, updates=[(4, b"4")], epoch=2)
            assert await store.load(ROOM) == expected


async def test_a_room_that_leaves_the_node_leaves_no_seq_behind() -> None:
    broker = MemoryBroker()
    a, b = MemoryBus(NodeId("node-a"), broker), MemoryBus(NodeId("node-b"), broker)
    rooms = [RoomId(f"other-{n}") for n in range(20)]
    async with b.subscribe(ROOM):
        for room in rooms:
            async with a.subscribe(room), b.subscribe(room):
                a.publish_nowait(room, b"update")
                b.publish_nowait(room, b"update")
        async with a.subscribe(ROOM):
            a.publish_nowait(ROOM, b"update")
        assert (a._seq, dict(b._seq)) == ({}, {})  # b still holds ROOM, but published nothing
    assert broker.subscribers == {}


class TestSqliteVersions(VersionsContract, WebhooksContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        async with AsyncExitStack() as stack:

            async def make() -> Store:
                return await stack.enter_async_context(SqliteStore.open(tmp_path))

            yield make
