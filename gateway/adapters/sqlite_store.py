"""SQLite Store: the embedded default. One file in the data directory, WAL, synchronous=FULL.

All SQLite work runs on one dedicated thread, so the connection is never shared between threads
and writes are serialised in submission order.

Tables: ``updates`` (the log, deleted up to a snapshot by ``compact``), ``snapshots`` (the newest
per room) and ``audit`` (who wrote each appended update, and which fields it changed; one row per
update, written in the update's transaction and never deleted by compaction).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

from gateway.errors import BackendUnavailable
from gateway.ports import Append, AuditEntry, History
from gateway.types import RoomId

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
"""
# ``audit.at`` is Unix seconds at commit; ``audit.fields`` a JSON array of strings. The table is
# created on open, so a data directory from before the audit trail keeps working.

_NO_FIELDS = "[]"


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
        return await self._run(self._load, room)

    async def append(self, batch: Sequence[Append]) -> list[int]:
        return await self._run(self._append, batch)

    async def compact(self, room: RoomId, snapshot: bytes, through: int) -> None:
        await self._run(self._compact, room, snapshot, through)

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        """The room's newest ``limit`` audit entries, oldest first (none when ``limit < 1``)."""
        if limit < 1:
            return []
        return await self._run(self._audit, room, limit)

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
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BackendUnavailable(f"SQLite store {self.path} is closed")
        return self._db

    def _load(self, room: str) -> History:
        row = self.db.execute(
            "SELECT offset, data FROM snapshots WHERE room = ?", (room,)
        ).fetchone()
        snapshot, snapshot_offset = (row[1], row[0]) if row else (None, 0)
        updates = self.db.execute(
            "SELECT offset, data FROM updates WHERE room = ? AND offset > ? ORDER BY offset",
            (room, snapshot_offset),
        ).fetchall()
        return History(RoomId(room), snapshot, snapshot_offset, [(o, d) for o, d in updates])

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
                f" UNION ALL SELECT room, offset FROM snapshots WHERE room IN ({marks})",
                chunk + chunk,
            ).fetchall()
            for room, offset in rows:
                if offset > last[room]:
                    last[room] = offset
        return last

    def _append(self, batch: Sequence[Append]) -> list[int]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
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
                "INSERT INTO audit (room, offset, at, subject, role, fields)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                _audit_rows(batch, offsets, time.time()),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return offsets

    def _audit(self, room: str, limit: int) -> list[AuditEntry]:
        rows = self.db.execute(
            "SELECT offset, at, subject, role, fields FROM ("
            " SELECT * FROM audit WHERE room = ? ORDER BY offset DESC LIMIT ?"
            ") ORDER BY offset",
            (room, limit),
        ).fetchall()
        return [
            AuditEntry(offset, at, subject, role, tuple(orjson.loads(fields)))
            for offset, at, subject, role, fields in rows
        ]

    def _compact(self, room: str, snapshot: bytes, through: int) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT offset FROM snapshots WHERE room = ?", (room,)).fetchone()
            if row is not None and row[0] >= through:
                db.execute("ROLLBACK")  # a newer snapshot already covers this one
                return
            db.execute(
                "INSERT INTO snapshots (room, offset, data) VALUES (?, ?, ?) "
                "ON CONFLICT (room) DO UPDATE SET offset = excluded.offset, data = excluded.data",
                (room, through, snapshot),
            )
            db.execute("DELETE FROM updates WHERE room = ? AND offset <= ?", (room, through))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _audit_rows(
    batch: Sequence[Append], offsets: list[int], at: float
) -> list[tuple[str, int, float, str | None, str | None, str]]:
    """One ``audit`` row per appended update: who wrote it (None: the gateway) and its fields."""
    return [
        (
            item.room,
            offset,
            at,
            item.author.subject if item.author else None,
            item.author.role if item.author else None,
            orjson.dumps(item.fields).decode() if item.fields else _NO_FIELDS,
        )
        for item, offset in zip(batch, offsets, strict=True)
    ]
