"""Room.catch_up (proto/spec.md §4.6): the smaller complete answer, the reset of an old epoch."""

from __future__ import annotations

import gzip
from typing import Any

from pycrdt import Array, Doc, Map

from gateway.core.effects import Send
from gateway.core.limits import Limits
from gateway.core.room import Room
from gateway.core.session import Session, SessionState
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import CATCH_UP_GZIP_BYTES, CatchUp, Feature, Resume

LIMITS = Limits(max_message_bytes=1 << 20)


def history_with_many_deletions() -> tuple[list[bytes], Doc[Any]]:
    """A wedding whose timeline saw 400 entries come and go: a large delete set."""
    doc: Doc[Any] = Doc(client_id=1)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    core = doc.get("core", type=Map)
    timeline = doc.get("timeline", type=Array)
    with doc.transaction():
        core.update({"partner_a": "Ana", "partner_b": "Bea", "status": "planning"})
    for i in range(400):
        timeline.append(Map({"id": f"e{i}", "title": "x", "start": "10:00"}))
    for i in range(200):  # every other entry: 200 separate deleted ranges
        del timeline[i]
    return updates, doc


def answer(room: Room, resume: Resume, missed: list[bytes] | None, through: int) -> CatchUp:
    session = Session(max_message_bytes=LIMITS.max_message_bytes)
    room.join(session)
    (effect,) = room.catch_up(session, resume, missed, through, 0)
    assert isinstance(effect, Send)
    assert session.state is SessionState.LIVE
    message = codec.decode_server_message(effect.data)
    assert isinstance(message, CatchUp)
    return message


def test_the_stored_updates_are_sent_when_smaller_than_the_diff() -> None:
    updates, doc = history_with_many_deletions()
    client: Doc[Any] = Doc()
    client.apply_update(doc.get_update())
    seen = len(updates)
    doc.get("core", type=Map)["venue"] = "Hall"  # one missed edit
    room = Room(RoomId("w"), updates, limits=LIMITS, position=len(updates))
    resume = Resume(1, seen, client.get_state())
    diff = room.doc.get_update(client.get_state())
    message = answer(room, resume, updates[seen:], len(updates))
    assert len(message.update) < len(diff), "the log's answer lacks the whole delete set"
    client.apply_update(message.update)
    assert client.get("core", type=Map).to_py() == room.doc.get("core", type=Map).to_py()
    assert (message.epoch, message.offset, message.reset) == (1, len(updates), False)


def test_an_incomplete_log_falls_back_to_the_diff() -> None:
    updates, doc = history_with_many_deletions()
    client: Doc[Any] = Doc()
    client.apply_update(doc.get_update())
    seen = len(updates)
    doc.get("core", type=Map)["venue"] = "Hall"
    room = Room(RoomId("w"), updates, limits=LIMITS, position=len(updates))
    resume = Resume(1, seen, client.get_state())
    # the read reached an older offset than the room's position: it may lack something
    message = answer(room, resume, updates[seen:], len(updates) - 1)
    assert message.update == room.doc.get_update(client.get_state())
    room.peer_changes = 1  # another node's change: the log may not hold it yet
    message = answer(room, resume, updates[seen:], len(updates))
    assert message.update == room.doc.get_update(client.get_state())


def test_a_client_of_another_epoch_gets_the_whole_document_with_reset() -> None:
    updates, _ = history_with_many_deletions()
    room = Room(RoomId("w"), updates, limits=LIMITS, epoch=3, position=9)
    message = answer(room, Resume(2, 5, b"\x00"), None, 0)
    assert message.reset
    assert (message.epoch, message.offset) == (3, 9)
    assert message.update == room.doc.get_update()


def test_a_large_catch_up_is_gzip_compressed_for_clients_that_accept_it() -> None:
    updates, _ = history_with_many_deletions()
    room = Room(RoomId("w"), updates, limits=LIMITS, position=len(updates))
    whole = room.doc.get_update()
    assert len(whole) >= CATCH_UP_GZIP_BYTES
    plain = answer(room, Resume(0, 0, b"\x00"), None, 0)
    assert (plain.gzip, plain.update) == (False, whole)
    session = Session(max_message_bytes=LIMITS.max_message_bytes)
    session.accept(Feature.RESUME | Feature.GZIP)
    room.join(session)
    (effect,) = room.catch_up(session, Resume(0, 0, b"\x00"), None, 0, 0)
    assert isinstance(effect, Send)
    message = codec.decode_server_message(effect.data)
    assert isinstance(message, CatchUp)
    assert message.gzip
    assert len(message.update) < len(whole) // 2
    assert gzip.decompress(message.update) == whole
    small = answer_with(room, Feature.RESUME | Feature.GZIP, Resume(1, 0, room.doc.get_state()))
    assert not small.gzip, "below the threshold compression would only add bytes"


def answer_with(room: Room, features: Feature, resume: Resume) -> CatchUp:
    session = Session(max_message_bytes=LIMITS.max_message_bytes)
    session.accept(features)
    room.join(session)
    (effect,) = room.catch_up(session, resume, None, 0, 0)
    assert isinstance(effect, Send)
    message = codec.decode_server_message(effect.data)
    assert isinstance(message, CatchUp)
    return message
