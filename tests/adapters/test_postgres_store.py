"""PostgresStore against the real Postgres: the Store contract, migrations, failures.

Every test gets a schema of its own (``t_<uuid12>``), dropped with CASCADE afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import pytest

from gateway.adapters import postgres_store
from gateway.adapters.postgres_store import MIGRATIONS, PostgresStore, migrate
from gateway.errors import BackendUnavailable, ConfigError, InvalidState
from gateway.ports import Append, Author, History, Store
from gateway.types import RoomId
from tests.adapters.contracts import ROOM, StoreContract, StoreFactory
from tests.adapters.history_contracts import VersionsContract, WebhooksContract
from tests.helpers import eventually

pytestmark = pytest.mark.postgres

ALL_MIGRATIONS = [m.name for m in MIGRATIONS]


@pytest.fixture
def schema(postgres_schema: str) -> str:
    return postgres_schema


@pytest.fixture
async def make_store(postgres_dsn: str, schema: str) -> AsyncIterator[StoreFactory]:
    async with AsyncExitStack() as stack:

        async def make() -> Store:
            store = PostgresStore.connect(postgres_dsn, schema=schema, create=True, pool_max=3)
            return await stack.enter_async_context(store)

        yield make


async def schema_exists(dsn: str, schema: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
        )
    finally:
        await conn.close()


async def blocked_by(holder: asyncpg.Connection) -> bool:
    """Whether some backend waits for a lock that ``holder``'s backend holds."""
    return bool(
        await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            holder.get_server_pid(),
        )
    )


class TestPostgresStore(StoreContract):
    async def test_appends_naming_rooms_in_opposite_orders_do_not_deadlock(
        self, make_store: StoreFactory
    ) -> None:
        first, second = await make_store(), await make_store()
        rooms = [RoomId(f"room-{i}") for i in range(4)]
        forward = [Append(room, b"f") for room in rooms]
        backward = [Append(room, b"b") for room in reversed(rooms)]
        for _ in range(10):
            await asyncio.gather(first.append(forward), second.append(backward))
        for room in rooms:
            assert [o for o, _ in (await first.load(room)).updates] == list(range(1, 21))

    async def test_compact_beyond_the_last_offset_is_refused(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store()
        await store.append([Append(ROOM, b"1"), Append(ROOM, b"2")])
        with pytest.raises(InvalidState, match="through 3"):
            await store.compact(ROOM, b"too far", 3)
        assert (await store.load(ROOM)).updates == [(1, b"1"), (2, b"2")]

    async def test_a_new_room_starts_at_epoch_one(
        self, make_store: StoreFactory, postgres_dsn: str, schema: str
    ) -> None:
        await (await make_store()).append([Append(ROOM, b"1")])
        conn = await asyncpg.connect(postgres_dsn)
        try:
            row = await conn.fetchrow(
                f'SELECT last_offset, epoch FROM "{schema}".rooms WHERE room = $1', ROOM
            )
        finally:
            await conn.close()
        assert (row["last_offset"], row["epoch"]) == (1, 1)

    async def test_reset_drops_an_append_that_committed_while_it_waited_for_the_room(
        self, make_store: StoreFactory, postgres_dsn: str
    ) -> None:
        store = await make_store()
        assert isinstance(store, PostgresStore)
        await store.append([Append(ROOM, b"1")])
        holder = await asyncpg.connect(postgres_dsn)
        try:
            # The transaction commits (leaving the room's row) before the group awaits reset.
            async with asyncio.TaskGroup() as tasks, holder.transaction():
                args = (
                    [ROOM],
                    [b"2"],
                    [None],
                    [None],
                    [None],
                    [None],
                    [None],
                )  # an append in flight
                offsets = [r["offset"] for r in await holder.fetch(store._sql.append, *args)]
                reset = tasks.create_task(store.reset(ROOM))
                await eventually(lambda: blocked_by(holder), message="reset waits for it")
        finally:
            await holder.close()
        assert (offsets, reset.result()) == ([2], 2)
        # the late append went too; the new log starts after it
        assert await store.load(ROOM) == History(ROOM, snapshot_offset=2, epoch=2)
        assert await store.append([Append(ROOM, b"3")]) == [3]
        assert [e.offset for e in await store.audit(ROOM)] == [1, 2, 3]

    async def test_a_killed_connection_is_backend_unavailable_then_the_store_recovers(
        self, make_store: StoreFactory, postgres_dsn: str
    ) -> None:
        store = await make_store()
        assert isinstance(store, PostgresStore)
        await store.append([Append(ROOM, b"1")])
        pool = store._pool
        async with pool.acquire() as conn:  # the pool's only idle connection, killed by pid
            pid = conn.get_server_pid()
        admin = await asyncpg.connect(postgres_dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        outcomes: list[object] = []
        for _ in range(2):  # the first use may find the dead socket; never a raw asyncpg error
            try:
                outcomes.append(await store.append([Append(ROOM, b"again")]))
            except BackendUnavailable as exc:
                outcomes.append(exc)
        assert isinstance(outcomes[-1], list)
        assert (await store.load(ROOM)).updates[0] == (1, b"1")


async def test_unreachable_postgres_is_backend_unavailable() -> None:
    store = PostgresStore.connect("postgresql://127.0.0.1:1/test", schema="public")
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await store.__aenter__()


async def test_a_schema_name_must_be_a_plain_identifier(postgres_dsn: str) -> None:
    with pytest.raises(ConfigError, match="plain identifier"):
        PostgresStore.connect(postgres_dsn, schema='x"; DROP TABLE y; --')


class TestMigrate:
    async def test_check_lists_pending_migrations_and_changes_nothing(
        self, postgres_dsn: str, schema: str
    ) -> None:
        assert await migrate(postgres_dsn, schema=schema, check=True) == ALL_MIGRATIONS
        assert not await schema_exists(postgres_dsn, schema)

    async def test_migrate_applies_once_then_nothing_is_pending(
        self, postgres_dsn: str, schema: str
    ) -> None:
        assert await migrate(postgres_dsn, schema=schema) == ALL_MIGRATIONS
        assert await migrate(postgres_dsn, schema=schema) == []
        assert await migrate(postgres_dsn, schema=schema, check=True) == []

    async def test_concurrent_migrations_apply_each_migration_once(
        self, postgres_dsn: str, schema: str
    ) -> None:
        results = await asyncio.gather(*(migrate(postgres_dsn, schema=schema) for _ in range(3)))
        assert sorted(results, key=len) == [[], [], ALL_MIGRATIONS]
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')
        finally:
            await conn.close()
        assert [row["name"] for row in rows] == ALL_MIGRATIONS

    async def test_a_store_refuses_an_unmigrated_schema(
        self, postgres_dsn: str, schema: str
    ) -> None:
        store = PostgresStore.connect(postgres_dsn, schema=schema)
        with pytest.raises(BackendUnavailable, match="gateway migrate"):
            await store.__aenter__()
        await migrate(postgres_dsn, schema=schema)
        async with PostgresStore.connect(postgres_dsn, schema=schema) as store:
            assert await store.append([Append(ROOM, b"1")]) == [1]

    async def test_a_schema_from_before_the_audit_trail_is_migrated_and_keeps_its_log(
        self, postgres_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(postgres_store, "MIGRATIONS", MIGRATIONS[:1])
        assert await migrate(postgres_dsn, schema=schema) == ALL_MIGRATIONS[:1]
        conn = await asyncpg.connect(postgres_dsn)
        try:  # what a node of the previous release had appended
            await conn.execute(f'INSERT INTO "{schema}".rooms VALUES ($1, 1)', ROOM)
            await conn.execute(f'INSERT INTO "{schema}".updates VALUES ($1, 1, $2)', ROOM, b"1")
        finally:
            await conn.close()
        monkeypatch.undo()
        assert await migrate(postgres_dsn, schema=schema) == ALL_MIGRATIONS[1:]
        async with PostgresStore.connect(postgres_dsn, schema=schema) as store:
            assert await store.append([Append(ROOM, b"2", Author("ada", "planner"))]) == [2]
            assert (await store.load(ROOM)).updates == [(1, b"1"), (2, b"2")]
            assert [(e.offset, e.subject) for e in await store.audit(ROOM)] == [(2, "ada")]


class TestPostgresVersions(VersionsContract, WebhooksContract):
    """Version history and webhooks on Postgres (``make_store`` of this module)."""
