"""``gateway audit WEDDING_ID``: who changed which field of a wedding, and when.

Reads the configured store (Postgres, or SQLite in the data directory) the way the app opens it,
and prints the room's newest audit entries, oldest first. One line per entry, tab-separated (shown
here with spaces)::

    2025-06-01T14:03:07.125Z  42  user-17  planner  core.venue,timeline[dinner].notes

(time in UTC, offset, subject, role, fields; ``-`` stands for no author or no fields known), or
with ``as_json`` one JSON object per line. The audit trail survives compaction of the log.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import orjson

from gateway.app import open_store
from gateway.errors import BackendUnavailable
from gateway.ports import AuditEntry
from gateway.settings import Settings
from gateway.types import RoomId, parse_room_id

MISSING = "-"


def run(settings: Settings, wedding_id: str, *, limit: int = 1000, as_json: bool = False) -> int:
    """Print the wedding's newest ``limit`` audit entries; return the exit status.

    2 (with a message on stderr) for an invalid wedding id or limit, or an unreachable store.
    """
    room = parse_room_id(wedding_id)
    if room is None:
        print(f"gateway: {wedding_id!r} is not a valid wedding id.", file=sys.stderr)
        return 2
    if limit < 1:
        print(f"gateway: the limit must be at least 1, not {limit}.", file=sys.stderr)
        return 2
    try:
        entries = asyncio.run(read_audit(settings, room, limit))
    except BackendUnavailable as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    render = format_json if as_json else format_line
    sys.stdout.write("".join(render(entry) + "\n" for entry in entries))
    return 0


async def read_audit(settings: Settings, room: RoomId, limit: int) -> list[AuditEntry]:
    async with AsyncExitStack() as stack:
        store = await open_store(settings, stack)
        return await store.audit(room, limit=limit)


def format_line(entry: AuditEntry) -> str:
    """``time offset subject role fields``, tab-separated."""
    return "\t".join(
        (
            iso_time(entry.at),
            str(entry.offset),
            entry.subject if entry.subject is not None else MISSING,
            entry.role if entry.role is not None else MISSING,
            ",".join(entry.fields) or MISSING,
        )
    )


def format_json(entry: AuditEntry) -> str:
    """The entry as one JSON object; ``subject`` and ``role`` are null without an author."""
    return orjson.dumps(
        {
            "at": iso_time(entry.at),
            "offset": entry.offset,
            "subject": entry.subject,
            "role": entry.role,
            "fields": entry.fields,
        }
    ).decode()


def iso_time(at: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds: ``2025-06-01T14:03:07.125Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
