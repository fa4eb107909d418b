"""Backlog: the messages owed to a client that fell behind, collapsed (gateway/core/backlog.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway.core.backlog import MERGE_EVERY, Backlog
from gateway.errors import SlowClient
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    Ack,
    AwarenessEntry,
    AwarenessUpdate,
    Drain,
    Position,
    Reject,
    Status,
    SyncStep2,
    SyncUpdate,
)


def edits(count: int) -> tuple[Doc[Any], list[bytes]]:
    """A document and the ``count`` updates that made it, one key set by each."""
    doc: Doc[Any] = Doc()
    core = doc.get("core", type=Map)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for n in range(count):
        core[f"k{n % 7}"] = n
    return doc, updates


def applied(frames: list[bytes]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    for frame in frames:
        message = codec.decode_server_message(frame)
        if isinstance(message, SyncUpdate | SyncStep2):
            doc.apply_update(message.update)
    return doc.get("core", type=Map).to_py() or {}


def awareness(*entries: tuple[int, int, str]) -> bytes:
    payload = codec.encode_awareness([AwarenessEntry(*e) for e in entries])
    return codec.encode(AwarenessUpdate(payload))


def backlog(max_bytes: int = 1 << 20, max_messages: int = 16) -> Backlog:
    return Backlog(max_bytes=max_bytes, max_messages=max_messages)


@pytest.mark.parametrize("count", [1, 3, MERGE_EVERY + 5])
def test_document_updates_become_one_update_with_the_same_content(count: int) -> None:
    doc, updates = edits(count)
    held = backlog()
    for update in updates:
        held.add(codec.encode(SyncUpdate(update)))
    frames = held.frames()
    assert len(frames) == 1
    assert isinstance(codec.decode_server_message(frames[0]), SyncUpdate)
    assert applied(frames) == doc.get("core", type=Map).to_py()
    assert held.collapsed == count


def test_a_step_2_among_them_makes_the_merged_update_a_step_2() -> None:
    _, updates = edits(3)
    held = backlog()
    held.add(codec.encode(SyncStep2(updates[0])))
    for update in updates[1:]:
        held.add(codec.encode(SyncUpdate(update)))
    (frame,) = held.frames()
    assert isinstance(codec.decode_server_message(frame), SyncStep2)  # the client gets synced


def test_awareness_keeps_the_newest_entry_per_client() -> None:
    held = backlog()
    held.add(awareness((1, 1, '{"a":1}'), (2, 5, '{"b":5}')))
    held.add(awareness((1, 3, '{"a":3}')))
    held.add(awareness((2, 4, '{"b":4}'), (1, 3, "null")))  # an older b; a leaves at clock 3
    (frame,) = held.frames()
    message = codec.decode_server_message(frame)
    assert isinstance(message, AwarenessUpdate)
    entries = codec.decode_awareness(message.payload, max_entries=8)
    assert sorted(entries, key=lambda e: e.client_id) == [
        AwarenessEntry(1, 3, "null"),
        AwarenessEntry(2, 5, '{"b":5}'),
    ]


def test_order_updates_first_then_others_in_order_then_the_latest_ack_position_status() -> None:
    _, updates = edits(2)
    held = backlog()
    sequence = [
        codec.encode(Ack(1)),
        codec.encode(SyncUpdate(updates[0])),
        codec.encode(Reject(2, "core.venue", "no")),
        codec.encode(Status(1)),
        codec.encode(Position(1, 7)),
        codec.encode(Ack(3)),
        codec.encode(SyncUpdate(updates[1])),
        codec.encode(Drain(0)),
        codec.encode(Position(1, 9)),
        codec.encode(Status(0)),
    ]
    for data in sequence:
        held.add(data)
    messages = [codec.decode_server_message(f) for f in held.frames()]
    assert messages[1:] == [
        Reject(2, "core.venue", "no"),
        Drain(0),
        Ack(3),
        Position(1, 9),
        Status(0),
    ]
    assert isinstance(messages[0], SyncUpdate)  # the undo a REJECT explains comes before it


def test_more_other_messages_than_the_bound_is_a_slow_client() -> None:
    held = backlog(max_messages=3)
    for seq in range(3):
        held.add(codec.encode(Reject(seq, "core.venue", "no")))
    with pytest.raises(SlowClient, match="4 messages wait"):
        held.add(codec.encode(Reject(3, "core.venue", "no")))


def test_more_bytes_than_the_bound_is_a_slow_client() -> None:
    state = '{"name":"a guest with a long name"}'
    held = backlog(max_bytes=7 * (len(state) + 8))  # an entry counts its state and 8 bytes
    for n in range(7):  # awareness is kept per client: new clients make it grow
        held.add(awareness((n, 1, state)))
    with pytest.raises(SlowClient, match="bytes wait for this client, collapsed"):
        held.add(awareness((7, 1, state)))
