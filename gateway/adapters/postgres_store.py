"""Postgres Store: the durable log of every node in production (DESIGN.md §2, §6).

Tables, all in one schema (``public`` unless configured; tests use one schema each):

- ``rooms``: one row per room holding ``last_offset``, the last offset ever assigned (it survives
  compaction and reset, so offsets never repeat), ``epoch`` (1 until ``reset`` bumps it; a
  room without a row is in epoch 1) and the room's lease (``Leases``): ``owner`` (the node
  holding it, NULL: nobody), ``fence`` (0 until the first ``acquire``, then one more per
  acquire) and ``lease_expires`` (NULL when nobody holds it). Rows are never deleted.
- ``updates``: the append-only log, primary key ``(room, "offset")``.
- ``snapshots``: the newest snapshot per room and the offset it covers.
- ``wedding_dates``: each wedding's ``core.wedding_date`` (``WeddingDates``), indexed by date, so a
  node finds the weddings of the coming week without reading documents (gateway/warm.py).
- ``audit``: one row per appended update, ``(room, "offset")`` as in ``updates``, with when it was
  committed (``committed_at``), who wrote it (``subject``, ``role``; NULL for the gateway's own
  updates) and the ``fields`` it changed (``text[]``). Written by the appending statement and
  never deleted by ``compact``: the history of who changed what outlives the log rows.

Offsets are assigned by incrementing ``rooms.last_offset`` inside the appending statement, so
several nodes may append to one room at once: the row lock orders them, and each batch gets a
consecutive range in batch order. An append is one statement (one round trip, one transaction,
committed before it returns); so are ``compact``, ``load`` and ``load_since``. ``reset`` is one
transaction of two statements: it locks the ``rooms`` row first, so its deletes see every append
committed before it, and appends waiting on the lock continue the offsets after it.

Leases are fenced on the same row lock. ``acquire`` is one upsert of the room's row that bumps
``fence``; an append names the fence it was granted and its upsert of the row updates (and so
numbers anything) only while the row still carries that fence. Both lock the row, and under
READ COMMITTED both judge the newest committed version of it once they hold the lock, so an
append of the old owner either committed before the acquire took the lock (the acquire waited
for it: a ``load`` after ``acquire`` returns sees it) or locks the row after the acquire
committed and finds the new fence (refused, nothing stored). Neither can interleave.

Every asyncpg or socket failure reaches the caller as ``BackendUnavailable`` (retryable).

Migrations are numbered and tracked in ``schema_migrations``; ``migrate()`` applies the pending
ones under a transaction-scoped advisory lock, so several nodes may run it at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncpg
import orjson

from gateway.adapters.postgres_history import MIGRATION_SQL, HistoryStatements
from gateway.errors import BackendUnavailable, ConfigError, InvalidState
from gateway.ports import Append, AuditEntry, History, Lease, Retention, WebhookEndpoint
from gateway.types import NodeId, RoomId

T = TypeVar("T")

MAX_OFFSET = 2**63 - 1  # bigint: a larger one is beyond any room's last offset anyway
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a pooled connection whose backend was terminated
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change. ``sql`` names the schema as ``{schema}`` (quoted for you)."""

    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "0001_log_snapshots_rooms",
        """
        CREATE TABLE IF NOT EXISTS {schema}.rooms (
            room text PRIMARY KEY,
            last_offset bigint NOT NULL DEFAULT 0,
            epoch bigint NOT NULL DEFAULT 1
        );
        CREATE TABLE IF NOT EXISTS {schema}.updates (
            room text NOT NULL,
            "offset" bigint NOT NULL,
            data bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (room, "offset")
        );
        CREATE TABLE IF NOT EXISTS {schema}.snapshots (
            room text PRIMARY KEY,
            "offset" bigint NOT NULL,
            data bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    Migration(
        2,
        "0002_audit",
        """
        CREATE TABLE IF NOT EXISTS {schema}.audit (
            room text NOT NULL,
            "offset" bigint NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            subject text,
            role text,
            fields text[] NOT NULL DEFAULT '{{}}',
            PRIMARY KEY (room, "offset")
        );
        """,
    ),
    Migration(
        3,
        "0003_room_leases",
        """
        ALTER TABLE {schema}.rooms
            ADD COLUMN IF NOT EXISTS owner text,
            ADD COLUMN IF NOT EXISTS fence bigint NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS lease_expires timestamptz;
        """,
    ),
    Migration(4, "0004_history_webhooks", MIGRATION_SQL),  # gateway/adapters/postgres_history.py
    Migration(
        5,
        "0005_wedding_dates",
        """
        CREATE TABLE IF NOT EXISTS {schema}.wedding_dates (
            room text PRIMARY KEY,
            wedding_date date NOT NULL
        );
        CREATE INDEX IF NOT EXISTS wedding_dates_by_date ON {schema}.wedding_dates (wedding_date);
        """,
    ),
)
"""Append only; never edit a released migration. Each must be idempotent on its own."""


def quote_schema(schema: str) -> str:
    """``schema`` as a quoted SQL identifier. Raises ConfigError for anything but a plain name."""
    if not _IDENTIFIER.fullmatch(schema):
        raise ConfigError(f"Postgres schema {schema!r} is not a plain identifier ([A-Za-z_]\\w*).")
    return f'"{schema}"'


# -- migrations ----------------------------------------------------------------------------------


async def migrate(dsn: str, *, schema: str = "public", check: bool = False) -> list[str]:
    """Apply the pending migrations to ``schema`` (created if missing); return their names.

    With ``check=True`` nothing is changed: the names of the pending migrations are returned (the
    CLI's ``gateway migrate --check`` exits non-zero while this is not empty). Safe to run from
    several nodes at once: the first one applies, the others then find nothing pending.
    """
    quoted = quote_schema(schema)
    try:
        conn = await asyncpg.connect(dsn)
    except _FAILURES as exc:
        raise BackendUnavailable(f"Postgres is unreachable for migrations: {exc}") from exc
    try:
        if check:
            return [m.name for m in await _pending(conn, schema)]
        async with conn.transaction():
            # Serialise concurrent migrators of this schema; released at COMMIT.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('wedsync-migrate:' || $1, 0))",
                schema,
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            pending = await _pending(conn, schema)
            for migration in pending:
                await conn.execute(migration.sql.format(schema=quoted))
                await conn.execute(
                    f"INSERT INTO {quoted}.schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        return [m.name for m in pending]
    except _FAILURES as exc:
        raise BackendUnavailable(f"migrating Postgres schema {schema!r} failed: {exc}") from exc
    finally:
        await conn.close()


async def _pending(conn: Any, schema: str) -> list[Migration]:
    table = await conn.fetchval(
        "SELECT to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL", schema
    )
    applied: set[int] = set()
    if table:
        rows = await conn.fetch(f"SELECT version FROM {quote_schema(schema)}.schema_migrations")
        applied = {row["version"] for row in rows}
    return [m for m in MIGRATIONS if m.version not in applied]


# -- the store -----------------------------------------------------------------------------------


class PostgresStore:
    """A Store in Postgres, shared by every node. Enter it (``async with``) before use."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        create: bool = False,
        pool_min: int = 1,
        pool_max: int = 10,
        command_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.create = create
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout = command_timeout
        self._pool: Any = None
        self._sql = _Statements(quote_schema(schema))
        self._history = HistoryStatements(quote_schema(schema))

    @classmethod
    def connect(
        cls,
        dsn: str,
        *,
        schema: str = "public",
        create: bool = False,
        pool_min: int = 1,
        pool_max: int = 10,
        command_timeout: float = 10.0,
    ) -> Self:
        """A store on ``dsn``; entering it opens the pool.

        With ``create=True`` entering also applies the pending migrations (tests, development);
        otherwise it fails with BackendUnavailable while migrations are pending (run
        ``gateway migrate``). Closing drops nothing.
        """
        return cls(
            dsn,
            schema=schema,
            create=create,
            pool_min=pool_min,
            pool_max=pool_max,
            command_timeout=command_timeout,
        )

    async def __aenter__(self) -> Self:
        if self.create:
            await migrate(self.dsn, schema=self.schema)
        else:
            pending = await migrate(self.dsn, schema=self.schema, check=True)
            if pending:
                raise BackendUnavailable(
                    f"Postgres schema {self.schema!r} has pending migrations {pending}:"
                    " run `gateway migrate` first."
                )
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                command_timeout=self.command_timeout,
            )
        except _FAILURES as exc:
            raise BackendUnavailable(f"Postgres pool could not be opened: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool, waiting for queries in flight. Drops nothing."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- Store ----------------------------------------------------------------------------------

    async def load(self, room: RoomId) -> History:
        """The newest snapshot and every later update, read in one statement (one snapshot)."""
        return await self._load_since("load", room, -1)  # -1: before any snapshot

    async def load_since(self, room: RoomId, offset: int) -> History:
        """The updates after ``offset``, or ``load``'s answer when compaction covered some of
        them; read in one statement (one snapshot)."""
        return await self._load_since("load_since", room, min(offset, MAX_OFFSET))

    async def reset(self, room: RoomId) -> int:
        """Delete the room's snapshot and log (not its audit rows), bump its epoch, return it."""

        async def transaction(pool: Any) -> int:
            async with pool.acquire() as conn, conn.transaction():
                epoch: int = await conn.fetchval(self._sql.bump_epoch, room)
                await conn.execute(self._sql.drop_history, room)
                return epoch

        return await self._run("reset", transaction)

    async def append(self, batch: Sequence[Append]) -> list[int | None]:
        """Append the batch in one transaction; return each update's offset once committed.

        A fenced append (``fence`` not None) is refused, ``FENCED`` (None) in its place, unless
        the room's row exists and carries that fence; every append of that room in the batch
        goes with it, while the other rooms' appends commit. A batch names one fence per room
        (the node fences all of a room's appends with the lease it holds, never mixing fenced
        and unfenced ones; given several, the largest counts, and a fenced one beats None).
        """
        if not batch:
            return []
        args = (
            [item.room for item in batch],
            [item.update for item in batch],
            [item.author.subject if item.author else None for item in batch],
            [item.author.role if item.author else None for item in batch],
            [orjson.dumps(item.fields).decode() if item.fields else None for item in batch],
            [item.fence for item in batch],
            [item.author.via if item.author else None for item in batch],
        )
        rows = await self._run("append", lambda pool: pool.fetch(self._sql.append, *args))
        return [row["offset"] for row in rows]

    async def compact(
        self, room: RoomId, snapshot: bytes, through: int, *, retention: Retention | None = None
    ) -> None:
        """Record ``snapshot`` as covering offsets up to ``through`` and delete the log rows
        no state needs any more (``Store.compact``), in one transaction.

        Does nothing when the stored snapshot already covers ``through``. Raises InvalidState if
        ``through`` is beyond the room's last offset (the snapshot would hide later updates).
        """

        async def transaction(pool: Any) -> Any:
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    self._sql.compact, room, snapshot, through, retention is None
                )
                if retention is None:
                    await conn.execute(self._history.drop_checkpoints, room)
                    return row
                history = self._history
                await conn.execute(
                    history.checkpoint, room, snapshot, through, retention.checkpoint_seconds
                )
                base = await conn.fetchval(history.retained_base, room, retention.seconds)
                if base is not None:
                    await conn.execute(history.drop_before_base, room, base)
                return row

        row = await self._run("compact", transaction)
        last_offset = row["last_offset"] if row is not None else None
        if last_offset is None or last_offset < through:
            raise InvalidState(
                f"snapshot of room {room} claims offsets through {through},"
                f" but the last offset appended is {last_offset}"
            )

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        """The room's newest ``limit`` audit entries, oldest first (none when ``limit < 1``)."""
        if limit < 1:
            return []
        rows = await self._run("audit", lambda pool: pool.fetch(self._sql.audit, room, limit))
        return [
            AuditEntry(
                row["offset"],
                row["committed_at"].timestamp(),
                row["subject"],
                row["role"],
                tuple(row["fields"]),
                row["via"],
            )
            for row in rows
        ]

    # -- Versions (gateway/adapters/postgres_history.py) ----------------------------------------

    async def load_at(
        self, room: RoomId, offset: int, through: int | None = None
    ) -> History | None:
        """See ``Versions.load_at``; one statement (one snapshot of the tables)."""
        last = min(offset if through is None else through, MAX_OFFSET)
        offset = min(offset, MAX_OFFSET)
        row = await self._run(
            "load_at", lambda pool: pool.fetchrow(self._history.load_at, room, offset, last)
        )
        if offset < row["reset_offset"]:
            return None
        base = row["base"] if row["base"] is not None else row["reset_offset"]
        if min(offset, row["last"]) > base and row["first"] != base + 1:
            return None  # compaction dropped log rows this state needs
        snapshot = bytes(row["snapshot"]) if row["snapshot"] is not None else None
        updates = [
            (o, bytes(d)) for o, d in zip(row["offsets"], row["updates"], strict=True) if o > base
        ]
        return History(room, snapshot, base, updates, row["epoch"])

    async def audit_range(
        self,
        room: RoomId,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        sql = self._history.audit_descending if newest_first else self._history.audit_ascending
        top = MAX_OFFSET if before is None else min(before, MAX_OFFSET)
        rows = await self._run(
            "audit_range", lambda pool: pool.fetch(sql, room, min(after, MAX_OFFSET), top, limit)
        )
        return [_audit_entry(row) for row in rows]

    async def offset_at(self, room: RoomId, at: float) -> int:
        offset: int = await self._run(
            "offset_at", lambda pool: pool.fetchval(self._history.offset_at, room, at)
        )
        return offset

    async def rooms_changed_since(self, at: float) -> set[RoomId]:
        rows = await self._run(
            "rooms_changed_since", lambda pool: pool.fetch(self._history.rooms_changed_since, at)
        )
        return {RoomId(row["room"]) for row in rows}

    # -- Webhooks and Cursors -------------------------------------------------------------------

    async def register(self, endpoint: WebhookEndpoint) -> None:
        args = (endpoint.id, endpoint.url, endpoint.secret, endpoint.created_at or None)
        await self._run("register", lambda pool: pool.execute(self._history.register, *args))

    async def endpoints(self) -> list[WebhookEndpoint]:
        rows = await self._run("endpoints", lambda pool: pool.fetch(self._history.endpoints))
        return [
            WebhookEndpoint(r["id"], r["url"], r["secret"], r["created_at"], r["dead_since"])
            for r in rows
        ]

    async def remove(self, endpoint_id: str) -> bool:
        gone = await self._run(
            "remove", lambda pool: pool.fetchval(self._history.remove, endpoint_id)
        )
        return gone is not None

    async def claim(self, endpoint_id: str, node: NodeId, ttl: float) -> bool:
        taken = await self._run(
            "claim", lambda pool: pool.fetchval(self._history.claim, endpoint_id, node, ttl)
        )
        return taken is not None

    async def mark_dead(self, endpoint_id: str) -> None:
        await self._run(
            "mark_dead", lambda pool: pool.execute(self._history.mark_dead, endpoint_id)
        )

    async def cursors(self, endpoint_id: str) -> dict[RoomId, int]:
        rows = await self._run(
            "cursors", lambda pool: pool.fetch(self._history.cursors, endpoint_id)
        )
        return {RoomId(row["room"]): row["offset"] for row in rows}

    async def advance(self, endpoint_id: str, room: RoomId, offset: int) -> None:
        await self._run(
            "advance",
            lambda pool: pool.execute(self._history.advance, endpoint_id, room, offset),
        )

    # -- Leases ---------------------------------------------------------------------------------

    async def acquire(self, room: RoomId, node: NodeId, ttl: float) -> Lease:
        """Take the room's lease (one statement) if it is free, expired or ``node``'s own.

        When the upsert waited for a concurrent acquire that won, the answer about the holder
        comes from the statement's snapshot, taken before that acquire committed: then it may
        name nobody (``holder`` None) or the previous holder, with an older ``fence``. It never
        says two callers acquired it.
        """
        row = await self._run(
            "acquire", lambda pool: pool.fetchrow(self._sql.acquire, room, node, ttl)
        )
        if row is None:  # the room's row appeared after this statement's snapshot
            return Lease(room, None, 0)
        holder = NodeId(row["owner"]) if row["owner"] is not None else None
        return Lease(room, holder, row["fence"], acquired=row["acquired"])

    async def renew(
        self, leases: Sequence[tuple[RoomId, int]], node: NodeId, ttl: float
    ) -> set[RoomId]:
        """Extend ``node``'s leases that still carry these fences (one statement)."""
        if not leases:
            return set()
        rooms, fences = [room for room, _ in leases], [fence for _, fence in leases]
        rows = await self._run(
            "renew", lambda pool: pool.fetch(self._sql.renew, rooms, fences, node, ttl)
        )
        return {RoomId(row["room"]) for row in rows}

    async def release(self, room: RoomId, node: NodeId, fence: int) -> None:
        await self._run("release", lambda pool: pool.execute(self._sql.release, room, node, fence))

    async def holder(self, room: RoomId) -> Lease:
        row = await self._run("holder", lambda pool: pool.fetchrow(self._sql.holder, room))
        if row is None:
            return Lease(room, None, 0)
        holder = NodeId(row["owner"]) if row["owner"] is not None else None
        return Lease(room, holder, row["fence"])

    # -- wedding dates (WeddingDates) -----------------------------------------------------------

    async def set_wedding_date(self, room: RoomId, day: date | None) -> None:
        """Record (or, None, forget) the wedding's date in the index."""
        if day is None:
            await self._run("set_wedding_date", lambda p: p.execute(self._sql.forget_date, room))
        else:
            await self._run("set_wedding_date", lambda p: p.execute(self._sql.set_date, room, day))

    async def weddings_between(
        self, first: date, last: date, *, limit: int, free_or_held_by: NodeId | None = None
    ) -> list[tuple[RoomId, date]]:
        """Weddings dated ``first``..``last``, soonest first (one indexed range scan)."""
        rows = await self._run(
            "weddings_between",
            lambda pool: pool.fetch(
                self._sql.weddings_between, first, last, limit, free_or_held_by
            ),
        )
        return [(RoomId(row["room"]), row["wedding_date"]) for row in rows]

    # -- helpers --------------------------------------------------------------------------------

    async def _load_since(self, what: str, room: RoomId, offset: int) -> History:
        row = await self._run(what, lambda pool: pool.fetchrow(self._sql.load_since, room, offset))
        snapshot = bytes(row["snapshot"]) if row["snapshot"] is not None else None
        updates = [(o, bytes(d)) for o, d in zip(row["offsets"], row["updates"], strict=True)]
        return History(room, snapshot, row["snapshot_offset"], updates, row["epoch"])

    async def _run(self, what: str, query: Callable[[Any], Awaitable[T]]) -> T:
        if self._pool is None:
            raise BackendUnavailable(f"Postgres store is closed ({what} refused)")
        try:
            return await query(self._pool)
        except _FAILURES as exc:
            raise BackendUnavailable(f"Postgres {what} failed: {exc!r}") from exc


class _Statements:
    """The store's SQL for one schema, built once."""

    def __init__(self, schema: str) -> None:
        # $1 text[] rooms, $2 bytea[] updates, $3 text[] subjects, $4 text[] roles, $5 text[] fields
        # (each a JSON array, or NULL for none), $6 bigint[] fences (NULL: unfenced), $7 text[] vias
        # (Author.via), in batch order. Rooms are locked in sorted order (no deadlock between two
        # batches naming the same rooms); offsets follow batch order. The audit rows go in with the
        # updates: same statement, same transaction. A fenced room is bumped only while its row
        # carries the fence, judged on the row's newest version once locked (the DO UPDATE's WHERE);
        # a fenced room without a row is not inserted (its lease was never taken). A room that is
        # not bumped numbers nothing: its appends answer NULL (FENCED), the rest commit.
        self.append = f"""
            WITH input AS (
                SELECT room, data, subject, role, fields, fence, via, ord
                FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                            $6::bigint[], $7::text[])
                    WITH ORDINALITY AS t(room, data, subject, role, fields, fence, via, ord)
            ),
            counts AS (
                SELECT room, count(*) AS n, max(fence) AS fence
                FROM input GROUP BY room ORDER BY room
            ),
            bumped AS (
                INSERT INTO {schema}.rooms AS r (room, last_offset, fence)
                SELECT room, n, coalesce(fence, 0) FROM counts c
                WHERE c.fence IS NULL
                   OR EXISTS (SELECT FROM {schema}.rooms x WHERE x.room = c.room)
                ORDER BY room
                ON CONFLICT (room) DO UPDATE SET last_offset = r.last_offset + excluded.last_offset
                    WHERE r.fence = excluded.fence
                       OR (SELECT c.fence FROM counts c WHERE c.room = r.room) IS NULL
                RETURNING r.room, r.last_offset
            ),
            numbered AS (
                SELECT i.ord, i.room, i.data, i.subject, i.role, i.fields, i.via,
                       b.last_offset - c.n
                           + row_number() OVER (PARTITION BY i.room ORDER BY i.ord) AS "offset"
                FROM input i JOIN counts c USING (room) JOIN bumped b USING (room)
            ),
            inserted AS (
                INSERT INTO {schema}.updates (room, "offset", data)
                SELECT room, "offset", data FROM numbered
            ),
            audited AS (
                INSERT INTO {schema}.audit (room, "offset", subject, role, fields, via)
                SELECT room, "offset", subject, role,
                       ARRAY(SELECT jsonb_array_elements_text(fields::jsonb)), via
                FROM numbered
            )
            SELECT n."offset" FROM input i LEFT JOIN numbered n USING (ord) ORDER BY i.ord
        """
        # $1 room, $2 snapshot, $3 through, $4 delete the covered rows (no retention: with one,
        # PostgresStore.compact deletes what the window no longer needs). The snapshot replaces
        # an older one only; rows are deleted only up to the offset of the snapshot actually
        # stored by this statement.
        self.compact = f"""
            WITH room_row AS (
                SELECT last_offset FROM {schema}.rooms WHERE room = $1
            ),
            saved AS (
                INSERT INTO {schema}.snapshots AS s (room, "offset", data)
                SELECT $1, $3, $2 WHERE $3 <= (SELECT last_offset FROM room_row)
                ON CONFLICT (room) DO UPDATE
                    SET "offset" = excluded."offset", data = excluded.data, created_at = now()
                    WHERE s."offset" < excluded."offset"
                RETURNING s."offset"
            ),
            deleted AS (
                DELETE FROM {schema}.updates
                WHERE $4 AND room = $1 AND "offset" <= (SELECT "offset" FROM saved)
            )
            SELECT (SELECT last_offset FROM room_row) AS last_offset
        """
        # $1 room, $2 limit: the newest rows, returned oldest first.
        self.audit = f"""
            SELECT "offset", committed_at, subject, role, fields, via FROM (
                SELECT * FROM {schema}.audit WHERE room = $1 ORDER BY "offset" DESC LIMIT $2
            ) newest
            ORDER BY "offset"
        """
        # $1 room, $2 offset: always one row. The snapshot comes only when it covers offsets after
        # $2 (then the updates follow it); otherwise the updates follow $2 (at least 0).
        self.load_since = f"""
            WITH head AS (
                SELECT CASE WHEN s."offset" > $2::bigint THEN s.data END AS snapshot,
                       CASE WHEN s."offset" > $2::bigint THEN s."offset"
                            -- the log starts at or before the snapshot (rows the history
                            -- window keeps are older): nothing to count
                            WHEN s."offset" IS NOT NULL THEN greatest($2::bigint, 0)
                            -- the offset the log starts after (a reset's): the rows left
                            -- are exactly the last ones, offsets never repeat
                            ELSE greatest($2::bigint, 0, coalesce(
                                (SELECT r.last_offset FROM {schema}.rooms r WHERE r.room = $1), 0
                            ) - (SELECT count(*) FROM {schema}.updates WHERE room = $1)) END
                       AS "offset"
                FROM (SELECT) AS one LEFT JOIN {schema}.snapshots s ON s.room = $1
            )
            SELECT h.snapshot, h."offset" AS snapshot_offset, u.offsets, u.updates,
                   coalesce((SELECT epoch FROM {schema}.rooms WHERE room = $1), 1) AS epoch
            FROM head h, LATERAL (
                SELECT coalesce(array_agg("offset" ORDER BY "offset"), '{{}}') AS offsets,
                       coalesce(array_agg(data ORDER BY "offset"), '{{}}') AS updates
                FROM {schema}.updates WHERE room = $1 AND "offset" > h."offset"
            ) u
        """
        # $1 room. Locks the room's row (creating it in epoch 2 if the room never had one), so
        # no append to the room commits between this and drop_history.
        self.bump_epoch = f"""
            INSERT INTO {schema}.rooms AS r (room, epoch) VALUES ($1, 2)
            ON CONFLICT (room) DO UPDATE SET epoch = r.epoch + 1, reset_offset = r.last_offset
            RETURNING r.epoch
        """
        # $1 room. Audit rows stay: they are keyed by offsets, which never repeat.
        self.drop_history = f"""
            WITH snapshot AS (DELETE FROM {schema}.snapshots WHERE room = $1),
                checkpoints AS (DELETE FROM {schema}.checkpoints WHERE room = $1)
            DELETE FROM {schema}.updates WHERE room = $1
        """
        # $1 room, $2 node, $3 ttl (seconds). The DO UPDATE locks the row even when its WHERE
        # refuses, so an acquire waits for appends in flight on the room. Taken: one row from
        # `taken`. Refused: the row as this statement's snapshot saw it (none if it had no row).
        self.acquire = f"""
            WITH taken AS (
                INSERT INTO {schema}.rooms AS r (room, owner, fence, lease_expires)
                VALUES ($1, $2, 1, now() + make_interval(secs => $3::float8))
                ON CONFLICT (room) DO UPDATE
                    SET owner = excluded.owner, fence = r.fence + 1,
                        lease_expires = excluded.lease_expires
                    WHERE r.owner IS NULL OR r.lease_expires < now() OR r.owner = excluded.owner
                RETURNING r.fence
            )
            SELECT true AS acquired, $2::text AS owner, fence FROM taken
            UNION ALL
            SELECT false,
                   CASE WHEN r.lease_expires >= now() AND r.owner <> $2 THEN r.owner END,
                   r.fence
            FROM {schema}.rooms r WHERE r.room = $1 AND NOT EXISTS (SELECT FROM taken)
        """
        # $1 text[] rooms, $2 bigint[] fences, $3 node, $4 ttl (seconds). Rows are locked in
        # sorted order, as append locks them; FOR UPDATE re-checks owner and fence on the newest
        # version, so a lease taken over meanwhile is not renewed. An expired lease nobody took
        # (its fence did not move) is renewed.
        self.renew = f"""
            WITH held AS (
                SELECT r.room FROM {schema}.rooms r
                JOIN unnest($1::text[], $2::bigint[]) AS l(room, fence)
                    ON l.room = r.room AND l.fence = r.fence
                WHERE r.owner = $3
                ORDER BY r.room
                FOR UPDATE OF r
            )
            UPDATE {schema}.rooms r SET lease_expires = now() + make_interval(secs => $4::float8)
            FROM (SELECT DISTINCT room FROM held) h WHERE r.room = h.room
            RETURNING r.room
        """
        # $1 room, $2 node, $3 fence. The fence stays: the next acquire bumps it.
        self.release = f"""
            UPDATE {schema}.rooms SET owner = NULL, lease_expires = NULL
            WHERE room = $1 AND owner = $2 AND fence = $3
        """
        # $1 room, $2 date.
        self.set_date = f"""
            INSERT INTO {schema}.wedding_dates (room, wedding_date) VALUES ($1, $2)
            ON CONFLICT (room) DO UPDATE SET wedding_date = excluded.wedding_date
            WHERE {schema}.wedding_dates.wedding_date <> excluded.wedding_date
        """
        self.forget_date = f"DELETE FROM {schema}.wedding_dates WHERE room = $1"
        # $1 first, $2 last, $3 limit, $4 node (NULL: any lease). A lease is free when nobody
        # holds it or it expired.
        self.weddings_between = f"""
            SELECT d.room, d.wedding_date FROM {schema}.wedding_dates d
            LEFT JOIN {schema}.rooms r ON r.room = d.room
            WHERE d.wedding_date BETWEEN $1 AND $2
              AND ($4::text IS NULL OR r.owner IS NULL OR r.lease_expires < now()
                   OR r.owner = $4::text)
            ORDER BY d.wedding_date, d.room
            LIMIT $3
        """
        # $1 room. An expired lease has no holder.
        self.holder = f"""
            SELECT CASE WHEN lease_expires >= now() THEN owner END AS owner, fence
            FROM {schema}.rooms WHERE room = $1
        """


def _audit_entry(row: Any) -> AuditEntry:
    return AuditEntry(
        row["offset"],
        row["committed_at"].timestamp(),
        row["subject"],
        row["role"],
        tuple(row["fields"]),
        row["via"],
    )
