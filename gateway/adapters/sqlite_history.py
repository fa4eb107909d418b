"""The SQLite store's history, checkpoints and webhook tables (``Versions``, ``Webhooks``,
``Cursors`` of gateway/ports.py). Each function runs on the store's thread, given its connection.

Tables (created on open, next to gateway/adapters/sqlite_store.py's):

- ``checkpoints``: snapshots kept for the history window, ``(room, offset)`` with the time
  they were taken (``at``, Unix seconds). Compaction with a ``Retention`` writes one (thinned to
  one per ``checkpoint_seconds``) and deletes only the log rows and checkpoints older than the
  newest checkpoint at or before the window's start.
- ``webhooks``: registered endpoints (id, url, secret, created_at, dead_since, and the delivery
  claim: claimed_by, claim_expires).
- ``webhook_cursors``: ``(endpoint, room) → offset``, the last offset delivered.
"""

from __future__ import annotations

import sqlite3
import time

import orjson

from gateway.ports import AuditEntry, History, Retention, WebhookEndpoint
from gateway.types import NodeId, RoomId

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    room TEXT NOT NULL,
    offset INTEGER NOT NULL,
    at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    dead_since REAL,
    claimed_by TEXT,
    claim_expires REAL
);
CREATE TABLE IF NOT EXISTS webhook_cursors (
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (endpoint, room)
) WITHOUT ROWID;
"""

MAX_OFFSET = 2**63 - 1


def migrate(db: sqlite3.Connection) -> None:
    """Create the tables; add ``audit.via`` to a data directory from before it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
    if "via" not in columns:
        db.execute("ALTER TABLE audit ADD COLUMN via TEXT")
    db.executescript(SCHEMA)


# -- compaction ----------------------------------------------------------------------------------


def compact_retained(
    db: sqlite3.Connection, room: str, snapshot: bytes, through: int, retention: Retention
) -> None:
    """Inside the compaction's transaction, after the snapshot is stored: keep it as a
    checkpoint (thinned), then delete what no state of the window needs."""
    now = time.time()
    (newest,) = db.execute("SELECT max(at) FROM checkpoints WHERE room = ?", (room,)).fetchone()
    if newest is None or newest <= now - retention.checkpoint_seconds:
        db.execute(
            "INSERT OR IGNORE INTO checkpoints (room, offset, at, data) VALUES (?, ?, ?, ?)",
            (room, through, now, snapshot),
        )
    start = now - retention.seconds
    (at_start,) = db.execute(
        "SELECT coalesce(max(offset), 0) FROM audit WHERE room = ? AND at < ?", (room, start)
    ).fetchone()
    (base,) = db.execute(
        "SELECT max(offset) FROM checkpoints WHERE room = ? AND offset <= ?", (room, at_start)
    ).fetchone()
    if base is None:
        return  # no checkpoint before the window's start: every row is still needed
    db.execute("DELETE FROM updates WHERE room = ? AND offset <= ?", (room, base))
    db.execute("DELETE FROM checkpoints WHERE room = ? AND offset < ?", (room, base))


# -- Versions ------------------------------------------------------------------------------------


def load_at(db: sqlite3.Connection, room: str, offset: int, through: int) -> History | None:
    """See ``Versions.load_at``; runs inside a read transaction."""
    epoch_row = db.execute(
        "SELECT epoch, reset_offset FROM rooms WHERE room = ?", (room,)
    ).fetchone()
    epoch, reset_offset = epoch_row if epoch_row else (1, 0)
    if offset < reset_offset:
        return None
    candidates = db.execute(
        "SELECT offset, data FROM checkpoints WHERE room = ? AND offset <= ?"
        " UNION ALL SELECT offset, data FROM snapshots WHERE room = ? AND offset <= ?"
        " ORDER BY offset DESC LIMIT 1",
        (room, offset, room, offset),
    ).fetchone()
    base, snapshot = (candidates[0], candidates[1]) if candidates else (reset_offset, None)
    (first,) = db.execute(
        "SELECT min(offset) FROM updates WHERE room = ? AND offset > ?", (room, base)
    ).fetchone()
    (last,) = db.execute(
        "SELECT max(offset) FROM (SELECT max(offset) AS offset FROM updates WHERE room = ?"
        " UNION ALL SELECT offset FROM snapshots WHERE room = ?)",
        (room, room),
    ).fetchone()
    needed = min(offset, last or 0)  # the last offset of the state asked for that exists
    if needed > base and first != base + 1:
        return None  # compaction dropped log rows this state needs
    updates = db.execute(
        "SELECT offset, data FROM updates WHERE room = ? AND offset > ? AND offset <= ?"
        " ORDER BY offset",
        (room, base, min(through, MAX_OFFSET)),
    ).fetchall()
    return History(RoomId(room), snapshot, base, [(o, d) for o, d in updates], epoch)


def audit_range(
    db: sqlite3.Connection, room: str, after: int, before: int, limit: int, newest_first: bool
) -> list[AuditEntry]:
    order = "DESC" if newest_first else "ASC"
    rows = db.execute(
        "SELECT offset, at, subject, role, fields, via FROM audit"
        f" WHERE room = ? AND offset > ? AND offset < ? ORDER BY offset {order} LIMIT ?",
        (room, after, min(before, MAX_OFFSET), limit),
    ).fetchall()
    return [
        AuditEntry(offset, at, subject, role, tuple(orjson.loads(fields)), via)
        for offset, at, subject, role, fields, via in rows
    ]


def offset_at(db: sqlite3.Connection, room: str, at: float) -> int:
    (offset,) = db.execute(
        "SELECT coalesce(max(offset), 0) FROM audit WHERE room = ? AND at <= ?", (room, at)
    ).fetchone()
    return int(offset)


def rooms_changed_since(db: sqlite3.Connection, at: float) -> set[RoomId]:
    rows = db.execute("SELECT DISTINCT room FROM audit WHERE at >= ?", (at,)).fetchall()
    return {RoomId(room) for (room,) in rows}


# -- Webhooks and Cursors -------------------------------------------------------------------------


def register(db: sqlite3.Connection, endpoint: WebhookEndpoint) -> None:
    db.execute(
        "INSERT INTO webhooks (id, url, secret, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret,"
        " dead_since = NULL",
        (endpoint.id, endpoint.url, endpoint.secret, endpoint.created_at or time.time()),
    )


def endpoints(db: sqlite3.Connection) -> list[WebhookEndpoint]:
    rows = db.execute(
        "SELECT id, url, secret, created_at, dead_since FROM webhooks ORDER BY id"
    ).fetchall()
    return [WebhookEndpoint(*row) for row in rows]


def remove(db: sqlite3.Connection, endpoint_id: str) -> bool:
    db.execute("DELETE FROM webhook_cursors WHERE endpoint = ?", (endpoint_id,))
    return db.execute("DELETE FROM webhooks WHERE id = ?", (endpoint_id,)).rowcount > 0


def claim(db: sqlite3.Connection, endpoint_id: str, node: NodeId, ttl: float) -> bool:
    now = time.time()
    taken = db.execute(
        "UPDATE webhooks SET claimed_by = ?, claim_expires = ? WHERE id = ?"
        " AND (claimed_by IS NULL OR claimed_by = ? OR claim_expires < ?)",
        (node, now + ttl, endpoint_id, node, now),
    )
    return taken.rowcount > 0


def mark_dead(db: sqlite3.Connection, endpoint_id: str) -> None:
    db.execute(
        "UPDATE webhooks SET dead_since = ? WHERE id = ? AND dead_since IS NULL",
        (time.time(), endpoint_id),
    )


def cursors(db: sqlite3.Connection, endpoint_id: str) -> dict[RoomId, int]:
    rows = db.execute(
        "SELECT room, offset FROM webhook_cursors WHERE endpoint = ?", (endpoint_id,)
    ).fetchall()
    return {RoomId(room): offset for room, offset in rows}


def advance(db: sqlite3.Connection, endpoint_id: str, room: str, offset: int) -> None:
    db.execute(
        "INSERT INTO webhook_cursors (endpoint, room, offset) VALUES (?, ?, ?)"
        " ON CONFLICT (endpoint, room) DO UPDATE SET offset = max(offset, excluded.offset)",
        (endpoint_id, room, offset),
    )
