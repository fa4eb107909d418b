"""The Postgres store's history, checkpoints and webhook tables (``Versions``, ``Webhooks``,
``Cursors`` of gateway/ports.py): migration 4 and the statements, for one schema.

Tables (migration ``0004_history_webhooks``):

- ``checkpoints``: snapshots kept for the history window, ``(room, "offset")`` with
  ``created_at``. Compaction with a ``Retention`` writes one (thinned to one per
  ``checkpoint_seconds``) and deletes only the log rows and checkpoints older than the newest
  checkpoint at or before the window's start (``now() - seconds``), in one transaction with the
  snapshot (``PostgresStore.compact``).
- ``webhooks``: registered endpoints with their delivery claim (``claimed_by``,
  ``claim_expires``: one node delivers to an endpoint at a time) and ``dead_since``.
- ``webhook_cursors``: ``(endpoint, room) → "offset"``, the last offset delivered.
- ``rooms.reset_offset``: the room's last offset when it was last reset (its epoch starts
  after it); 0 for a room reset before this migration (its older states are then simply gone).
- ``audit.via`` (how the gateway made an update for its author) and an index on
  ``audit.committed_at`` (the webhook dispatcher asks which rooms changed since a time).
"""

from __future__ import annotations

MIGRATION_SQL = """
ALTER TABLE {schema}.audit ADD COLUMN IF NOT EXISTS via text;
ALTER TABLE {schema}.rooms ADD COLUMN IF NOT EXISTS reset_offset bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS audit_committed_at ON {schema}.audit (committed_at);
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    room text NOT NULL,
    "offset" bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    data bytea NOT NULL,
    PRIMARY KEY (room, "offset")
);
CREATE TABLE IF NOT EXISTS {schema}.webhooks (
    id text PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    dead_since timestamptz,
    claimed_by text,
    claim_expires timestamptz
);
CREATE TABLE IF NOT EXISTS {schema}.webhook_cursors (
    endpoint text NOT NULL,
    room text NOT NULL,
    "offset" bigint NOT NULL,
    PRIMARY KEY (endpoint, room)
);
"""


class HistoryStatements:
    """The SQL of the history and webhook tables for one (quoted) schema."""

    def __init__(self, schema: str) -> None:
        # $1 room, $2 snapshot, $3 through, $4 checkpoint seconds. Thinned: only when the newest
        # checkpoint is older than $4 seconds.
        self.checkpoint = f"""
            INSERT INTO {schema}.checkpoints (room, "offset", data)
            SELECT $1, $3, $2
            WHERE coalesce((SELECT max(created_at) FROM {schema}.checkpoints WHERE room = $1)
                           <= now() - make_interval(secs => $4::float8), true)
            ON CONFLICT DO NOTHING
        """
        # $1 room, $2 retention seconds: the newest checkpoint at or before the state at the
        # window's start (the last offset committed before it); NULL when there is none.
        self.retained_base = f"""
            SELECT max("offset") AS base FROM {schema}.checkpoints
            WHERE room = $1 AND "offset" <= coalesce((
                SELECT max("offset") FROM {schema}.audit
                WHERE room = $1 AND committed_at < now() - make_interval(secs => $2::float8)
            ), 0)
        """
        # $1 room, $2 base
        self.drop_before_base = f"""
            WITH checkpoints AS (
                DELETE FROM {schema}.checkpoints WHERE room = $1 AND "offset" < $2
            )
            DELETE FROM {schema}.updates WHERE room = $1 AND "offset" <= $2
        """
        # $1 room. Without retention, compaction keeps no checkpoint.
        self.drop_checkpoints = f"DELETE FROM {schema}.checkpoints WHERE room = $1"
        # $1 room, $2 offset, $3 through: one row. ``base`` is the newest checkpoint (or the
        # snapshot) at or before $2, else the reset's offset (the log starts after it);
        # ``first`` the first log row after it, ``last`` the room's last offset.
        self.load_at = f"""
            WITH room_row AS (
                SELECT epoch, last_offset, reset_offset FROM {schema}.rooms WHERE room = $1
            ),
            point AS (
                SELECT "offset", data FROM (
                    SELECT "offset", data FROM {schema}.checkpoints
                    WHERE room = $1 AND "offset" <= $2
                    UNION ALL
                    SELECT "offset", data FROM {schema}.snapshots WHERE room = $1 AND "offset" <= $2
                ) candidates ORDER BY "offset" DESC LIMIT 1
            )
            SELECT (SELECT data FROM point) AS snapshot,
                   (SELECT "offset" FROM point) AS base,
                   coalesce((SELECT epoch FROM room_row), 1) AS epoch,
                   coalesce((SELECT last_offset FROM room_row), 0) AS last,
                   coalesce((SELECT reset_offset FROM room_row), 0) AS reset_offset,
                   (SELECT min("offset") FROM {schema}.updates
                    WHERE room = $1 AND "offset" > coalesce((SELECT "offset" FROM point), 0))
                       AS first,
                   coalesce(array_agg(u."offset" ORDER BY u."offset")
                            FILTER (WHERE u."offset" IS NOT NULL), '{{}}') AS offsets,
                   coalesce(array_agg(u.data ORDER BY u."offset")
                            FILTER (WHERE u."offset" IS NOT NULL), '{{}}') AS updates
            FROM (SELECT) one LEFT JOIN {schema}.updates u
                ON u.room = $1 AND u."offset" > coalesce((SELECT "offset" FROM point), 0)
                AND u."offset" <= $3
        """
        self.audit_columns = '"offset", committed_at, subject, role, fields, via'
        # $1 room, $2 after, $3 before, $4 limit
        self.audit_ascending = f"""
            SELECT {self.audit_columns} FROM {schema}.audit
            WHERE room = $1 AND "offset" > $2 AND "offset" < $3 ORDER BY "offset" LIMIT $4
        """
        self.audit_descending = f"""
            SELECT {self.audit_columns} FROM {schema}.audit
            WHERE room = $1 AND "offset" > $2 AND "offset" < $3 ORDER BY "offset" DESC LIMIT $4
        """
        # $1 room, $2 Unix seconds
        self.offset_at = f"""
            SELECT coalesce(max("offset"), 0) FROM {schema}.audit
            WHERE room = $1 AND committed_at <= to_timestamp($2::float8)
        """
        # $1 Unix seconds
        self.rooms_changed_since = f"""
            SELECT DISTINCT room FROM {schema}.audit WHERE committed_at >= to_timestamp($1::float8)
        """
        # $1 id, $2 url, $3 secret, $4 created_at (Unix seconds; NULL: now)
        self.register = f"""
            INSERT INTO {schema}.webhooks AS w (id, url, secret, created_at)
            VALUES ($1, $2, $3, coalesce(to_timestamp($4::float8), now()))
            ON CONFLICT (id) DO UPDATE
                SET url = excluded.url, secret = excluded.secret, dead_since = NULL
        """
        self.endpoints = f"""
            SELECT id, url, secret, extract(epoch FROM created_at)::float8 AS created_at,
                   extract(epoch FROM dead_since)::float8 AS dead_since
            FROM {schema}.webhooks ORDER BY id
        """
        # $1 id
        self.remove = f"""
            WITH cursors AS (DELETE FROM {schema}.webhook_cursors WHERE endpoint = $1)
            DELETE FROM {schema}.webhooks WHERE id = $1 RETURNING id
        """
        # $1 id, $2 node, $3 ttl seconds
        self.claim = f"""
            UPDATE {schema}.webhooks
            SET claimed_by = $2, claim_expires = now() + make_interval(secs => $3::float8)
            WHERE id = $1 AND (claimed_by IS NULL OR claimed_by = $2 OR claim_expires < now())
            RETURNING id
        """
        self.mark_dead = f"""
            UPDATE {schema}.webhooks SET dead_since = now() WHERE id = $1 AND dead_since IS NULL
        """
        self.cursors = f"""
            SELECT room, "offset" FROM {schema}.webhook_cursors WHERE endpoint = $1
        """
        # $1 endpoint, $2 room, $3 offset
        self.advance = f"""
            INSERT INTO {schema}.webhook_cursors AS c (endpoint, room, "offset")
            VALUES ($1, $2, $3)
            ON CONFLICT (endpoint, room) DO UPDATE
                SET "offset" = greatest(c."offset", excluded."offset")
        """
