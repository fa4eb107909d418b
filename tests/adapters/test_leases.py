"""PostgresStore as Leases: room ownership with fencing, against the real Postgres.

Every test gets a schema of its own (``t_<uuid12>``), dropped with CASCADE afterwards. Two
stores on one schema stand for two nodes sharing the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import asyncpg
import pytest

from gateway.adapters import postgres_store
from gateway.adapters.postgres_store import MIGRATIONS, PostgresStore, migrate
from gateway.ports import FENCED, Append, Author, Lease, Leases
from gateway.types import NodeId, RoomId
from tests.adapters.contracts import OTHER_ROOM, ROOM
from tests.helpers import eventually

pytestmark = pytest.mark.postgres

A, B = NodeId("node-a"), NodeId("node-b")
TTL = 30.0  # long enough never to expire during a test
SHORT_TTL = 0.2  # expires while the test waits for it

Factory = Callable[[], Awaitable[PostgresStore]]


@pytest.fixture
def schema(postgres_schema: str) -> str:
    return postgres_schema


@pytest.fixture
async def make_store(postgres_dsn: str, schema: str) -> AsyncIterator[Factory]:
    async with AsyncExitStack() as stack:

        async def make() -> PostgresStore:
            store = PostgresStore.connect(postgres_dsn, schema=schema, create=True, pool_max=3)
            return await stack.enter_async_context(store)

        yield make


async def expired(store: PostgresStore, room: RoomId) -> bool:
    return (await store.holder(room)).holder is None


async def blocked_by(holder: asyncpg.Connection) -> bool:
    """Whether some backend waits for a lock that ``holder``'s backend holds."""
    return bool(
        await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            holder.get_server_pid(),
        )
    )


def test_the_postgres_store_is_leases() -> None:
    def check(leases: Leases) -> None: ...

    check(PostgresStore("postgresql://unused", schema="public"))  # mypy checks the structure


class TestAcquire:
    async def test_the_first_acquire_of_a_new_room_takes_it_with_fence_one(
        self, make_store: Factory
    ) -> None:
        store = await make_store()
        assert await store.acquire(ROOM, A, TTL) == Lease(ROOM, A, 1, acquired=True)
        assert await store.holder(ROOM) == Lease(ROOM, A, 1)

    async def test_a_room_nobody_ever_acquired_has_no_holder(self, make_store: Factory) -> None:
        store = await make_store()
        assert await store.holder(ROOM) == Lease(ROOM, None, 0)
        await store.append([Append(ROOM, b"1")])  # an unfenced append creates the row
        assert await store.holder(ROOM) == Lease(ROOM, None, 0)
        assert await store.acquire(ROOM, A, TTL) == Lease(ROOM, A, 1, acquired=True)

    async def test_a_held_lease_is_refused_to_another_node_and_names_the_holder(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        await a.acquire(ROOM, A, TTL)
        assert await b.acquire(ROOM, B, TTL) == Lease(ROOM, A, 1, acquired=False)
        assert await b.holder(ROOM) == Lease(ROOM, A, 1)

    async def test_an_expired_lease_is_taken_over_with_the_next_fence(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        await a.acquire(ROOM, A, SHORT_TTL)
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        assert await b.holder(ROOM) == Lease(ROOM, None, 1)
        assert await b.acquire(ROOM, B, TTL) == Lease(ROOM, B, 2, acquired=True)
        assert await a.acquire(ROOM, A, TTL) == Lease(ROOM, B, 2, acquired=False)

    async def test_the_same_node_acquiring_again_after_a_restart_bumps_the_fence(
        self, make_store: Factory
    ) -> None:
        before = await make_store()
        await before.acquire(ROOM, A, TTL)
        after = await make_store()  # the restarted node, same node id, lease still live
        assert await after.acquire(ROOM, A, TTL) == Lease(ROOM, A, 2, acquired=True)

    async def test_two_nodes_acquiring_at_once_never_both_get_it(self, make_store: Factory) -> None:
        a, b = await make_store(), await make_store()
        rooms = [RoomId(f"race-{i}") for i in range(20)]
        await a.append([Append(room, b"0") for room in rooms[10:]])  # half have a row already
        for room in rooms:
            first, second = await asyncio.gather(a.acquire(room, A, TTL), b.acquire(room, B, TTL))
            assert [first.acquired, second.acquired].count(True) == 1, (first, second)
            winner, loser = (first, second) if first.acquired else (second, first)
            assert winner.fence == 1
            # the loser names the winner, or (it raced the winner's commit) nobody
            assert loser.holder in (winner.holder, None)
            assert await a.holder(room) == Lease(room, winner.holder, 1)


class TestRenewRelease:
    async def test_renew_keeps_the_lease(self, make_store: Factory) -> None:
        store = await make_store()
        await store.acquire(ROOM, A, SHORT_TTL)
        await store.acquire(OTHER_ROOM, A, TTL)
        assert await store.renew([(ROOM, 1), (OTHER_ROOM, 1)], A, TTL) == {ROOM, OTHER_ROOM}
        # renewed for TTL: another node is refused even after SHORT_TTL would have passed
        assert (await store.acquire(ROOM, B, TTL)).holder == A

    async def test_renew_of_an_expired_lease_nobody_took_keeps_it(
        self, make_store: Factory
    ) -> None:
        store = await make_store()
        await store.acquire(ROOM, A, SHORT_TTL)
        await eventually(lambda: expired(store, ROOM), message="the lease expires")
        assert await store.renew([(ROOM, 1)], A, TTL) == {ROOM}
        assert await store.holder(ROOM) == Lease(ROOM, A, 1)

    async def test_renew_after_a_takeover_returns_no_room(self, make_store: Factory) -> None:
        a, b = await make_store(), await make_store()
        await a.acquire(ROOM, A, SHORT_TTL)
        await a.acquire(OTHER_ROOM, A, TTL)
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        await b.acquire(ROOM, B, TTL)
        assert await a.renew([(ROOM, 1), (OTHER_ROOM, 1)], A, TTL) == {OTHER_ROOM}
        assert await a.holder(ROOM) == Lease(ROOM, B, 2)
        # nor does a renew by the wrong node, or with a wrong fence, extend anything
        assert await b.renew([(ROOM, 1), (OTHER_ROOM, 1)], B, TTL) == set()
        assert await a.renew([], A, TTL) == set()

    async def test_release_frees_the_lease_and_the_next_acquire_bumps_the_fence(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        await a.acquire(ROOM, A, TTL)
        await a.release(ROOM, A, 1)
        assert await b.holder(ROOM) == Lease(ROOM, None, 1)
        assert await b.acquire(ROOM, B, TTL) == Lease(ROOM, B, 2, acquired=True)

    async def test_release_by_a_node_that_lost_the_lease_does_nothing(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        await a.acquire(ROOM, A, SHORT_TTL)
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        await b.acquire(ROOM, B, TTL)
        await a.release(ROOM, A, 1)  # stale fence
        await a.release(ROOM, A, 2)  # not A's
        assert await a.holder(ROOM) == Lease(ROOM, B, 2)


class TestFencedAppend:
    async def test_an_append_with_the_current_fence_is_stored(self, make_store: Factory) -> None:
        store = await make_store()
        lease = await store.acquire(ROOM, A, TTL)
        batch = [Append(ROOM, b"1", fence=lease.fence), Append(ROOM, b"2", fence=lease.fence)]
        assert await store.append(batch) == [1, 2]
        assert (await store.load(ROOM)).updates == [(1, b"1"), (2, b"2")]

    async def test_an_append_with_a_stale_fence_is_refused_and_the_other_rooms_commit(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        stale = await a.acquire(ROOM, A, SHORT_TTL)
        kept = await a.acquire(OTHER_ROOM, A, TTL)
        assert await a.append([Append(ROOM, b"1", fence=stale.fence)]) == [1]
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        fresh = await b.acquire(ROOM, B, TTL)
        batch = [
            Append(OTHER_ROOM, b"x", Author("ada", "planner"), ("core.venue",), kept.fence),
            Append(ROOM, b"2", Author("ada", "planner"), ("core.venue",), stale.fence),
            Append(OTHER_ROOM, b"y", fence=kept.fence),
            Append(ROOM, b"3", fence=stale.fence),
        ]
        assert await a.append(batch) == [1, FENCED, 2, FENCED]
        assert (await a.load(ROOM)).updates == [(1, b"1")]
        assert [e.offset for e in await a.audit(ROOM)] == [1]
        assert (await a.load(OTHER_ROOM)).updates == [(1, b"x"), (2, b"y")]
        assert [e.subject for e in await a.audit(OTHER_ROOM)] == ["ada", None]
        # the refused appends took no offsets: the new owner continues after the last stored
        assert await b.append([Append(ROOM, b"4", fence=fresh.fence)]) == [2]

    async def test_a_fenced_append_to_a_room_without_a_row_is_refused(
        self, make_store: Factory
    ) -> None:
        store = await make_store()
        assert await store.append([Append(ROOM, b"1", fence=1), Append(OTHER_ROOM, b"x")]) == [
            FENCED,
            1,
        ]
        assert (await store.load(ROOM)).updates == []
        assert await store.holder(ROOM) == Lease(ROOM, None, 0)  # no row was created
        assert await store.acquire(ROOM, A, TTL) == Lease(ROOM, A, 1, acquired=True)

    async def test_unfenced_appends_are_stored_whoever_holds_the_lease(
        self, make_store: Factory
    ) -> None:
        store = await make_store()
        await store.acquire(ROOM, A, TTL)
        assert await store.append([Append(ROOM, b"tool")]) == [1]
        assert await store.holder(ROOM) == Lease(ROOM, A, 1)  # the lease is untouched

    async def test_after_a_takeover_the_new_owner_loads_every_append_the_old_owner_made(
        self, make_store: Factory
    ) -> None:
        a, b = await make_store(), await make_store()
        old = await a.acquire(ROOM, A, SHORT_TTL)
        for i in range(1, 4):
            assert await a.append([Append(ROOM, b"%d" % i, fence=old.fence)]) == [i]
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        new = await b.acquire(ROOM, B, TTL)
        assert new == Lease(ROOM, B, old.fence + 1, acquired=True)
        assert await a.append([Append(ROOM, b"late", fence=old.fence)]) == [FENCED]
        assert [d for _, d in (await b.load(ROOM)).updates] == [b"1", b"2", b"3"]

    async def test_an_acquire_waits_for_an_append_in_flight_then_its_load_sees_it(
        self, make_store: Factory, postgres_dsn: str
    ) -> None:
        a, b = await make_store(), await make_store()
        old = await a.acquire(ROOM, A, SHORT_TTL)
        await eventually(lambda: expired(b, ROOM), message="A's lease expires")
        in_flight = await asyncpg.connect(postgres_dsn)
        try:
            # The transaction commits (leaving the room's row) before the group awaits acquire.
            async with asyncio.TaskGroup() as tasks, in_flight.transaction():
                args = ([ROOM], [b"1"], [None], [None], [None], [old.fence], [None])
                offsets = [r["offset"] for r in await in_flight.fetch(a._sql.append, *args)]
                acquire = tasks.create_task(b.acquire(ROOM, B, TTL))
                await eventually(lambda: blocked_by(in_flight), message="acquire waits for it")
        finally:
            await in_flight.close()
        assert (offsets, acquire.result()) == ([1], Lease(ROOM, B, 2, acquired=True))
        assert (await b.load(ROOM)).updates == [(1, b"1")]
        assert await a.append([Append(ROOM, b"late", fence=old.fence)]) == [FENCED]


async def test_a_schema_at_version_two_gets_leases_and_keeps_its_rooms(
    postgres_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_store, "MIGRATIONS", MIGRATIONS[:2])
    assert await migrate(postgres_dsn, schema=schema) == [m.name for m in MIGRATIONS[:2]]
    conn = await asyncpg.connect(postgres_dsn)
    try:  # what a node of the previous release had appended
        await conn.execute(f'INSERT INTO "{schema}".rooms VALUES ($1, 1, 1)', ROOM)
        await conn.execute(f'INSERT INTO "{schema}".updates VALUES ($1, 1, $2)', ROOM, b"1")
    finally:
        await conn.close()
    monkeypatch.undo()
    applied = await migrate(postgres_dsn, schema=schema)  # the leases, and every later one
    assert applied == [m.name for m in MIGRATIONS[2:]]
    assert applied[0] == "0003_room_leases"
    async with PostgresStore.connect(postgres_dsn, schema=schema) as store:
        assert await store.holder(ROOM) == Lease(ROOM, None, 0)
        assert await store.acquire(ROOM, A, TTL) == Lease(ROOM, A, 1, acquired=True)
        assert await store.append([Append(ROOM, b"2", fence=1)]) == [2]
        assert (await store.load(ROOM)).updates == [(1, b"1"), (2, b"2")]
