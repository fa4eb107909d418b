"""gateway.core.room: CRDT state and membership of one room. Pure and synchronous.

Tests feed messages and assert on the returned effects (STYLE.md §7).
"""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from gateway.core.effects import Broadcast, Close, Effect, Persist, Publish, Send
from gateway.core.limits import Limits
from gateway.core.outgoing import compact_updates
from gateway.core.policy import Author
from gateway.core.room import Room
from gateway.core.session import Session, SessionState
from gateway.errors import ClientIdInUse, InvalidState, ProtocolError
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EMPTY_UPDATE,
    Ack,
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    Drain,
    Feature,
    Hello,
    QueryAwareness,
    Reject,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

LIMITS = Limits(max_message_bytes=1 << 16, max_awareness_entries=4, max_awareness_state_bytes=64)
DEV = Author("dev", "planner")
"""The author of every update in development mode (gateway/core/policy.py DEVELOPMENT_GRANT)."""
CREATED = {"partner_a": "Ana", "partner_b": "Bea", "status": "planning"}
"""The core of the wedding every room of ``new_room()`` starts from."""


# -- helpers ------------------------------------------------------------------------------------


def wedding_update() -> bytes:
    """A created wedding: its required core fields (proto/schema.md), by client 1."""
    doc: Doc[Any] = Doc(client_id=1)
    with doc.transaction():
        core = doc.get("core", type=Map)
        core.update(CREATED)
    return doc.get_update()


WEDDING = wedding_update()


def new_room(history: list[bytes] | None = None, *, created: bool = True) -> Room:
    """A room whose wedding is created (required core fields set) unless ``created`` is False."""
    head = [WEDDING] if created else []
    return Room(RoomId("wedding-1"), head + (history or []), limits=LIMITS)


def joined(room: Room, *, live: bool = True, acks: bool = False) -> Session:
    """A member of ``room``; LIVE once it sent its step 1, with ACKS if asked."""
    session = Session(max_message_bytes=LIMITS.max_message_bytes)
    room.join(session)
    if live:
        room.receive(session, SyncStep1(b"\x00"))
    if acks:
        room.receive(session, Hello(1, Feature.ACKS))
    return session


def recipients(room: Room, effect: Effect) -> set[Session]:
    """Who a Broadcast reaches, as effects.py defines it and gateway/fanout.py carries it out."""
    assert isinstance(effect, Broadcast)
    return {
        member
        for member in room.members.values()
        if member is not effect.exclude
        and (member.live or not effect.live_only)
        and (member.receives_awareness or not effect.awareness)
    }


def core_update(key: str, value: Any, *, client_id: int = 1001) -> bytes:
    """A real Yjs update setting ``core[key]`` (proto/schema.md)."""
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("core", type=Map)[key] = value
    return doc.get_update()


def following_edit(room: Room, *, client_id: int) -> bytes:
    """The update of client ``client_id`` setting core 'venue' after everything the room has."""
    source: Doc[Any] = Doc(client_id=client_id)
    source.apply_update(room.doc.get_update())
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    source.get("core", type=Map)["venue"] = "Barn"
    return updates[0]


def read_core(update: bytes) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return dict(doc.get("core", type=Map).to_py() or {})


def sent(effects: list[Effect], session: Session) -> list[bytes]:
    return [e.data for e in effects if isinstance(e, Send) and e.session is session]


def awareness(*entries: tuple[int, int, str]) -> AwarenessUpdate:
    return AwarenessUpdate(codec.encode_awareness([AwarenessEntry(*e) for e in entries]))


def awareness_entries(data: bytes) -> list[AwarenessEntry]:
    message = codec.decode(data)
    assert isinstance(message, AwarenessUpdate)
    return codec.decode_awareness(message.payload, max_entries=1 << 16)


def known_awareness(room: Room, member: Session) -> list[AwarenessEntry]:
    """Every awareness entry the room knows, as QueryAwareness reports it to ``member``."""
    (data,) = sent(room.receive(member, QueryAwareness()), member)
    return awareness_entries(data)


# -- joining and syncing ------------------------------------------------------------------------


def test_join_sends_sync_step1_with_the_room_state_vector() -> None:
    room = new_room([core_update("venue", "Hall")], created=False)
    session = Session(max_message_bytes=1024)
    effects = room.join(session)
    assert effects == [Send(session, codec.encode(SyncStep1(room.doc.get_state())))]
    one_client = codec.write_varuint(1) + codec.write_varuint(1001) + codec.write_varuint(1)
    assert effects[0] == Send(session, codec.encode(SyncStep1(one_client)))
    assert session.state is SessionState.SYNCING
    assert room.members == {session.id: session}


def test_join_also_sends_known_awareness_states() -> None:
    room = new_room()
    alice = joined(room)
    room.receive(alice, awareness((7, 1, '{"name":"Ana"}')))
    bob = Session(max_message_bytes=1024)
    effects = room.join(bob)
    assert len(effects) == 2
    assert awareness_entries(sent(effects, bob)[1]) == [AwarenessEntry(7, 1, '{"name":"Ana"}')]


def test_joining_twice_is_our_bug() -> None:
    room = new_room()
    session = joined(room)
    with pytest.raises(InvalidState):
        room.join(session)


def test_room_loads_its_history_in_order() -> None:
    doc: Doc[Any] = Doc(client_id=5)
    core = doc.get("core", type=Map)
    core["venue"] = "Hall"
    first = doc.get_update()
    state = doc.get_state()
    core["venue"] = "Barn"
    second = doc.get_update(state)
    room = new_room([first, second], created=False)
    assert room.doc.get("core", type=Map).to_py() == {"venue": "Barn"}
    assert room.doc.get_state() == doc.get_state()


def test_step1_is_answered_with_the_missing_update_and_makes_the_client_live() -> None:
    room = new_room([core_update("venue", "Hall"), core_update("guest_count", 120, client_id=7)])
    session = Session(max_message_bytes=1024)
    room.join(session)
    effects = room.receive(session, SyncStep1(b"\x00"))
    (data,) = sent(effects, session)
    assert len(effects) == 1
    message = codec.decode(data)
    assert isinstance(message, SyncStep2)
    assert read_core(message.update) == {**CREATED, "venue": "Hall", "guest_count": 120}
    assert session.state is SessionState.LIVE


def test_step1_with_the_full_state_vector_gets_an_empty_update() -> None:
    room = new_room([core_update("venue", "Hall")])
    session = Session(max_message_bytes=1024)
    room.join(session)
    (data,) = sent(room.receive(session, SyncStep1(room.doc.get_state())), session)
    assert codec.decode(data) == SyncStep2(EMPTY_UPDATE)


# -- updates from clients -----------------------------------------------------------------------


def test_update_is_broadcast_to_live_members_but_not_the_sender() -> None:
    room = new_room()
    sender, live, syncing = joined(room), joined(room), joined(room, live=False)
    update = core_update("venue", "Hall")
    effects = room.receive(sender, SyncUpdate(update))
    data = codec.encode(SyncUpdate(update))
    persist = Persist(update, None, 1, DEV, ("core.venue",))
    assert effects == [
        Broadcast(data, exclude=sender, update=update),
        Publish(data, sender),
        persist,
    ]
    assert recipients(room, effects[0]) == {live}
    assert syncing not in recipients(room, effects[0])
    assert room.doc.get("core", type=Map).to_py() == {**CREATED, "venue": "Hall"}


def test_syncing_member_gets_updates_once_its_step1_is_answered() -> None:
    room = new_room()
    sender, late = joined(room), joined(room, live=False)
    first = room.receive(sender, SyncUpdate(core_update("venue", "Hall")))
    assert late not in recipients(room, first[0])
    (data,) = sent(room.receive(late, SyncStep1(b"\x00")), late)
    step2 = codec.decode(data)
    assert isinstance(step2, SyncStep2)
    assert read_core(step2.update) == {**CREATED, "venue": "Hall"}
    second = room.receive(sender, SyncUpdate(core_update("status", "confirmed", client_id=9)))
    assert late in recipients(room, second[0])


def test_step2_from_a_client_is_applied_like_an_update() -> None:
    room = new_room()
    sender, other = joined(room), joined(room)
    update = core_update("venue", "Hall")
    effects = room.receive(sender, SyncStep2(update))
    data = codec.encode(SyncUpdate(update))
    persist = Persist(update, None, 1, DEV, ("core.venue",))
    assert effects == [
        Broadcast(data, exclude=sender, update=update),
        Publish(data, sender),
        persist,
    ]
    assert recipients(room, effects[0]) == {other}


def test_update_the_room_already_has_is_not_shared_again() -> None:
    room = new_room()
    first, echoer, other = joined(room), joined(room), joined(room, acks=True)
    update = core_update("venue", "Hall")
    room.receive(first, SyncUpdate(update))
    assert room.receive(echoer, SyncUpdate(update)) == []  # pycrdt providers echo updates
    # stored again for a client that wants acks: this node may hold it only from a dead peer
    assert room.receive(other, SyncUpdate(update)) == [Persist(update, other, 1, DEV)]
    assert room.statistics().updates_applied == 1


def test_update_with_missing_dependencies_is_kept_and_persisted() -> None:
    room = new_room()
    session = joined(room)
    source: Doc[Any] = Doc()
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    core = source.get("core", type=Map)
    core["venue"] = "Hall"
    core["notes"] = "Cake at 14:00"
    effects = room.receive(session, SyncUpdate(updates[1]))  # depends on updates[0]
    assert effects[-1] == Persist(updates[1], None, 1, DEV, ("core.notes",))
    room.receive(session, SyncUpdate(updates[0]))
    expected = {**CREATED, "venue": "Hall", "notes": "Cake at 14:00"}
    assert room.doc.get("core", type=Map).to_py() == expected


def test_document_messages_are_persisted_with_consecutive_seq() -> None:
    room = new_room()
    session = joined(room)
    updates = [core_update("venue", f"Hall {i}", client_id=100 + i) for i in range(3)]
    room.receive(session, SyncStep2(updates[0]))
    room.receive(session, SyncUpdate(updates[1]))
    effects = room.receive(session, SyncUpdate(updates[2]))
    assert effects[-1] == Persist(updates[2], None, 3, DEV, ("core.venue",))
    assert session.seq == 3


def test_persist_names_the_sender_once_it_asked_for_acks() -> None:
    room = new_room()
    session = joined(room, acks=True)
    update = core_update("venue", "Hall")
    persist = Persist(update, session, 1, DEV, ("core.venue",))
    assert room.receive(session, SyncUpdate(update))[-1] == persist


def test_acks_only_grow_even_when_an_earlier_ack_already_covered_a_seq() -> None:
    # A relaying node forwarded the owner's ACK 3; once it owns the wedding it may store an
    # update with seq 2 again (a resend): the client heard 3, so 2 is not sent (spec §4.2).
    room = new_room()
    session = joined(room, acks=True)
    assert sent(room.durable(session, 1, None), session) == [codec.encode(Ack(1))]
    session.acked = 3
    assert sent(room.durable(session, 2, None), session) == []
    assert sent(room.durable(session, 4, None), session) == [codec.encode(Ack(4))]
    assert session.acked == 4


def test_messages_before_hello_count_towards_seq() -> None:
    room = new_room()
    session = joined(room)
    before = core_update("venue", "Hall")
    after = core_update("status", "planning", client_id=3)
    assert room.receive(session, SyncUpdate(before))[-1] == Persist(
        before, None, 1, DEV, ("core.venue",)
    )
    room.receive(session, Hello(1, Feature.ACKS))
    assert room.receive(session, SyncUpdate(after))[-1] == Persist(
        after, session, 2, DEV, ("core.status",)
    )


def test_empty_update_without_acks_has_no_effect_but_counts() -> None:
    room = new_room()
    session, other = joined(room), joined(room)
    assert room.receive(session, SyncUpdate(EMPTY_UPDATE)) == []
    assert room.receive(session, SyncStep2(EMPTY_UPDATE)) == []
    update = core_update("venue", "Hall")
    assert room.receive(session, SyncUpdate(update))[-1] == Persist(
        update, None, 3, DEV, ("core.venue",)
    )
    assert room.updates_applied == 1
    assert other.live


def test_empty_update_with_acks_is_a_persist_barrier_with_its_seq() -> None:
    room = new_room()
    session = joined(room, acks=True)
    assert room.receive(session, SyncUpdate(EMPTY_UPDATE)) == [Persist(None, session, 1)]
    assert room.receive(session, SyncStep2(EMPTY_UPDATE)) == [Persist(None, session, 2)]


@pytest.mark.parametrize("update", [b"", b"\x00"])
def test_update_shorter_than_an_empty_update_is_refused(update: bytes) -> None:
    room = new_room()
    session = joined(room)
    with pytest.raises(ProtocolError, match="shorter than an empty update"):
        room.receive(session, SyncUpdate(update))
    assert room.updates_applied == 0


# -- HELLO and other messages -------------------------------------------------------------------


def test_hello_with_acks_is_answered_and_turns_acks_on() -> None:
    room = new_room()
    session = joined(room)
    effects = room.receive(session, Hello(1, Feature.ACKS))
    assert effects == [Send(session, bytes.fromhex("640101"))]
    assert session.wants_acks


def test_hello_answer_keeps_only_known_features_and_version_1() -> None:
    room = new_room()
    session = joined(room)
    effects = room.receive(session, Hello(2, Feature(0b110000)))
    assert effects == [Send(session, codec.encode(Hello(1, Feature(0))))]
    assert session.features == Feature(0)


def test_hello_keeps_acks_rejects_and_resume() -> None:
    room = new_room()
    session = joined(room)
    effects = room.receive(session, Hello(1, Feature(0b11111)))
    known = Feature.ACKS | Feature.REJECTS | Feature.RESUME | Feature.GZIP
    assert effects == [Send(session, codec.encode(Hello(1, known)))]
    assert session.wants_acks
    assert session.wants_rejects
    assert session.resumes


def test_hello_without_features_turns_acks_off() -> None:
    room = new_room()
    session = joined(room, acks=True)
    room.receive(session, Hello(1, Feature(0)))
    update = core_update("venue", "Hall")
    assert room.receive(session, SyncUpdate(update))[-1] == Persist(
        update, None, 1, DEV, ("core.venue",)
    )


def test_auth_message_reaching_the_room_is_our_bug() -> None:
    room = new_room()  # the connection handles tokens before the room sees a message
    with pytest.raises(InvalidState, match="auth message reached the room"):
        room.receive(joined(room), Auth(0, "token"))


@pytest.mark.parametrize("message", [Ack(1), Reject(1, "core", "no"), Drain(0)])
def test_server_only_message_from_a_client_closes_it(message: Ack | Reject | Drain) -> None:
    room = new_room()
    session = joined(room)
    (effect,) = room.receive(session, message)
    assert isinstance(effect, Close)
    assert effect.session is session
    assert effect.error.close_code == 4500


# -- awareness ----------------------------------------------------------------------------------


def test_new_awareness_entry_is_stored_and_sent_to_every_other_member() -> None:
    room = new_room()
    sender, live, syncing = joined(room), joined(room), joined(room, live=False)
    message = awareness((7, 1, '{"name":"Ana"}'))
    effects = room.receive(sender, message)
    data = codec.encode(message)
    broadcast = Broadcast(data, exclude=sender, live_only=False, awareness=True)
    assert effects == [broadcast, Publish(data)]
    assert recipients(room, effects[0]) == {live, syncing}
    assert known_awareness(room, live) == [AwarenessEntry(7, 1, '{"name":"Ana"}')]


@pytest.mark.parametrize(
    ("clock", "state", "applied"),
    [
        (3, '{"name":"Bea"}', True),  # newer clock wins
        (2, '{"name":"Bea"}', False),  # same clock, new state: ignored
        (1, '{"name":"Bea"}', False),  # older clock: ignored
        (2, "null", True),  # same clock removal: applied (y-protocols rule)
        (1, "null", False),  # older removal: ignored
    ],
)
def test_awareness_merge_follows_the_clock_rule(clock: int, state: str, applied: bool) -> None:
    room = new_room()
    sender = joined(room)
    room.receive(sender, awareness((7, 2, '{"name":"Ana"}')))
    effects = room.receive(sender, awareness((7, clock, state)))
    assert bool(effects) is applied
    expected = {
        True: [] if state == "null" else [AwarenessEntry(7, clock, state)],
        False: [AwarenessEntry(7, 2, '{"name":"Ana"}')],
    }[applied]
    assert known_awareness(room, sender) == expected


def test_awareness_entry_with_clock_zero_for_an_unknown_client_is_ignored() -> None:
    room = new_room()
    assert room.receive(joined(room), awareness((7, 0, "{}"))) == []


def test_removal_of_an_unknown_client_changes_nothing() -> None:
    room = new_room()
    assert room.receive(joined(room), awareness((7, 5, "null"))) == []


def test_awareness_update_with_too_many_entries_is_refused() -> None:
    room = new_room()
    message = awareness(*[(i, 1, "{}") for i in range(1, 6)])
    with pytest.raises(ProtocolError, match="5 entries; the limit is 4"):
        room.receive(joined(room), message)


def test_awareness_state_above_the_size_limit_is_refused() -> None:
    room = new_room()
    session = joined(room)
    assert room.receive(session, awareness((7, 1, '"' + "x" * 62 + '"')))
    with pytest.raises(ProtocolError, match="65 characters exceeds the limit of 64"):
        room.receive(session, awareness((7, 2, '"' + "x" * 63 + '"')))


def test_awareness_state_must_be_json_of_bounded_depth() -> None:
    room = new_room()
    session = joined(room)
    with pytest.raises(ProtocolError, match="not valid JSON"):
        room.receive(session, awareness((7, 1, "{oops")))
    deep = "[" * 17 + "]" * 17
    with pytest.raises(ProtocolError, match="nested deeper than 16"):
        room.receive(session, awareness((7, 1, deep)))
    assert room.receive(session, awareness((7, 1, "[" * 16 + "]" * 16)))


def test_a_connection_cannot_set_or_clear_another_connections_awareness() -> None:
    room = new_room()
    owner, spoofer = joined(room), joined(room)
    room.receive(owner, awareness((7, 1, '{"name":"Ana"}')))
    with pytest.raises(ClientIdInUse, match="client id 7 belongs to another connection"):
        room.receive(spoofer, awareness((7, 2, "null")))
    room.leave(owner)
    assert room.receive(spoofer, awareness((7, 3, '{"name":"Bo"}')))  # free once its owner left


def test_a_connection_cannot_write_with_another_connections_client_id() -> None:
    room = new_room()
    owner, squatter = joined(room), joined(room)
    room.receive(owner, SyncUpdate(core_update("venue", "Hall", client_id=42)))
    next_edit = following_edit(room, client_id=42)  # clock squatting: 42's next clock
    with pytest.raises(ClientIdInUse, match="client id 42 belongs to another connection"):
        room.receive(squatter, SyncUpdate(next_edit))
    assert room.doc.get("core", type=Map).to_py() == {**CREATED, "venue": "Hall"}
    # relaying (or echoing) what the room already has is not writing
    assert room.receive(squatter, SyncUpdate(room.doc.get_update())) == []


def test_query_awareness_answers_with_every_known_entry() -> None:
    room = new_room()
    alice = joined(room)
    room.receive(alice, awareness((7, 1, "{}"), (8, 3, '{"a":1}')))
    bob = joined(room)
    (data,) = sent(room.receive(bob, QueryAwareness()), bob)
    assert awareness_entries(data) == [AwarenessEntry(7, 1, "{}"), AwarenessEntry(8, 3, '{"a":1}')]


def test_leaving_removes_the_clients_awareness_entries_for_everyone() -> None:
    room = new_room()
    leaver, stayer = joined(room), joined(room)
    room.receive(leaver, awareness((7, 4, '{"name":"Ana"}')))
    room.receive(stayer, awareness((8, 1, '{"name":"Bea"}')))
    effects = room.leave(leaver)
    data = codec.encode(awareness((7, 5, "null")))
    assert effects == [
        Broadcast(data, exclude=None, live_only=False, awareness=True),
        Publish(data),
    ]
    assert recipients(room, effects[0]) == {stayer}
    assert leaver.state is SessionState.CLOSED
    assert known_awareness(room, stayer) == [AwarenessEntry(8, 1, '{"name":"Bea"}')]


def test_leaving_without_awareness_has_no_effect() -> None:
    room = new_room()
    session = joined(room)
    assert room.leave(session) == []
    assert room.empty


def test_leaving_after_removing_its_own_entry_sends_nothing_more() -> None:
    room = new_room()
    session, _ = joined(room), joined(room)
    room.receive(session, awareness((7, 1, "{}")))
    room.receive(session, awareness((7, 2, "null")))
    assert room.leave(session) == []


def test_leaving_twice_is_harmless() -> None:
    room = new_room()
    session = joined(room)
    room.receive(session, awareness((7, 1, "{}")))
    assert room.leave(session)
    assert room.leave(session) == []


# -- messages from peers ------------------------------------------------------------------------


def test_update_from_peer_is_broadcast_locally_and_not_republished() -> None:
    room = new_room()
    live, syncing = joined(room), joined(room, live=False)
    update = core_update("venue", "Hall")
    data = codec.encode(SyncUpdate(update))
    effects = room.receive_from_peer(data)
    assert effects == [Broadcast(data, exclude=None, update=update)]
    assert recipients(room, effects[0]) == {live}
    assert syncing not in recipients(room, effects[0])
    assert room.doc.get("core", type=Map).to_py() == {**CREATED, "venue": "Hall"}


def test_awareness_from_peer_is_broadcast_to_every_member_and_not_republished() -> None:
    room = new_room()
    live, syncing = joined(room), joined(room, live=False)
    data = codec.encode(awareness((7, 1, "{}")))
    effects = room.receive_from_peer(data)
    assert effects == [Broadcast(data, exclude=None, live_only=False, awareness=True)]
    assert recipients(room, effects[0]) == {live, syncing}
    assert room.receive_from_peer(data) == []  # same clock again: nothing changed


def test_peer_removal_of_awareness_is_applied() -> None:
    room = new_room()
    room.receive_from_peer(codec.encode(awareness((7, 1, "{}"))))
    room.receive_from_peer(codec.encode(awareness((7, 2, "null"))))
    assert room.statistics().awareness_entries == 0


@pytest.mark.parametrize(
    "message", [SyncStep1(b"\x00"), SyncStep2(EMPTY_UPDATE), QueryAwareness(), Hello(1, Feature(0))]
)
def test_peer_may_only_publish_updates_and_awareness(message: Any) -> None:
    room = new_room()
    with pytest.raises(InvalidState):
        room.receive_from_peer(codec.encode(message))


def test_receive_from_peer_never_returns_publish_or_persist() -> None:
    room = new_room()
    joined(room)
    messages: list[SyncUpdate | AwarenessUpdate] = [
        SyncUpdate(core_update("venue", "Hall")),
        SyncUpdate(core_update("venue", "Barn", client_id=2)),
        awareness((7, 1, "{}"), (8, 1, "{}")),
        awareness((7, 2, "null")),
    ]
    effects = [e for m in messages for e in room.receive_from_peer(codec.encode(m))]
    assert len(effects) == 4
    assert all(isinstance(e, Broadcast) for e in effects)


# -- state --------------------------------------------------------------------------------------


def test_statistics_count_members_live_members_updates_and_awareness() -> None:
    room = new_room()
    live = joined(room)
    joined(room, live=False)
    room.receive(live, SyncUpdate(core_update("venue", "Hall")))
    room.receive(live, awareness((7, 1, "{}")))
    stats = room.statistics()
    assert (stats.members, stats.live_members) == (2, 1)
    assert (stats.updates_applied, stats.awareness_entries) == (1, 1)


def test_encode_state_rebuilds_the_same_document() -> None:
    room = new_room()
    session = joined(room)
    room.receive(session, SyncUpdate(core_update("venue", "Hall")))
    room.receive(session, SyncUpdate(core_update("guest_count", 80, client_id=4)))
    assert read_core(room.encode_state()) == {**CREATED, "venue": "Hall", "guest_count": 80}


def test_compact_updates_merges_a_log_into_one_update() -> None:
    doc: Doc[Any] = Doc(client_id=3)
    timeline = doc.get("timeline", type=Array)
    blobs = []
    for title in ("Ceremony", "Dinner"):
        before = doc.get_state()
        timeline.append(Map({"id": title.lower(), "title": title}))
        blobs.append(doc.get_update(before))
    merged: Doc[Any] = Doc()
    merged.apply_update(compact_updates(blobs))
    assert [e["title"] for e in merged.get("timeline", type=Array).to_py()] == [
        "Ceremony",
        "Dinner",
    ]


def test_a_relay_in_sync_step2_claims_no_client_id() -> None:
    room = new_room()
    relay, author = joined(room), joined(room)
    room.receive(relay, SyncStep2(core_update("venue", "Hall", client_id=77)))  # 77's edit, relayed
    next_edit = following_edit(room, client_id=77)
    effects = room.receive(author, SyncUpdate(next_edit))  # the author is not locked out
    assert any(isinstance(e, Persist) for e in effects)


def test_sync_step2_may_not_bring_new_clocks_of_an_owned_client_id() -> None:
    room = new_room()
    owner, other = joined(room), joined(room)
    room.receive(owner, SyncUpdate(core_update("venue", "Hall", client_id=42)))
    next_edit = following_edit(room, client_id=42)
    with pytest.raises(ClientIdInUse):
        room.receive(other, SyncStep2(next_edit))


def test_compaction_keeps_updates_whose_dependency_is_missing() -> None:
    source: Doc[Any] = Doc()
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    core = source.get("core", type=Map)
    core["a"] = 1
    core["b"] = 2
    snapshot = compact_updates([updates[1]])  # the dependency is not stored yet
    later: Doc[Any] = Doc()
    later.apply_update(snapshot)
    later.apply_update(updates[0])  # it arrives: nothing was lost
    assert later.get("core", type=Map).to_py() == {"a": 1, "b": 2}


def test_a_sync_step2_that_changes_nothing_is_acknowledged_but_not_stored() -> None:
    """A reconnecting client's answer to the server's step 1 carries its whole delete set: it is
    not appended again when it brings nothing new (a resend as an update still is, §4.3)."""
    room = new_room()
    session = joined(room, acks=True)
    known = room.doc.get_update()
    assert room.receive(session, SyncStep2(known)) == [Persist(None, session, 1, DEV)]
    assert room.receive(session, SyncUpdate(known)) == [Persist(known, session, 2, DEV)]
