"""The load-test client's edits and bookkeeping (loadtest/client.py), without a server.

Every update the kit sends goes through an enforcing ``Room`` (gateway/core/room.py), as it does
in the gateway: none may be refused, and the document it builds must satisfy proto/schema.md.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from gateway.core import schema
from gateway.core.effects import Broadcast, Effect, Send
from gateway.core.limits import Limits
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.types import RoomId
from loadtest.client import LoadClient, timeline_entry, wedding_update
from loadtest.config import RunConfig, Scenario, Target
from loadtest.tally import Tally
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EXTENSION_VERSION,
    CatchUp,
    Feature,
    Hello,
    Position,
    Reject,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

LIMITS = Limits()


class FakeConnection:
    """Collects what a LoadClient sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def run_config(target: Target = Target.CORE, clients: int = 3) -> RunConfig:
    return RunConfig(
        urls=("ws://127.0.0.1:1/ws",),
        scenario=Scenario.STEADY,
        weddings=1,
        clients=clients,
        rate=1.0,
        duration=1.0,
        target=target,
    )


def connected_client(gid: int, config: RunConfig) -> tuple[LoadClient, FakeConnection]:
    client = LoadClient(gid, config, Tally())
    connection = FakeConnection()
    client.conn = connection  # type: ignore[assignment]
    return client, connection


def member(room: Room) -> Session:
    """A session in ``room`` (development mode: a planner) that asked for REJECT messages."""
    session = Session(max_message_bytes=LIMITS.max_message_bytes)
    room.join(session)
    room.receive(session, Hello(EXTENSION_VERSION, Feature.REJECTS))
    return session


def deliver(room: Room, session: Session, sent: list[bytes]) -> list[Effect]:
    effects: list[Effect] = []
    for data in sent:
        message = codec.decode(data)
        assert isinstance(message, SyncUpdate)
        effects += room.receive(session, message)
    return effects


def assert_schema_valid(doc: Doc[Any]) -> None:
    core = doc.get("core", type=Map).to_py() or {}
    for key, value in core.items():
        assert schema.check_field(schema.CORE, key, value) is None, (key, value)
    assert set(schema.REQUIRED_CORE) <= core.keys()
    for entry in doc.get("timeline", type=Array).to_py() or []:
        assert schema.check_entry(entry) is None, entry


@pytest.mark.parametrize("target", list(Target))
def test_every_edit_of_the_kit_is_valid_under_the_schema(target: Target) -> None:
    room = Room(RoomId("lt-run-0"), [], limits=LIMITS)
    session = member(room)
    client, connection = connected_client(1, run_config(target))

    client.ensure_wedding()
    for _ in range(70):  # past seq 60: a start time of 01:00 or later
        client.edit(time.monotonic_ns())
    effects = deliver(room, session, connection.sent)

    assert room.refusals == 0
    assert not [e for e in effects if isinstance(e, Send)]  # no REJECT
    assert_schema_valid(room.doc)
    timeline = room.doc.get("timeline", type=Array).to_py() or []
    if target is Target.CORE:
        assert room.doc.get("core", type=Map)["notes"].startswith("LT|1|70|")
        assert timeline == []
    else:
        assert [e["id"] for e in timeline] == [f"lt-1-{seq}" for seq in range(1, 71)]


def test_timeline_entries_stay_valid_for_large_senders_and_sequence_numbers() -> None:
    marker = f"LT|{2**63}|{2**63}|{2**63}|{2**63}|"
    entry = timeline_entry(2**64 - 1, 2**64 - 1, marker)
    assert schema.check_entry(entry) is None
    assert len(entry["id"]) <= 64


def test_every_client_may_create_the_wedding_the_second_copy_changes_nothing() -> None:
    room = Room(RoomId("lt-run-0"), [], limits=LIMITS)
    first, second = member(room), member(room)
    config = run_config()
    a, a_connection = connected_client(0, config)
    b, b_connection = connected_client(1, config)

    a.ensure_wedding()
    b.ensure_wedding()  # concurrently: b has not seen a's yet
    created = deliver(room, first, a_connection.sent)
    again = deliver(room, second, b_connection.sent)

    assert a_connection.sent == b_connection.sent
    assert [type(e) for e in created if isinstance(e, Broadcast)] == [Broadcast]
    assert again == []
    assert room.refusals == 0
    assert_schema_valid(room.doc)
    a.ensure_wedding()  # its Doc has the wedding now: nothing more to send
    assert len(a_connection.sent) == 1


def test_core_edits_overwritten_before_a_resync_still_count_as_reflected() -> None:
    """Members share core["notes"]: a sync step 2 holds one marker, the state vector all edits."""
    config = run_config(Target.CORE, clients=3)
    a, _ = connected_client(0, config)
    b, _ = connected_client(1, config)
    c, _ = connected_client(2, config)
    a.ensure_wedding()
    for _ in range(5):
        a.edit(time.monotonic_ns())
    c.doc.apply_update(a.doc.get_update())
    for _ in range(3):
        c.edit(time.monotonic_ns())  # overwrites a's notes
    b.expect({0: 5, 1: 0, 2: 3})

    b.message_received(codec.encode(SyncStep2(c.doc.get_update())))

    assert b.covered == b.expected == 8
    assert b.settled
    assert b.tally.duplicates == 0
    assert b.digest() == c.digest()


def test_a_reject_from_the_server_is_counted_as_an_error_by_field() -> None:
    client, _ = connected_client(1, run_config(Target.TIMELINE))

    client.message_received(codec.encode(Reject(3, "timeline[lt-1-3].start", "must be HH:MM")))
    client.message_received(codec.encode(Reject(4, "timeline[lt-1-4].start", "must be HH:MM")))

    assert client.tally.errors == {"refused timeline[].start": 2}
    final = client.tally.final()
    assert final["refusals"][0] == {"field": "timeline[lt-1-3].start", "reason": "must be HH:MM"}


def test_the_wedding_update_sets_exactly_the_required_core_fields() -> None:
    doc: Doc[Any] = Doc()
    doc.apply_update(wedding_update())
    core = doc.get("core", type=Map).to_py() or {}
    assert set(core) == set(schema.REQUIRED_CORE)
    assert_schema_valid(doc)


async def test_a_resuming_client_answers_the_server_step_1_only_after_the_catch_up() -> None:
    """--resume (proto/spec.md §4.6): the CATCH_UP completes the sync and its payload is
    measured; the server's sync step 1 is answered after it; POSITION moves the offset."""
    client, connection = connected_client(1, replace(run_config(), resume=True))
    client._synced = asyncio.get_running_loop().create_future()
    server: Doc[Any] = Doc()
    server.apply_update(wedding_update())

    client.message_received(codec.encode(SyncStep1(server.get_state())))
    assert connection.sent == []
    client.message_received(codec.encode(CatchUp(1, 7, 0, server.get_update())))
    client.message_received(codec.encode(Position(1, 9)))

    assert client._synced.done()
    assert client.catch_up_bytes == len(server.get_update())
    assert (client.epoch, client.offset) == (1, 9)
    assert [type(codec.decode(m)) for m in connection.sent] == [SyncStep2]
    assert client.digest() != LoadClient(2, run_config(), Tally()).digest()  # it holds the wedding
