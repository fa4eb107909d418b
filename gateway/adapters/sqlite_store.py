"""SQLite Store: the embedded default. One file in the data directory, WAL, synchronous=FULL.

All SQLite work runs on one dedicated thread, so the connection is never shared between threads
and writes are serialised in submission order.

Tables: ``updates`` (the log, deleted up to a snapshot by ``compact``), ``snapshots`` (the newest
per room), ``audit`` (who wrote each appended update, and which fields it changed; one row per
update, written in the update's transaction and never deleted by compaction or reset) and
``rooms`` (a room's epoch and its last offset when it was last reset; written by ``reset`` only);
the history's checkpoints and the webhook tables are gateway/adapters/sqlite_history.py's.

A room's next offset is one more than the largest of its last log row, its snapshot's offset and
its ``rooms.reset_offset``: offsets never repeat, across compaction and reset alike.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

from gateway.adapters import sqlite_history
from gateway.errors import BackendUnavailable
from gateway.ports import Append, AuditEntry, History, Retention, WebhookEndpoint
from gateway.types import NodeId, RoomId

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # the awaiting task was cancelled
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    room TEXT NOT NULL,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    room TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    room TEXT NOT NULL,
    offset INTEGER NOT NULL,
    at REAL NOT NULL,
    subject TEXT,
    role TEXT,
    fields TEXT NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    reset_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wedding_dates (
    room TEXT PRIMARY KEY,
    wedding_date TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS wedding_dates_by_date ON wedding_dates (wedding_date);
"""
# ``wedding_dates.wedding_date`` is ISO 8601 text (it sorts as dates do). ``audit.at`` is Unix
# seconds at commit; ``audit.fields`` a JSON array of strings. Tables are
# created on open, so a data directory from before the audit trail (or epochs) keeps working: a
# room without a ``rooms`` row is in epoch 1 and was never reset.

_NO_FIELDS = "[]"
MAX_OFFSET = 2**63 - 1  # SQLite INTEGER: a larger one is beyond any room's last offset anyway


class SqliteStore:
    """A Store in one SQLite file. An append returns after the WAL is synced to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None

    @classmethod
    def open(cls, data_dir: Path) -> Self:
        """A store in ``data_dir/gateway.sqlite3`` (created on enter)."""
        return cls(data_dir / "gateway.sqlite3")

    async def __aenter__(self) -> Self:
        self._thread = threading.Thread(target=self._serve_jobs, name="sqlite-store", daemon=True)
        self._thread.start()
        try:
            await self._run(self._connect)
        except BaseException:
            await self.aclose()  # stop the thread: no __aexit__ follows a failed __aenter__
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def load(self, room: RoomId) -> History:
        return await self._run(self._load_since, room, -1)  # -1: before any snapshot

    async def load_since(self, room: RoomId, offset: int) -> History:
        return await self._run(self._load_since, room, min(offset, MAX_OFFSET))

    async def reset(self, room: RoomId) -> int:
        return await self._run(self._reset, room)

    async def append(self, batch: Sequence[Append]) -> list[int | None]:
        """Every append's offset. Never fenced: the embedded node is the only one, and owns
        every room (``Append.fence`` is ignored)."""
        offsets: list[int | None] = list(await self._run(self._append, batch))
        return offsets

    async def compact(
        self, room: RoomId, snapshot: bytes, through: int, *, retention: Retention | None = None
    ) -> None:
        await self._run(self._compact, room, snapshot, through, retention)

    # -- Versions (gateway/adapters/sqlite_history.py) ------------------------------------------

    async def load_at(
        self, room: RoomId, offset: int, through: int | None = None
    ) -> History | None:
        last = offset if through is None else through
        return await self._run(self._read, sqlite_history.load_at, room, offset, last)

    async def audit_range(
        self,
        room: RoomId,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        top = MAX_OFFSET if before is None else before
        return await self._run(
            self._read, sqlite_history.audit_range, room, after, top, limit, newest_first
        )

    async def offset_at(self, room: RoomId, at: float) -> int:
        return await self._run(self._read, sqlite_history.offset_at, room, at)

    async def rooms_changed_since(self, at: float) -> set[RoomId]:
        return await self._run(self._read, sqlite_history.rooms_changed_since, at)

    # -- Webhooks and Cursors -------------------------------------------------------------------

    async def register(self, endpoint: WebhookEndpoint) -> None:
        await self._run(self._write, sqlite_history.register, endpoint)

    async def endpoints(self) -> list[WebhookEndpoint]:
        return await self._run(self._read, sqlite_history.endpoints)

    async def remove(self, endpoint_id: str) -> bool:
        return await self._run(self._write, sqlite_history.remove, endpoint_id)

    async def claim(self, endpoint_id: str, node: NodeId, ttl: float) -> bool:
        return await self._run(self._write, sqlite_history.claim, endpoint_id, node, ttl)

    async def mark_dead(self, endpoint_id: str) -> None:
        await self._run(self._write, sqlite_history.mark_dead, endpoint_id)

    async def cursors(self, endpoint_id: str) -> dict[RoomId, int]:
        return await self._run(self._read, sqlite_history.cursors, endpoint_id)

    async def advance(self, endpoint_id: str, room: RoomId, offset: int) -> None:
        await self._run(self._write, sqlite_history.advance, endpoint_id, room, offset)

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        """The room's newest ``limit`` audit entries, oldest first (none when ``limit < 1``)."""
        if limit < 1:
            return []
        return await self._run(self._audit, room, limit)

    async def set_wedding_date(self, room: RoomId, day: date | None) -> None:
        """Record (or, None, forget) the wedding's date in the index (``WeddingDates``)."""
        await self._run(self._write, _set_wedding_date, room, day)

    async def weddings_between(
        self, first: date, last: date, *, limit: int, free_or_held_by: NodeId | None = None
    ) -> list[tuple[RoomId, date]]:
        """Weddings dated ``first``..``last``, soonest first. No leases here: the embedded node
        owns every room, so ``free_or_held_by`` changes nothing."""
        rows = await self._run(
            self._read,
            lambda db: db.execute(
                "SELECT room, wedding_date FROM wedding_dates WHERE wedding_date BETWEEN ? AND ?"
                " ORDER BY wedding_date, room LIMIT ?",
                (first.isoformat(), last.isoformat(), limit),
            ).fetchall(),
        )
        return [(RoomId(room), date.fromisoformat(day)) for room, day in rows]

    # -- on the store thread ------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread (one thread: lighter than an executor)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        try:
            return await future
        except (sqlite3.Error, OSError) as exc:  # OSError: e.g. the data dir cannot be made
            raise BackendUnavailable(f"SQLite store {self.path} failed: {exc}") from exc

    def _serve_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, never lost here
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # DESIGN.md §6: an ack means synced to disk
        db.executescript(SCHEMA)
        sqlite_history.migrate(db)
        self._db = db

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self._transaction("BEGIN") as db:
            return fn(db, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        with self._transaction() as db:
            return fn(db, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BackendUnavailable(f"SQLite store {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """Commit on exit, roll back on error. ``BEGIN`` (deferred) for a read-only one: its
        statements share one snapshot even when another process writes the file meanwhile."""
        db = self.db
        db.execute(begin)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _load_since(self, room: str, offset: int) -> History:
        with self._transaction("BEGIN") as db:
            epoch = db.execute(
                "SELECT epoch, reset_offset FROM rooms WHERE room = ?", (room,)
            ).fetchone()
            row = db.execute(
                "SELECT offset, data FROM snapshots WHERE room = ?", (room,)
            ).fetchone()
            if row is not None and row[0] > offset:  # compaction covered updates after offset
                snapshot, since = row[1], row[0]
            else:  # the log starts after the snapshot's offset, or the reset's
                base = max(row[0] if row else 0, epoch[1] if epoch else 0)
                snapshot, since = None, max(offset, base, 0)
            updates = db.execute(
                "SELECT offset, data FROM updates WHERE room = ? AND offset > ? ORDER BY offset",
                (room, since),
            ).fetchall()
        return History(
            RoomId(room), snapshot, since, [(o, d) for o, d in updates], epoch[0] if epoch else 1
        )

    def _last_offsets(self, rooms: set[str]) -> dict[str, int]:
        """Each room's last offset, read inside the write transaction: another store on the
        same file (another process on the same data directory) may have appended since.

        One query per 500 rooms, not one per room: every call into sqlite3 takes the GIL back
        from the event loop's thread, and many small ones make the two threads convoy.
        """
        last = dict.fromkeys(rooms, 0)
        names = list(rooms)
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT room, max(offset) FROM updates WHERE room IN ({marks}) GROUP BY room"
                f" UNION ALL SELECT room, offset FROM snapshots WHERE room IN ({marks})"
                f" UNION ALL SELECT room, reset_offset FROM rooms WHERE room IN ({marks})",
                chunk * 3,
            ).fetchall()
            for room, offset in rows:
                if offset > last[room]:
                    last[room] = offset
        return last

    def _append(self, batch: Sequence[Append]) -> list[int]:
        with self._transaction() as db:
            last = self._last_offsets({item.room for item in batch})
            offsets = []
            for item in batch:
                last[item.room] += 1
                offsets.append(last[item.room])
            db.executemany(
                "INSERT INTO updates (room, offset, data) VALUES (?, ?, ?)",
                [(item.room, o, item.update) for item, o in zip(batch, offsets, strict=True)],
            )
            db.executemany(
                "INSERT INTO audit (room, offset, at, subject, role, fields, via)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                _audit_rows(batch, offsets, time.time()),
            )
        return offsets

    def _audit(self, room: str, limit: int) -> list[AuditEntry]:
        rows = self.db.execute(
            "SELECT offset, at, subject, role, fields, via FROM ("
            " SELECT * FROM audit WHERE room = ? ORDER BY offset DESC LIMIT ?"
            ") ORDER BY offset",
            (room, limit),
        ).fetchall()
        return [
            AuditEntry(offset, at, subject, role, tuple(orjson.loads(fields)), via)
            for offset, at, subject, role, fields, via in rows
        ]

    def _compact(
        self, room: str, snapshot: bytes, through: int, retention: Retention | None
    ) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT offset FROM snapshots WHERE room = ?", (room,)).fetchone()
            if row is not None and row[0] >= through:
                return  # a newer snapshot already covers this one
            db.execute(
                "INSERT INTO snapshots (room, offset, data) VALUES (?, ?, ?) "
                "ON CONFLICT (room) DO UPDATE SET offset = excluded.offset, data = excluded.data",
                (room, through, snapshot),
            )
            if retention is not None:
                sqlite_history.compact_retained(db, room, snapshot, through, retention)
            else:
                db.execute("DELETE FROM updates WHERE room = ? AND offset <= ?", (room, through))
                db.execute("DELETE FROM checkpoints WHERE room = ?", (room,))

    def _reset(self, room: str) -> int:
        with self._transaction() as db:
            last = self._last_offsets({room})[room]  # before the rows that tell it go
            (epoch,) = db.execute(
                "INSERT INTO rooms (room, epoch, reset_offset) VALUES (?, 2, ?) ON CONFLICT (room)"
                " DO UPDATE SET epoch = epoch + 1, reset_offset = excluded.reset_offset"
                " RETURNING epoch",
                (room, last),
            ).fetchone()
            db.execute("DELETE FROM snapshots WHERE room = ?", (room,))
            db.execute("DELETE FROM updates WHERE room = ?", (room,))
            db.execute("DELETE FROM checkpoints WHERE room = ?", (room,))
        return int(epoch)


def _set_wedding_date(db: sqlite3.Connection, room: str, day: date | None) -> None:
    if day is None:
        db.execute("DELETE FROM wedding_dates WHERE room = ?", (room,))
    else:
        db.execute(
            "INSERT INTO wedding_dates (room, wedding_date) VALUES (?, ?)"
            " ON CONFLICT (room) DO UPDATE SET wedding_date = excluded.wedding_date",
            (room, day.isoformat()),
        )


def _audit_rows(
    batch: Sequence[Append], offsets: list[int], at: float
) -> list[tuple[str, int, float, str | None, str | None, str, str | None]]:
    """One ``audit`` row per appended update: who wrote it (None: the gateway) and its fields."""
    return [
        (
            item.room,
            offset,
            at,
            item.author.subject if item.author else None,
            item.author.role if item.author else None,
            orjson.dumps(item.fields).decode() if item.fields else _NO_FIELDS,
            item.author.via if item.author else None,
        )
        for item, offset in zip(batch, offsets, strict=True)
    ]
