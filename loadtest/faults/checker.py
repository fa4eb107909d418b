"""What a fault run proves, read from outside the gateway: the store, the replicas, the logs.

- Every acknowledged edit is in the store (the run's Postgres schema, or the embedded SQLite
  file, decoded with pycrdt: snapshot, then every logged update) and in every replica.
- Every replica of a wedding (each client's document after it re-synced) is identical, and
  identical to the store.
- No edit was acknowledged twice (``recorder.Writer.defects``).
- The logs: counts of ``client_closed`` codes, and every 1011 close and traceback.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pycrdt import Doc

from loadtest.faults.recorder import Edit, doc_json

INTERNAL_ERROR = 1011


def _doc_of(updates: Iterable[bytes]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc_json(doc)


async def postgres_doc(dsn: str, schema: str, room: str) -> dict[str, Any]:
    """The wedding as stored in Postgres (gateway/adapters/postgres_store.py's tables)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT data FROM "{schema}".snapshots WHERE room = $1 UNION ALL '
            f'(SELECT data FROM "{schema}".updates WHERE room = $1 ORDER BY "offset")',
            room,
        )
    finally:
        await conn.close()
    return _doc_of(bytes(row["data"]) for row in rows)


def sqlite_doc(path: Path, room: str) -> dict[str, Any]:
    """The wedding as stored by the embedded store (gateway/adapters/sqlite_store.py)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        snapshot = db.execute("SELECT data FROM snapshots WHERE room = ?", (room,)).fetchall()
        updates = db.execute(
            "SELECT data FROM updates WHERE room = ? ORDER BY offset", (room,)
        ).fetchall()
    finally:
        db.close()
    return _doc_of(bytes(row[0]) for row in [*snapshot, *updates])


def missing(edits: Iterable[Edit], content: dict[str, Any]) -> list[Edit]:
    ids = {entry.get("id") for entry in content["timeline"]}
    return [
        e
        for e in edits
        if (e.entry is None and "partner_a" not in content["core"])
        or (e.entry is not None and e.entry not in ids)
    ]


def longest_gap(times: Iterable[float]) -> float:
    """The longest time between consecutive acks (seconds; 0 with fewer than two)."""
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


@dataclass
class LogSummary:
    """What the node logs say: close codes, 1011 closes, tracebacks, errors."""

    close_codes: Counter[int] = field(default_factory=Counter)
    internal_errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    """Exceptions the gateway logged (a JSON record with ``exception``)."""
    foreign_tracebacks: list[str] = field(default_factory=list)
    """Tracebacks printed outside the gateway's JSON logging (a library's stdlib logger),
    each with the line before it."""
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, paths: Iterable[Path]) -> LogSummary:
        summary = cls()
        for path in paths:
            if path.exists():
                previous = ""
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    summary._line(path.stem, line, previous)
                    previous = line
        return summary

    def _line(self, node: str, line: str, previous: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            if line.startswith("Traceback"):
                self.foreign_tracebacks.append(f"{node}: {previous[:160]}")
            return
        if not isinstance(record, dict):
            return
        event = str(record.get("event", ""))
        self.events[event] += 1
        if record.get("level") in ("error", "critical"):
            self.errors[event] += 1
        if "exception" in record:
            last = str(record["exception"]).strip().splitlines()[-1:]
            self.tracebacks.append(f"{node}: {event}: {' '.join(last)[:200]}")
        if event == "client_closed" and isinstance(record.get("code"), int):
            code: int = record["code"]
            self.close_codes[code] += 1
            if code == INTERNAL_ERROR:
                self.internal_errors.append(f"{node}: {str(record.get('reason', ''))[:160]}")
