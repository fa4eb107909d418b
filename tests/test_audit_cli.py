"""``gateway audit``: gateway.audit.run against the SQLite and the Postgres store.

The tests are synchronous: ``run`` starts its own event loop, as the CLI does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import orjson
import pytest
from starlette.datastructures import Secret

from gateway.adapters.postgres_store import PostgresStore, migrate
from gateway.adapters.sqlite_store import SqliteStore
from gateway.audit import run
from gateway.ports import Append, Author, Store
from gateway.settings import Settings
from gateway.types import RoomId

ROOM = RoomId("wedding-1")
PLANNER = Author("ada", "planner")
COUPLE = Author("grace", "couple")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

BATCHES = [
    [
        Append(ROOM, b"1", PLANNER, ("core.venue",)),
        Append(ROOM, b"2", COUPLE, ("timeline[dinner].notes", "timeline[dinner]")),
    ],
    [Append(ROOM, b"3"), Append(RoomId("wedding-2"), b"x", PLANNER, ("core.date",))],
    [Append(ROOM, b"4", COUPLE)],
]
EXPECTED = [
    ["1", "ada", "planner", "core.venue"],
    ["2", "grace", "couple", "timeline[dinner].notes,timeline[dinner]"],
    ["3", "-", "-", "-"],
    ["4", "grace", "couple", "-"],
]


async def fill(store: Store) -> None:
    """Append the batches, then compact ROOM: the audit trail must outlive the log rows."""
    for batch in BATCHES:
        await store.append(batch)
    await store.compact(ROOM, b"snapshot", 4)


async def fill_sqlite(data_dir: Path) -> None:
    async with SqliteStore.open(data_dir) as store:
        await fill(store)


def lines(out: str) -> list[list[str]]:
    """The printed entries without their times, after checking each time's format."""
    rows = [line.split("\t") for line in out.splitlines()]
    for row in rows:
        assert ISO_UTC.fullmatch(row[0]), row
    return [row[1:] for row in rows]


class TestSqlite:
    def test_lists_who_changed_which_fields_oldest_first(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        before = time.time()
        asyncio.run(fill_sqlite(tmp_path))
        assert run(Settings(data_dir=tmp_path), ROOM) == 0
        out, err = capsys.readouterr()
        assert (lines(out), err) == (EXPECTED, "")
        first = datetime.fromisoformat(out.split("\t", 1)[0])
        assert before - 1 <= first.timestamp() <= time.time()

    def test_json_prints_one_object_per_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        asyncio.run(fill_sqlite(tmp_path))
        assert run(Settings(data_dir=tmp_path), ROOM, as_json=True) == 0
        entries = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert all(ISO_UTC.fullmatch(entry.pop("at")) for entry in entries)
        assert entries == [
            {"offset": 1, "subject": "ada", "role": "planner", "fields": ["core.venue"]},
            {
                "offset": 2,
                "subject": "grace",
                "role": "couple",
                "fields": ["timeline[dinner].notes", "timeline[dinner]"],
            },
            {"offset": 3, "subject": None, "role": None, "fields": []},
            {"offset": 4, "subject": "grace", "role": "couple", "fields": []},
        ]

    def test_limit_lists_the_newest_entries(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        asyncio.run(fill_sqlite(tmp_path))
        assert run(Settings(data_dir=tmp_path), ROOM, limit=2) == 0
        assert lines(capsys.readouterr().out) == EXPECTED[2:]

    def test_a_wedding_without_changes_lists_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        asyncio.run(fill_sqlite(tmp_path))
        assert run(Settings(data_dir=tmp_path), "wedding-3") == 0
        assert capsys.readouterr() == ("", "")

    @pytest.mark.parametrize("wedding_id", ["", "a/b", "x" * 65, "wedding 1"])
    def test_an_invalid_wedding_id_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], wedding_id: str
    ) -> None:
        assert run(Settings(data_dir=tmp_path), wedding_id) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "not a valid wedding id" in err

    def test_a_limit_below_one_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run(Settings(data_dir=tmp_path), ROOM, limit=0) == 2
        assert "limit" in capsys.readouterr().err

    def test_an_unusable_data_dir_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        not_a_dir = tmp_path / "file"
        not_a_dir.write_bytes(b"")
        assert run(Settings(data_dir=not_a_dir), ROOM) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "SQLite store" in err


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped with everything in it afterwards."""
    name = f"t_{uuid4().hex[:12]}"
    try:
        yield name
    finally:
        asyncio.run(drop_schema(postgres_dsn, name))


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def fill_postgres(dsn: str, schema: str) -> None:
    async with PostgresStore.connect(dsn, schema=schema, create=True) as store:
        await fill(store)


@pytest.mark.postgres
class TestPostgres:
    def test_lists_who_changed_which_fields_oldest_first(
        self, postgres_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        asyncio.run(fill_postgres(postgres_dsn, schema))
        settings = Settings(database_url=Secret(postgres_dsn), database_schema=schema)
        assert run(settings, ROOM) == 0
        out, err = capsys.readouterr()
        assert (lines(out), err) == (EXPECTED, "")
        assert run(settings, ROOM, limit=1, as_json=True) == 0
        (entry,) = map(orjson.loads, capsys.readouterr().out.splitlines())
        assert (entry["offset"], entry["subject"], entry["fields"]) == (4, "grace", [])

    def test_an_unmigrated_schema_exits_2(
        self, postgres_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = Settings(database_url=Secret(postgres_dsn), database_schema=schema)
        assert run(settings, ROOM) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "gateway migrate" in err
        asyncio.run(migrate(postgres_dsn, schema=schema))
        assert run(settings, ROOM) == 0

    def test_an_unreachable_postgres_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        settings = Settings(database_url=Secret("postgresql://127.0.0.1:1/test"))
        assert run(settings, ROOM) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "unreachable" in err
