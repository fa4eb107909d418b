"""Roles and schema on every client update, through Room (gateway/core/enforcer.py, policy.py).

Pure and synchronous. Every edit is made by a real pycrdt client Doc; every update the room sends
back is applied to the client Docs, so each test sees what a client of the gateway would see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from gateway.core.effects import Broadcast, Effect, Persist, Publish, Send
from gateway.core.limits import Limits
from gateway.core.outgoing import MAX_REJECTS
from gateway.core.policy import Grant, Role
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.errors import ProtocolError
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AwarenessEntry,
    AwarenessUpdate,
    Feature,
    Hello,
    QueryAwareness,
    Reject,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

LIMITS = Limits(max_message_bytes=1 << 20, max_awareness_entries=4, max_awareness_state_bytes=64)
VENDOR = "caterer-42"
OTHER_VENDOR = "photo-7"
GRANTS = {
    Role.COUPLE: Grant("ana", Role.COUPLE),
    Role.PLANNER: Grant("pat", Role.PLANNER),
    Role.VENDOR: Grant("cat", Role.VENDOR, vendor_id=VENDOR),
    Role.VIEWER: Grant("vic", Role.VIEWER),
    Role.SERVICE: Grant("svc", Role.SERVICE),
}
WRITERS = (Role.COUPLE, Role.PLANNER, Role.SERVICE)
"""The roles that may write every field (gateway/core/policy.py RIGHTS)."""

CORE = {
    "partner_a": "Ana",
    "partner_b": "Bea",
    "status": "planning",
    "wedding_date": "2027-06-12",
    "venue": "Quinta do Lago",
    "guest_count": 120,
}
TIMELINE = [
    {"id": "ceremony", "title": "Ceremony", "start": "16:30", "end": "17:15"},
    {"id": "dinner", "title": "Dinner", "start": "19:00", "end": "21:30", "vendor_id": VENDOR},
    {"id": "photos", "title": "Photos", "start": "17:30", "vendor_id": OTHER_VENDOR},
]

Change = Callable[[Doc[Any]], None]


def created_wedding() -> bytes:
    """The wedding every room starts from, written by client 1 (a planner, long ago)."""
    doc: Doc[Any] = Doc(client_id=1)
    with doc.transaction():
        doc.get("core", type=Map).update(CORE)
        doc.get("timeline", type=Array).extend([Map(entry) for entry in TIMELINE])
    return doc.get_update()


WEDDING = created_wedding()


def state(doc: Doc[Any]) -> dict[str, Any]:
    """The document as plain values (pycrdt reads every number back as a float)."""
    return {
        "core": doc.get("core", type=Map).to_py() or {},
        "timeline": doc.get("timeline", type=Array).to_py() or [],
    }


def updates_in(data: bytes) -> list[bytes]:
    """The Yjs update inside one encoded message, if it carries one."""
    message = codec.decode_server_message(data)
    if isinstance(message, SyncUpdate | SyncStep2):
        return [message.update]
    return []


@dataclass
class Client:
    """A real pycrdt client Doc and its connection's session in the room."""

    session: Session
    doc: Doc[Any]
    received: list[bytes] = field(default_factory=list)
    """Every message the room sent this client (Send and Broadcast data), in order."""

    @property
    def rejects(self) -> list[Reject]:
        messages = map(codec.decode_server_message, self.received)
        return [m for m in messages if isinstance(m, Reject)]


@dataclass
class Result:
    """What the room did with one client update."""

    update: bytes
    effects: list[Effect]

    @property
    def persisted(self) -> Persist:
        (persist,) = [e for e in self.effects if isinstance(e, Persist)]
        return persist

    @property
    def broadcast(self) -> Broadcast:
        (broadcast,) = [e for e in self.effects if isinstance(e, Broadcast)]
        return broadcast

    @property
    def shared(self) -> list[bytes]:
        """Every byte string that leaves the room: broadcast, published and persisted."""
        data = [e.data for e in self.effects if isinstance(e, Broadcast | Publish)]
        return data + [e.update for e in self.effects if isinstance(e, Persist) and e.update]


class Wedding:
    """A room holding WEDDING (unless ``created`` is False), then ``history``, and its clients."""

    def __init__(self, history: Sequence[bytes] = (), *, created: bool = True) -> None:
        head = [WEDDING] if created else []
        self.room = Room(RoomId("wedding-1"), [*head, *history], limits=LIMITS)
        self.clients: list[Client] = []
        self._next_client_id = 100

    def join(self, role: Role | Grant, *, rejects: bool = False) -> Client:
        """A LIVE member with the grant of ``role``, synced; with REJECTS if asked."""
        session = Session(max_message_bytes=LIMITS.max_message_bytes)
        session.grant = role if isinstance(role, Grant) else GRANTS[role]
        self._next_client_id += 1
        client = Client(session, Doc(client_id=self._next_client_id))
        self.clients.append(client)
        self.deliver(self.room.join(session))
        self.deliver(self.room.receive(session, SyncStep1(client.doc.get_state())))
        if rejects:
            self.deliver(self.room.receive(session, Hello(1, Feature.REJECTS)))
        return client

    def edit(self, client: Client, change: Change, *, message: type = SyncUpdate) -> Result:
        """Make ``change`` in the client's Doc, send its update, deliver what the room sends."""
        update = local_edit(client, change)
        return self.send(client, update, message=message)

    def send(self, client: Client, update: bytes, *, message: type = SyncUpdate) -> Result:
        effects = self.room.receive(client.session, message(update))
        self.deliver(effects)
        return Result(update, effects)

    def deliver(self, effects: list[Effect]) -> None:
        """Carry out Send and Broadcast as gateway/fanout.py does, onto the client Docs."""
        for effect in effects:
            for client in self.clients:
                if reaches(self.room, effect, client.session):
                    assert isinstance(effect, Send | Broadcast)
                    client.received.append(effect.data)
                    for update in updates_in(effect.data):
                        client.doc.apply_update(update)


def local_edit(client: Client, change: Change) -> bytes:
    """Make ``change`` in one transaction of the client's Doc; return its update."""
    before = client.doc.get_state()
    with client.doc.transaction():
        change(client.doc)
    return client.doc.get_update(before)


def reaches(room: Room, effect: Effect, session: Session) -> bool:
    """Whether ``effect`` writes to ``session`` (gateway/fanout.py ``Fanout.execute``)."""
    if isinstance(effect, Send):
        return effect.session is session
    if isinstance(effect, Broadcast):
        return (
            session.id in room.members
            and session is not effect.exclude
            and (session.live or not effect.live_only)
            and (session.receives_awareness or not effect.awareness)
        )
    return False


# -- edits ----------------------------------------------------------------------------------------


def core(doc: Doc[Any]) -> Map[Any]:
    root: Map[Any] = doc.get("core", type=Map)
    return root


def timeline(doc: Doc[Any]) -> Array[Any]:
    root: Array[Any] = doc.get("timeline", type=Array)
    return root


def entry(doc: Doc[Any], entry_id: str) -> Map[Any]:
    (found,) = [e for e in timeline(doc) if isinstance(e, Map) and e.get("id") == entry_id]
    return found


def index_of(doc: Doc[Any], entry_id: str) -> int:
    ids = [e.get("id") if isinstance(e, Map) else None for e in timeline(doc)]
    return ids.index(entry_id)


@dataclass(frozen=True)
class Nested:
    """A shared type to write as a value, made anew for each edit (pycrdt consumes a
    preliminary type when it is inserted)."""

    kind: Callable[[Any], Any]
    content: Any

    def make(self) -> Any:
        return self.kind(self.content)


def value_of(value: Any) -> Any:
    return value.make() if isinstance(value, Nested) else value


def set_core(key: str, value: Any) -> Change:
    def change(doc: Doc[Any]) -> None:
        core(doc)[key] = value_of(value)

    return change


def delete_core(key: str) -> Change:
    def change(doc: Doc[Any]) -> None:
        del core(doc)[key]

    return change


def set_entry(entry_id: str, key: str, value: Any) -> Change:
    def change(doc: Doc[Any]) -> None:
        entry(doc, entry_id)[key] = value_of(value)

    return change


def delete_entry_key(entry_id: str, key: str) -> Change:
    def change(doc: Doc[Any]) -> None:
        del entry(doc, entry_id)[key]

    return change


def append(value: Any) -> Change:
    def change(doc: Doc[Any]) -> None:
        timeline(doc).append(value_of(value))

    return change


def add_entry(entry_id: str, **keys: Any) -> Change:
    """Append a valid entry (unless ``keys`` break it); None in ``keys`` leaves a key out."""
    values = {"id": entry_id, "title": entry_id.title(), "start": "20:00", **keys}

    def change(doc: Doc[Any]) -> None:
        # a new Map each time: pycrdt consumes a preliminary Map when it is inserted
        timeline(doc).append(Map({k: value_of(v) for k, v in values.items() if v is not None}))

    return change


def delete_entry(entry_id: str) -> Change:
    def change(doc: Doc[Any]) -> None:
        del timeline(doc)[index_of(doc, entry_id)]

    return change


def together(*changes: Change) -> Change:
    """Several changes in one transaction (one update)."""

    def change(doc: Doc[Any]) -> None:
        for one in changes:
            one(doc)

    return change


# -- what every refused and accepted change must look like ---------------------------------------


def refused(
    role: Role | Grant,
    change: Change,
    *,
    field: str,
    marker: str | None = None,
    rejects: bool = True,
    wedding: Wedding | None = None,
) -> tuple[Wedding, Client, Result]:
    """Send ``change`` from a client of ``role``; check that it was refused and undone."""
    wedding = wedding or Wedding()
    sender = wedding.join(role, rejects=rejects)
    observer = wedding.join(Role.PLANNER)
    before = state(wedding.room.doc)
    result = wedding.edit(sender, change)
    assert_refused(wedding, sender, result, before=before, field=field, marker=marker)
    assert state(observer.doc) == before
    return wedding, sender, result


def assert_refused(
    wedding: Wedding,
    sender: Client,
    result: Result,
    *,
    before: dict[str, Any],
    field: str,
    marker: str | None = None,
) -> None:
    # (a) the room holds the document without the refused change
    assert state(wedding.room.doc) == before
    # (b) the sender got the compensation too (not excluded) and converged to the room's state
    assert result.broadcast.exclude is None
    assert state(sender.doc) == state(wedding.room.doc)
    # (c) the refused value left the room in no message and in no stored update
    if marker is not None:
        assert marker.encode() in result.update  # the client did send it
        for data in result.shared:
            assert marker.encode() not in data
    assert result.persisted.author == sender.session.grant.author
    # (d) REJECT names the field, for a sender that opted in; nothing extra for the others
    sent = [e for e in result.effects if isinstance(e, Send)]
    if sender.session.wants_rejects:
        assert field in [r.field for r in sender.rejects]
        assert {r.seq for r in sender.rejects} == {sender.session.seq}
        assert all(r.reason for r in sender.rejects)
    else:
        assert sent == []
        assert sender.rejects == []


def accepted(
    role: Role | Grant, change: Change, *, fields: tuple[str, ...] | None
) -> tuple[Wedding, Client, Result]:
    """Send ``change`` from a client of ``role``; check that it was shared and stored."""
    wedding = Wedding()
    sender = wedding.join(role, rejects=True)
    observer = wedding.join(Role.PLANNER)
    before = state(wedding.room.doc)
    stored = wedding.room.doc.get_update()
    result = wedding.edit(sender, change)
    assert_shared(result, sender, stored=stored, room=wedding.room)
    if fields is not None:
        assert result.persisted.fields == fields
    assert sender.rejects == []
    assert state(wedding.room.doc) != before
    assert state(wedding.room.doc) == state(sender.doc) == state(observer.doc)
    return wedding, sender, result


def assert_shared(result: Result, sender: Client, *, stored: bytes, room: Room) -> None:
    """The accepted update is what the room broadcast, published and persisted: the client's
    own bytes, or (a role that may not write everything) what the room's Doc gained."""
    persisted = result.persisted
    data = codec.encode(SyncUpdate(persisted.update or b""))
    broadcast = Broadcast(data, exclude=result.broadcast.exclude, update=persisted.update)
    assert result.effects[:2] == [broadcast, Publish(data, result.broadcast.exclude)]
    if result.broadcast.exclude is sender.session:
        assert persisted.update == result.update
    else:
        assert result.broadcast.exclude is None  # the sender's copy is the room's
    assert persisted.author == sender.session.grant.author
    replayed: Doc[Any] = Doc()  # the store's log replays to the room's document
    replayed.apply_update(stored)
    replayed.apply_update(persisted.update or b"")
    assert state(replayed) == state(room.doc)


# -- roles (gateway/core/policy.py RIGHTS) --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    change: Change
    field: str
    """What REJECT names when refused, and the audit's field when accepted."""
    refused_for: tuple[Role, ...]
    marker: str | None = None
    """A refused value's bytes, absent from everything the room shares."""


ROLE_CASES = {
    "set a core field": Case(
        set_core("wedding_date", "2099-01-01"),
        "core.wedding_date",
        (Role.VENDOR, Role.VIEWER),
        "2099-01-01",
    ),
    "add a core field": Case(
        set_core("notes", "Cake at 14:00"), "core.notes", (Role.VENDOR, Role.VIEWER), "Cake at"
    ),
    "delete an optional core field": Case(
        delete_core("venue"), "core.venue", (Role.VENDOR, Role.VIEWER)
    ),
    "add an entry without vendor": Case(
        add_entry("cake", title="Cake cutting"),
        "timeline[cake]",
        (Role.VENDOR, Role.VIEWER),
        "Cake cutting",
    ),
    "add an entry with the vendor's own id": Case(
        add_entry("cake", title="Cake cutting", vendor_id=VENDOR),
        "timeline[cake]",
        (Role.VIEWER,),
        "Cake cutting",
    ),
    "add an entry with another vendor's id": Case(
        add_entry("cake", title="Cake cutting", vendor_id=OTHER_VENDOR),
        "timeline[cake]",
        (Role.VENDOR, Role.VIEWER),
        "Cake cutting",
    ),
    "edit the vendor's own entry": Case(
        set_entry("dinner", "notes", "Two vegan menus"),
        "timeline[dinner].notes",
        (Role.VIEWER,),
        "vegan",
    ),
    "edit another vendor's entry": Case(
        set_entry("photos", "notes", "Golden hour"),
        "timeline[photos].notes",
        (Role.VENDOR, Role.VIEWER),
        "Golden hour",
    ),
    "edit an entry without vendor": Case(
        set_entry("ceremony", "location", "Rose garden"),
        "timeline[ceremony].location",
        (Role.VENDOR, Role.VIEWER),
        "Rose garden",
    ),
    "delete a key of the vendor's own entry": Case(
        delete_entry_key("dinner", "end"), "timeline[dinner].end", (Role.VIEWER,)
    ),
    "hand the vendor's own entry to another vendor": Case(
        set_entry("dinner", "vendor_id", OTHER_VENDOR),
        "timeline[dinner].vendor_id",
        (Role.VENDOR, Role.VIEWER),
        OTHER_VENDOR,
    ),
    "drop the vendor_id of the vendor's own entry": Case(
        delete_entry_key("dinner", "vendor_id"),
        "timeline[dinner].vendor_id",
        (Role.VENDOR, Role.VIEWER),
    ),
    "take an entry without vendor": Case(
        set_entry("ceremony", "vendor_id", VENDOR),
        "timeline[ceremony].vendor_id",
        (Role.VENDOR, Role.VIEWER),
        VENDOR,
    ),
    "take another vendor's entry": Case(
        set_entry("photos", "vendor_id", VENDOR),
        "timeline[photos].vendor_id",
        (Role.VENDOR, Role.VIEWER),
        VENDOR,
    ),
}
DELETE_CASES = {
    "delete the vendor's own entry": Case(
        delete_entry("dinner"), "timeline[dinner]", (Role.VIEWER,)
    ),
    "delete another vendor's entry": Case(
        delete_entry("photos"), "timeline[photos]", (Role.VENDOR, Role.VIEWER)
    ),
    "delete an entry without vendor": Case(
        delete_entry("ceremony"), "timeline[ceremony]", (Role.VENDOR, Role.VIEWER)
    ),
}


def role_cases(cases: dict[str, Case]) -> list[Any]:
    return [
        pytest.param(role, case, id=f"{role}-{'no' if role in case.refused_for else 'ok'}-{name}")
        for name, case in cases.items()
        for role in Role
    ]


@pytest.mark.parametrize(("role", "case"), role_cases(ROLE_CASES))
def test_each_role_writes_what_the_policy_table_allows(role: Role, case: Case) -> None:
    if role in case.refused_for:
        refused(role, case.change, field=case.field, marker=case.marker)
    else:
        accepted(role, case.change, fields=(case.field,))


@pytest.mark.parametrize(("role", "case"), role_cases(DELETE_CASES))
def test_each_role_deletes_the_entries_the_policy_table_allows(role: Role, case: Case) -> None:
    if role in case.refused_for:
        # the entry is put back where it was, as it was
        refused(role, case.change, field=case.field)
    else:
        accepted(role, case.change, fields=(case.field,))


def test_a_vendor_may_delete_its_own_entries_and_no_other_in_one_update() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    result = wedding.edit(vendor, lambda doc: timeline(doc).clear())
    assert [e["id"] for e in state(wedding.room.doc)["timeline"]] == ["ceremony", "photos"]
    assert state(vendor.doc) == state(wedding.room.doc)
    assert [r.field for r in vendor.rejects] == ["timeline[ceremony]", "timeline[photos]"]
    assert result.persisted.fields == ("timeline[dinner]",)


def test_a_viewer_clearing_the_timeline_gets_every_entry_back_in_order() -> None:
    wedding = Wedding()
    refused(
        Role.VIEWER, lambda doc: timeline(doc).clear(), field="timeline[dinner]", wedding=wedding
    )
    assert [e["id"] for e in state(wedding.room.doc)["timeline"]] == [
        "ceremony",
        "dinner",
        "photos",
    ]


def test_a_vendor_replacing_another_vendors_entry_keeps_both() -> None:
    def replace(doc: Doc[Any]) -> None:
        delete_entry("photos")(doc)
        timeline(doc).insert(2, Map({"id": "cake", "title": "Cake", "start": "20:00"}))
        entry(doc, "cake")["vendor_id"] = VENDOR

    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    result = wedding.edit(vendor, replace)
    ids = [e["id"] for e in state(wedding.room.doc)["timeline"]]
    assert ids == ["ceremony", "dinner", "photos", "cake"]
    assert state(vendor.doc) == state(wedding.room.doc)
    assert [r.field for r in vendor.rejects] == ["timeline[photos]"]
    assert result.persisted.fields == ("timeline[cake]",)


@pytest.mark.parametrize(
    ("role", "change", "fields"),
    [
        (
            Role.VENDOR,
            together(
                lambda doc: timeline(doc).insert(
                    0, Map({"id": "x", "title": "X", "start": "10:00"})
                ),
                set_entry("photos", "notes", "Golden hour"),
            ),
            ["timeline[x]", "timeline[photos].notes"],
        ),
        (
            Role.VIEWER,
            together(lambda doc: timeline(doc).__delitem__(0), set_entry("photos", "notes", "N")),
            ["timeline[ceremony]", "timeline[photos].notes"],
        ),
        (
            Role.VIEWER,
            together(set_entry("photos", "notes", "N"), delete_entry("photos")),
            ["timeline[photos]"],
        ),
        (
            Role.VIEWER,
            together(
                lambda doc: timeline(doc).insert(
                    1, Map({"id": "y", "title": "Y", "start": "10:00"})
                ),
                lambda doc: timeline(doc).__delitem__(0),
                lambda doc: timeline(doc).insert(
                    0, Map({"id": "z", "title": "Z", "start": "10:00"})
                ),
                set_entry("photos", "title", ""),
            ),
            ["timeline[ceremony]", "timeline[z]", "timeline[y]", "timeline[photos].title"],
        ),
    ],
    ids=["insert-and-edit", "delete-and-edit", "edit-and-delete", "insert-delete-edit"],
)
def test_refused_moves_and_edits_of_one_update_are_all_undone(
    role: Role, change: Change, fields: list[str]
) -> None:
    _, sender, _ = refused(role, change, field=fields[0])
    assert sorted(r.field for r in sender.rejects) == sorted(fields)


def move_to_front(entry_id: str) -> Change:
    """Move an entry the only way a Y.Array allows: delete it and insert a copy."""

    def change(doc: Doc[Any]) -> None:
        plain = entry(doc, entry_id).to_py()
        delete_entry(entry_id)(doc)
        timeline(doc).insert(0, Map(plain))

    return change


def replace_entry(entry_id: str, **keys: Any) -> Change:
    def change(doc: Doc[Any]) -> None:
        plain = {**(entry(doc, entry_id).to_py() or {}), **keys}
        index = index_of(doc, entry_id)
        del timeline(doc)[index]
        timeline(doc).insert(index, Map(plain))

    return change


@pytest.mark.parametrize(
    ("role", "change", "ids"),
    [
        (Role.PLANNER, move_to_front("photos"), ["photos", "ceremony", "dinner"]),
        (Role.VENDOR, move_to_front("dinner"), ["dinner", "ceremony", "photos"]),
        (Role.COUPLE, replace_entry("dinner", start="20:00"), ["ceremony", "dinner", "photos"]),
    ],
    ids=["planner-moves", "vendor-moves-its-own", "couple-replaces"],
)
@pytest.mark.parametrize("earlier", [False, True], ids=["first-edit", "after-an-insert"])
def test_moving_or_replacing_an_entry_keeps_it(
    role: Role, change: Change, ids: list[str], earlier: bool
) -> None:
    wedding = Wedding()
    sender = wedding.join(role, rejects=True)
    observer = wedding.join(Role.VIEWER)
    if earlier:  # an accepted timeline update first: the room knows the entry ids from then on
        wedding.edit(sender, add_entry("cake", vendor_id=VENDOR))
        ids = [*ids, "cake"]
    result = wedding.edit(sender, change)
    assert sender.rejects == []
    assert [e["id"] for e in state(wedding.room.doc)["timeline"]] == ids
    assert len(result.persisted.fields) == 2
    assert state(sender.doc) == state(observer.doc) == state(wedding.room.doc)


def two_entries_with_one_id(doc: Doc[Any]) -> None:
    add_entry("toast")(doc)
    add_entry("toast", title="Second toast")(doc)


def entries_kept_of_two_with_one_id(*, earlier: bool) -> tuple[list[str], list[str]]:
    """(REJECT fields, ids in the room) after one update adding two entries "toast"."""
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER, rejects=True)
    if earlier:  # an accepted timeline update first: the room knows the entry ids from then on
        wedding.edit(planner, add_entry("cake"))
    wedding.edit(planner, two_entries_with_one_id)
    assert state(planner.doc) == state(wedding.room.doc)
    ids = [e["id"] for e in state(wedding.room.doc)["timeline"] if e["id"] != "cake"]
    return [r.field for r in planner.rejects], ids


def test_two_new_entries_with_one_id_keep_at_most_one() -> None:
    for earlier in (False, True):
        refusals, ids = entries_kept_of_two_with_one_id(earlier=earlier)
        assert ids.count("toast") <= 1
        assert refusals.count("timeline[toast]") == 2 - ids.count("toast")


def from_a_peer(wedding: Wedding, change: Change) -> None:
    """Apply a change made on another node (trusted: the bus)."""
    peer: Doc[Any] = Doc(client_id=999)
    peer.apply_update(wedding.room.doc.get_update())
    before = peer.get_state()
    with peer.transaction():
        change(peer)
    update = peer.get_update(before)
    wedding.deliver(wedding.room.receive_from_peer(codec.encode(SyncUpdate(update))))


EARLIER_CHANGES: dict[str, Callable[[Wedding, Client, Client], object]] = {
    "nothing": lambda wedding, planner, vendor: None,
    "an accepted insert": lambda w, p, v: w.edit(p, add_entry("cake")),
    "a refused insert": lambda w, p, v: w.edit(v, add_entry("cake", vendor_id=OTHER_VENDOR)),
    "an accepted deletion": lambda w, p, v: w.edit(p, delete_entry("ceremony")),
    "a refused deletion": lambda w, p, v: w.edit(v, delete_entry("photos")),
    "a move": lambda w, p, v: w.edit(p, move_to_front("photos")),
    "an entry from a peer": lambda w, p, v: from_a_peer(w, add_entry("toast")),
    "a deletion from a peer": lambda w, p, v: from_a_peer(w, delete_entry("ceremony")),
}


@pytest.mark.parametrize("earlier", EARLIER_CHANGES.values(), ids=EARLIER_CHANGES)
@pytest.mark.parametrize("entry_id", ["dinner", "photos", "toast"])
def test_a_duplicate_id_is_refused_whatever_came_before(
    earlier: Callable[[Wedding, Client, Client], object], entry_id: str
) -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER, rejects=True)
    vendor = wedding.join(Role.VENDOR, rejects=True)
    earlier(wedding, planner, vendor)
    wedding.edit(planner, add_entry("toast"))  # absent until now, unless a peer added it
    present = [e["id"] for e in state(wedding.room.doc)["timeline"]]
    assert present.count(entry_id) == 1
    before = state(wedding.room.doc)
    rejected = len(planner.rejects)
    wedding.edit(planner, add_entry(entry_id, title="Again"))
    assert [r.field for r in planner.rejects[rejected:]] == [f"timeline[{entry_id}]"]
    assert state(wedding.room.doc) == state(planner.doc) == before


def test_a_vendor_moving_another_vendors_entry_is_refused() -> None:
    def move(doc: Doc[Any]) -> None:
        plain = entry(doc, "photos").to_py()
        delete_entry("photos")(doc)
        timeline(doc).insert(0, Map(plain))

    refused(Role.VENDOR, move, field="timeline[photos]")


# -- the schema (gateway/core/schema.py), for every role that may write -------------------------


@pytest.fixture(params=[True, False], ids=["rejects", "no-hello"])
def rejects(request: pytest.FixtureRequest) -> bool:
    """Whether the sender opted in to REJECT with HELLO (proto/spec.md §4.4)."""
    return bool(request.param)


SCHEMA_CASES = {
    # core: keys and types
    "core key not in the schema": (set_core("budget", "12000 EUR"), "core.budget", "12000 EUR"),
    "partner_a empty": (set_core("partner_a", ""), "core.partner_a", None),
    "partner_b too long": (set_core("partner_b", "B" * 201), "core.partner_b", "B" * 201),
    "partner_a a number": (set_core("partner_a", 7), "core.partner_a", None),
    "status not in the enum": (set_core("status", "eloped"), "core.status", "eloped"),
    "wedding_date not a real date": (
        set_core("wedding_date", "2027-02-30"),
        "core.wedding_date",
        "2027-02-30",
    ),
    "wedding_date not ISO": (set_core("wedding_date", "12/06/2027"), "core.wedding_date", "12/06"),
    "ceremony_time 24:00": (set_core("ceremony_time", "24:00"), "core.ceremony_time", "24:00"),
    "ceremony_time 7:30": (set_core("ceremony_time", "7:30"), "core.ceremony_time", None),
    "timezone not IANA": (set_core("timezone", "Mars/Olympus"), "core.timezone", "Mars/Olympus"),
    "venue empty": (set_core("venue", ""), "core.venue", None),
    "venue_address too long": (
        set_core("venue_address", "A" * 501),
        "core.venue_address",
        "A" * 501,
    ),
    "guest_count a fraction": (set_core("guest_count", 120.5), "core.guest_count", None),
    "guest_count a boolean": (set_core("guest_count", True), "core.guest_count", None),
    "guest_count negative": (set_core("guest_count", -1), "core.guest_count", None),
    "guest_count above 5000": (set_core("guest_count", 5001), "core.guest_count", None),
    "guest_count a string": (set_core("guest_count", "120 guests"), "core.guest_count", "guests"),
    "guest_count null": (set_core("guest_count", None), "core.guest_count", None),
    "notes too long": (set_core("notes", "N" * 5001), "core.notes", "N" * 5001),
    # core: nested shared types
    "core value a Y.Text": (
        set_core("notes", Nested(Text, "nested text")),
        "core.notes",
        "nested text",
    ),
    "core value a Y.Map": (
        set_core("venue", Nested(Map, {"name": "nested map"})),
        "core.venue",
        "nested map",
    ),
    "core value a Y.Array": (
        set_core("venue", Nested(Array, ["nested array"])),
        "core.venue",
        "nested array",
    ),
    # core: required keys
    "delete partner_a": (delete_core("partner_a"), "core.partner_a", None),
    "delete status": (delete_core("status"), "core.status", None),
    # timeline: elements
    "timeline element a string": (append("just a string"), "timeline[#3]", "just a string"),
    "timeline element a number": (append(42), "timeline[#3]", None),
    "timeline element a Y.Text": (
        append(Nested(Text, "a text entry")),
        "timeline[#3]",
        "a text entry",
    ),
    "timeline element a Y.Array": (append(Nested(Array, ["an array"])), "timeline[#3]", "an array"),
    # timeline: whole new entries
    "entry without id": (add_entry("cake", id=None, notes="no id"), "timeline[#3]", "no id"),
    "entry without title": (
        add_entry("cake", title=None, notes="untitled"),
        "timeline[cake]",
        None,
    ),
    "entry without start": (
        add_entry("cake", start=None, notes="unstarted"),
        "timeline[cake]",
        None,
    ),
    "entry with a bad id": (add_entry("cake 1", notes="spaced"), "timeline[#3]", "spaced"),
    "entry with a bad start": (add_entry("cake", start="8pm"), "timeline[cake]", "8pm"),
    "entry ending before it starts": (add_entry("cake", end="19:59"), "timeline[cake]", "19:59"),
    "entry with a key not in the schema": (
        add_entry("cake", price="90 EUR"),
        "timeline[cake]",
        "90 EUR",
    ),
    "entry with a nested Y.Text": (
        add_entry("cake", notes=Nested(Text, "nested notes")),
        "timeline[cake]",
        "nested notes",
    ),
    "entry with a duplicate id": (
        add_entry("dinner", title="Second dinner"),
        "timeline[dinner]",
        "Second dinner",
    ),
    # timeline: edits of an entry
    "entry key not in the schema": (
        set_entry("dinner", "price", "90 EUR"),
        "timeline[dinner].price",
        "90 EUR",
    ),
    "entry title too long": (
        set_entry("dinner", "title", "T" * 201),
        "timeline[dinner].title",
        "T" * 201,
    ),
    "entry start not HH:MM": (set_entry("dinner", "start", "7pm"), "timeline[dinner].start", "7pm"),
    "entry end 24:00": (set_entry("dinner", "end", "24:00"), "timeline[dinner].end", "24:00"),
    "entry end before its start": (
        set_entry("dinner", "end", "18:45"),
        "timeline[dinner].end",
        "18:45",
    ),
    "entry start after its end": (
        set_entry("dinner", "start", "21:45"),
        "timeline[dinner].start",
        "21:45",
    ),
    "entry vendor_id not an id": (
        set_entry("ceremony", "vendor_id", "the florist"),
        "timeline[ceremony].vendor_id",
        "the florist",
    ),
    "entry location too long": (
        set_entry("dinner", "location", "L" * 201),
        "timeline[dinner].location",
        "L" * 201,
    ),
    "entry notes a number": (set_entry("dinner", "notes", 3), "timeline[dinner].notes", None),
    "entry value a Y.Text": (
        set_entry("dinner", "notes", Nested(Text, "nested notes")),
        "timeline[dinner].notes",
        "nested notes",
    ),
    "entry value a Y.Map": (
        set_entry("dinner", "location", Nested(Map, {"room": "nested room"})),
        "timeline[dinner].location",
        "nested room",
    ),
    "delete an entry's title": (
        delete_entry_key("dinner", "title"),
        "timeline[dinner].title",
        None,
    ),
    "delete an entry's start": (
        delete_entry_key("dinner", "start"),
        "timeline[dinner].start",
        None,
    ),
}


@pytest.mark.parametrize("role", WRITERS)
@pytest.mark.parametrize(("change", "field", "marker"), SCHEMA_CASES.values(), ids=SCHEMA_CASES)
def test_a_change_that_breaks_the_schema_is_refused_for_every_role(
    role: Role, change: Change, field: str, marker: str | None, rejects: bool
) -> None:
    refused(role, change, field=field, marker=marker, rejects=rejects)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (set_entry("dinner", "end", "18:45"), "timeline[dinner].end"),
        (set_entry("dinner", "notes", "N" * 2001), "timeline[dinner].notes"),
        (set_entry("dinner", "price", "90 EUR"), "timeline[dinner].price"),
        (add_entry("cake", vendor_id=VENDOR, end="19:00"), "timeline[cake]"),
        (add_entry("dinner", vendor_id=VENDOR), "timeline[dinner]"),  # a duplicate id
        (delete_entry_key("dinner", "title"), "timeline[dinner].title"),
    ],
)
def test_the_schema_binds_a_vendor_in_its_own_entries(change: Change, field: str) -> None:
    refused(Role.VENDOR, change, field=field)


@pytest.mark.parametrize(
    "change",
    [set_entry("dinner", "id", "supper"), delete_entry_key("dinner", "id")],
    ids=["changed", "deleted"],
)
def test_an_entrys_id_never_changes(change: Change) -> None:
    wedding = Wedding()
    sender = wedding.join(Role.PLANNER, rejects=True)
    before = state(wedding.room.doc)
    result = wedding.edit(sender, change)
    assert state(wedding.room.doc) == before
    assert state(sender.doc) == before
    assert all(b"supper" not in data for data in result.shared)
    (reject,) = sender.rejects
    assert reject.field == "timeline[dinner].id"
    assert reject.reason == "an entry's id never changes"


def test_moving_both_ends_of_an_entry_is_judged_on_the_result() -> None:
    later = together(set_entry("dinner", "start", "22:00"), set_entry("dinner", "end", "23:00"))
    _, _, result = accepted(Role.PLANNER, later, fields=None)
    assert sorted(result.persisted.fields) == ["timeline[dinner].end", "timeline[dinner].start"]
    inverted = together(set_entry("dinner", "start", "22:00"), set_entry("dinner", "end", "21:45"))
    _, sender, _ = refused(Role.PLANNER, inverted, field="timeline[dinner].end", marker="21:45")
    assert [r.field for r in sender.rejects] == ["timeline[dinner].start", "timeline[dinner].end"]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (delete_core("venue"), ("core.venue",)),
        (delete_entry_key("dinner", "end"), ("timeline[dinner].end",)),
        (set_core("guest_count", 5000.0), ("core.guest_count",)),
        (set_core("guest_count", 0), ("core.guest_count",)),
        (set_core("wedding_date", "2028-02-29"), ("core.wedding_date",)),
        (set_core("ceremony_time", "23:59"), ("core.ceremony_time",)),
        (set_core("timezone", "America/New_York"), ("core.timezone",)),
        (set_core("notes", ""), ("core.notes",)),
        (set_entry("dinner", "end", "19:00"), ("timeline[dinner].end",)),  # equal to its start
        (add_entry("cake", end="20:00", location="", notes=""), ("timeline[cake]",)),
    ],
)
def test_a_change_within_the_schema_is_accepted(change: Change, fields: tuple[str, ...]) -> None:
    accepted(Role.PLANNER, change, fields=fields)


# -- a new wedding --------------------------------------------------------------------------------


def test_a_first_core_update_without_the_required_fields_is_refused(rejects: bool) -> None:
    wedding = Wedding(created=False)
    _, sender, _ = refused(
        Role.PLANNER,
        set_core("venue", "Quinta da Regaleira"),
        field="core.venue",
        marker="Regaleira",
        rejects=rejects,
        wedding=wedding,
    )
    assert state(wedding.room.doc) == {"core": {}, "timeline": []}
    if rejects:
        assert "partner_a" in sender.rejects[0].reason


def test_a_first_core_update_with_the_required_fields_creates_the_wedding() -> None:
    wedding = Wedding(created=False)
    planner = wedding.join(Role.PLANNER)
    created = {"partner_a": "Ana", "partner_b": "Bea", "status": "planning"}
    result = wedding.edit(planner, lambda doc: core(doc).update({**created, "venue": "Quinta"}))
    assert sorted(result.persisted.fields) == [
        "core.partner_a",
        "core.partner_b",
        "core.status",
        "core.venue",
    ]
    assert state(wedding.room.doc)["core"] == {**created, "venue": "Quinta"}


def test_a_first_core_update_with_an_invalid_required_field_is_refused_whole() -> None:
    wedding = Wedding(created=False)
    bad = {"partner_a": "Ana Marker", "partner_b": "Bea", "status": "eloped"}
    _, sender, _ = refused(
        Role.COUPLE,
        lambda doc: core(doc).update(bad),
        field="core.status",
        marker="Ana Marker",
        wedding=wedding,
    )
    assert sorted(r.field for r in sender.rejects) == [
        "core.partner_a",
        "core.partner_b",
        "core.status",
    ]
    assert state(wedding.room.doc)["core"] == {}


# -- mixed updates and later updates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed", "forbidden", "field", "kept"),
    [
        (
            Role.PLANNER,
            set_core("venue", "Quinta da Pena"),
            set_core("guest_count", 120.5),
            "core.guest_count",
            "core.venue",
        ),
        (
            Role.COUPLE,
            set_entry("dinner", "notes", "Two vegan menus"),
            set_entry("dinner", "end", "18:00"),
            "timeline[dinner].end",
            "timeline[dinner].notes",
        ),
        (
            Role.VENDOR,
            set_entry("dinner", "notes", "Two vegan menus"),
            set_entry("photos", "notes", "Golden hour"),
            "timeline[photos].notes",
            "timeline[dinner].notes",
        ),
        (
            Role.VENDOR,
            add_entry("cake", vendor_id=VENDOR),
            delete_entry("photos"),
            "timeline[photos]",
            "timeline[cake]",
        ),
        (
            Role.VENDOR,
            delete_entry("dinner"),
            set_core("venue", "Quinta da Pena"),
            "core.venue",
            "timeline[dinner]",
        ),
        (
            Role.SERVICE,
            add_entry("cake"),
            add_entry("toast", start="7pm"),
            "timeline[toast]",
            "timeline[cake]",
        ),
    ],
)
def test_a_mixed_update_keeps_its_allowed_change(
    role: Role, allowed: Change, forbidden: Change, field: str, kept: str
) -> None:
    wedding = Wedding()
    sender = wedding.join(role, rejects=True)
    observer = wedding.join(Role.VIEWER)
    alone: Doc[Any] = Doc()  # the document with the allowed change only
    alone.apply_update(wedding.room.doc.get_update())
    with alone.transaction():
        allowed(alone)
    result = wedding.edit(sender, together(allowed, forbidden))
    assert state(wedding.room.doc) == state(alone)
    assert state(sender.doc) == state(observer.doc) == state(alone)
    assert [r.field for r in sender.rejects] == [field]
    assert result.persisted.fields == (kept,)
    assert result.broadcast.exclude is None


def test_a_vendors_allowed_edits_go_through_after_a_refused_one() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    observer = wedding.join(Role.PLANNER)
    wedding.edit(vendor, set_entry("photos", "notes", "Golden hour"))
    assert len(vendor.rejects) == 1
    stored = wedding.room.doc.get_update()
    result = wedding.edit(vendor, set_entry("dinner", "notes", "Two vegan menus"))
    assert_shared(result, vendor, stored=stored, room=wedding.room)
    assert result.persisted.fields == ("timeline[dinner].notes",)
    assert result.persisted.seq == 2
    assert len(vendor.rejects) == 1
    assert entry(wedding.room.doc, "dinner")["notes"] == "Two vegan menus"
    assert state(vendor.doc) == state(observer.doc) == state(wedding.room.doc)


def test_a_vendors_edit_made_before_the_compensation_arrived_goes_through() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    observer = wedding.join(Role.PLANNER)
    forbidden = local_edit(vendor, set_entry("photos", "notes", "Golden hour"))
    allowed = local_edit(vendor, set_entry("dinner", "notes", "Two vegan menus"))  # in flight
    wedding.send(vendor, forbidden)
    result = wedding.send(vendor, allowed)
    assert result.persisted.fields == ("timeline[dinner].notes",)
    assert [r.seq for r in vendor.rejects] == [1]
    assert entry(wedding.room.doc, "dinner")["notes"] == "Two vegan menus"
    assert "notes" not in entry(wedding.room.doc, "photos")
    assert state(vendor.doc) == state(observer.doc) == state(wedding.room.doc)


def test_a_vendors_own_entry_added_after_a_refused_one_is_accepted() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    wedding.edit(vendor, add_entry("flowers", vendor_id=OTHER_VENDOR))
    result = wedding.edit(vendor, add_entry("cake", vendor_id=VENDOR))
    assert result.persisted.fields == ("timeline[cake]",)
    ids = [e["id"] for e in state(wedding.room.doc)["timeline"]]
    assert ids == ["ceremony", "dinner", "photos", "cake"]
    assert state(vendor.doc) == state(wedding.room.doc)


# -- REJECT ---------------------------------------------------------------------------------------


def test_reject_carries_the_seq_of_the_refused_message() -> None:
    wedding = Wedding()
    viewer = wedding.join(Role.VIEWER)
    wedding.edit(viewer, set_core("venue", "Barn"))  # seq 1, before HELLO: no REJECT
    assert viewer.rejects == []
    wedding.deliver(wedding.room.receive(viewer.session, Hello(1, Feature.REJECTS)))
    wedding.edit(viewer, set_core("venue", "Hall"), message=SyncStep2)  # seq 2
    assert [(r.seq, r.field) for r in viewer.rejects] == [(2, "core.venue")]
    assert viewer.rejects[0].reason == "role viewer may not write core fields"


def test_a_viewers_sync_step2_with_changes_is_refused_like_an_update() -> None:
    wedding = Wedding()
    viewer = wedding.join(Role.VIEWER, rejects=True)
    before = state(wedding.room.doc)
    result = wedding.edit(viewer, set_core("venue", "Offline edit"), message=SyncStep2)
    assert_refused(wedding, viewer, result, before=before, field="core.venue", marker="Offline")


def test_a_viewer_relaying_what_the_room_has_is_not_refused() -> None:
    wedding = Wedding()
    viewer = wedding.join(Role.VIEWER, rejects=True)
    assert wedding.send(viewer, wedding.room.doc.get_update()).effects == []
    assert wedding.room.refusals == 0


def test_rejects_of_one_update_are_capped_and_count_the_rest() -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER, rejects=True)
    result = wedding.edit(planner, lambda doc: core(doc).update({f"x{i}": i for i in range(40)}))
    assert len(planner.rejects) == MAX_REJECTS
    assert planner.rejects[-1].reason.endswith(f"(and {40 - MAX_REJECTS} more refused changes)")
    assert [e for e in result.effects if isinstance(e, Send)][-1].data == codec.encode(
        planner.rejects[-1]
    )
    assert wedding.room.refusals == 40
    assert state(wedding.room.doc)["core"] == CORE


def test_a_root_not_in_the_schema_closes_the_connection() -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER)
    update = local_edit(planner, lambda doc: doc.get("guests", type=Map).update({"Ana": "yes"}))
    with pytest.raises(ProtocolError, match="root 'guests' is not in the schema"):
        wedding.send(planner, update)
    assert state(wedding.room.doc) == state(Wedding().room.doc)


# -- nested values from before enforcement ---------------------------------------------------------


def with_nested_values() -> bytes:
    """History from before enforcement: a Y.Text in core.notes and in the dinner's notes."""
    doc: Doc[Any] = Doc(client_id=5)
    doc.apply_update(WEDDING)
    before = doc.get_state()
    with doc.transaction():
        core(doc)["notes"] = Text("Cake at 14:00")
        entry(doc, "dinner")["notes"] = Text("Two vegan menus")
    return doc.get_update(before)


@pytest.mark.parametrize(
    ("change", "field", "where"),
    [
        (lambda doc: core(doc)["notes"].insert(0, "Secret "), "core.notes", "core"),
        (
            lambda doc: entry(doc, "dinner")["notes"].insert(0, "Secret "),
            "timeline[#1].notes",
            "dinner",
        ),
    ],
)
def test_an_edit_inside_a_nested_value_removes_the_value(
    change: Change, field: str, where: str
) -> None:
    wedding = Wedding([with_nested_values()])
    sender = wedding.join(Role.PLANNER, rejects=True)
    observer = wedding.join(Role.VIEWER)
    result = wedding.edit(sender, change)
    # a deep change names the entry by its index: no snapshot of it is taken
    assert field in [r.field for r in sender.rejects]
    holder = core(wedding.room.doc) if where == "core" else entry(wedding.room.doc, "dinner")
    assert "notes" not in holder
    assert state(sender.doc) == state(observer.doc) == state(wedding.room.doc)
    assert all(b"Secret" not in data for data in result.shared)


# -- awareness (RIGHTS[role].awareness) ------------------------------------------------------------


def awareness(client: Client, clock: int = 1, state: str = '{"name":"Ana"}') -> AwarenessUpdate:
    entries = [AwarenessEntry(client.doc.client_id, clock, state)]
    return AwarenessUpdate(codec.encode_awareness(entries))


def known_awareness(wedding: Wedding, client: Client) -> list[AwarenessEntry]:
    """The awareness entries QueryAwareness reports to ``client``."""
    (effect,) = wedding.room.receive(client.session, QueryAwareness())
    assert isinstance(effect, Send)
    message = codec.decode(effect.data)
    assert isinstance(message, AwarenessUpdate)
    return codec.decode_awareness(message.payload, max_entries=1 << 16)


@pytest.mark.parametrize("role", list(Role))
def test_every_role_but_the_service_receives_awareness(role: Role) -> None:
    session = Session(max_message_bytes=64)
    session.grant = GRANTS[role]
    assert session.receives_awareness is (role is not Role.SERVICE)


@pytest.mark.parametrize("role", [Role.COUPLE, Role.PLANNER, Role.VENDOR])
def test_awareness_of_a_publishing_role_reaches_everyone_but_a_service(role: Role) -> None:
    wedding = Wedding()
    sender = wedding.join(role)
    others = {other: wedding.join(other) for other in Role}
    message = awareness(sender)
    effects = wedding.room.receive(sender.session, message)
    data = codec.encode(message)
    broadcast = Broadcast(data, exclude=sender.session, live_only=False, awareness=True)
    assert effects == [broadcast, Publish(data)]
    reached = {other for other, c in others.items() if reaches(wedding.room, broadcast, c.session)}
    assert reached == {Role.COUPLE, Role.PLANNER, Role.VENDOR, Role.VIEWER}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SERVICE])
def test_awareness_of_a_role_that_may_not_publish_is_not_shared(role: Role, rejects: bool) -> None:
    wedding = Wedding()
    sender = wedding.join(role, rejects=rejects)
    planner = wedding.join(Role.PLANNER)
    effects = wedding.room.receive(sender.session, awareness(sender))
    if rejects:
        reason = f"role {role} may not publish awareness"
        assert effects == [Send(sender.session, codec.encode(Reject(0, "awareness", reason)))]
    else:
        assert effects == []
    assert known_awareness(wedding, planner) == []
    assert wedding.room.statistics().awareness_entries == 0
    assert wedding.room.leave(sender.session) == []  # it owns no entry to remove


def test_a_service_is_sent_no_awareness_when_joining_or_asking() -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER)
    wedding.room.receive(planner.session, awareness(planner))
    service = Session(max_message_bytes=LIMITS.max_message_bytes)
    service.grant = GRANTS[Role.SERVICE]
    step1 = Send(service, codec.encode(SyncStep1(wedding.room.doc.get_state())))
    assert wedding.room.join(service) == [step1]
    viewer = Session(max_message_bytes=LIMITS.max_message_bytes)
    viewer.grant = GRANTS[Role.VIEWER]
    assert len(wedding.room.join(viewer)) == 2  # step 1, then the awareness states
    wedding.room.receive(service, SyncStep1(b"\x00"))
    (answer,) = wedding.room.receive(service, QueryAwareness())
    assert answer == Send(service, codec.encode(AwarenessUpdate(codec.encode_awareness([]))))


def test_a_service_is_not_sent_awareness_changes_from_peers_or_leavers() -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER)
    service = wedding.join(Role.SERVICE)
    viewer = wedding.join(Role.VIEWER)
    wedding.room.receive(planner.session, awareness(planner))
    peer = codec.encode(AwarenessUpdate(codec.encode_awareness([AwarenessEntry(9, 1, "{}")])))
    (from_peer,) = wedding.room.receive_from_peer(peer)
    from_leaver, _ = wedding.room.leave(planner.session)
    for effect in (from_peer, from_leaver):
        assert isinstance(effect, Broadcast)
        assert effect.awareness
        assert not reaches(wedding.room, effect, service.session)
        assert reaches(wedding.room, effect, viewer.session)


def test_a_service_still_receives_document_updates() -> None:
    wedding = Wedding()
    planner = wedding.join(Role.PLANNER)
    service = wedding.join(Role.SERVICE)
    wedding.edit(planner, set_core("venue", "Quinta da Pena"))
    assert state(service.doc) == state(wedding.room.doc)
    assert core(service.doc)["venue"] == "Quinta da Pena"


# -- regressions: problems found while writing these tests ----------------------------------------


def test_an_edit_inside_a_nested_core_value_is_rejected_as_that_field_only() -> None:
    wedding = Wedding([with_nested_values()])
    sender = wedding.join(Role.PLANNER, rejects=True)
    wedding.edit(sender, lambda doc: core(doc)["notes"].insert(0, "Secret "))
    assert [r.field for r in sender.rejects] == ["core.notes"]


def test_a_refused_id_change_names_the_entry_by_its_real_id() -> None:
    refused(Role.PLANNER, set_entry("dinner", "id", "supper"), field="timeline[dinner].id")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.VENDOR])
def test_writes_into_a_refused_entry_are_not_shared(role: Role) -> None:
    wedding = Wedding()
    sender = wedding.join(role, rejects=True)
    observer = wedding.join(Role.PLANNER)
    added = local_edit(sender, add_entry("cake", vendor_id=OTHER_VENDOR))
    written = local_edit(sender, set_entry("cake", "notes", "payload"))  # sent before the answer
    wedding.send(sender, added)
    result = wedding.send(sender, written)  # into an entry the room has deleted: no event
    assert all(b"payload" not in data for data in result.shared)
    assert state(sender.doc) == state(observer.doc) == state(wedding.room.doc)


def test_a_viewers_write_into_a_deleted_entry_is_refused() -> None:
    wedding = Wedding()
    viewer = wedding.join(Role.VIEWER, rejects=True)
    planner = wedding.join(Role.PLANNER)
    write = local_edit(viewer, set_entry("photos", "notes", "payload"))
    wedding.edit(planner, delete_entry("photos"))
    result = wedding.send(viewer, write)
    assert all(b"payload" not in data for data in result.shared)
    assert len(viewer.rejects) == 1  # no event names the field: the room refuses the write
    assert state(viewer.doc) == state(planner.doc) == state(wedding.room.doc)


def test_a_deleted_entry_is_audited_by_its_id() -> None:
    accepted(Role.PLANNER, delete_entry("dinner"), fields=("timeline[dinner]",))


# -- a write into the deleted original of an entry put back (Enforcer.carry) ---------------------


def test_a_refused_deletion_keeps_a_concurrent_edit_of_the_entry() -> None:
    # the deletion is undone with a copy; the planner's edit, made on the original, is carried
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    planner = wedding.join(Role.PLANNER, rejects=True)
    observer = wedding.join(Role.COUPLE)
    edit = local_edit(planner, set_entry("photos", "notes", "Golden hour"))
    refusal = wedding.edit(vendor, delete_entry("photos"))  # refused: not its entry
    assert refusal.persisted.fields == ()
    result = wedding.send(planner, edit)
    assert entry(wedding.room.doc, "photos").get("notes") == "Golden hour"
    assert state(planner.doc) == state(observer.doc) == state(vendor.doc) == state(wedding.room.doc)
    assert result.persisted.fields == ("timeline[photos].notes",)
    assert planner.rejects == []
    log = [WEDDING, refusal.persisted.update, result.persisted.update]
    replica: Doc[Any] = Doc()
    for update in log:  # the store's log holds the carried write too
        replica.apply_update(update or b"")
    assert state(replica) == state(wedding.room.doc)


def test_a_write_made_on_the_put_back_entry_wins_over_one_carried_from_the_original() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR)
    planner = wedding.join(Role.PLANNER, rejects=True)
    couple = wedding.join(Role.COUPLE)
    late = local_edit(planner, set_entry("photos", "notes", "Old plan"))  # not yet sent
    wedding.edit(vendor, delete_entry("photos"))  # refused: a copy is put back
    wedding.edit(couple, set_entry("photos", "notes", "New plan"))  # on the copy: later
    result = wedding.send(planner, late)
    assert entry(wedding.room.doc, "photos").get("notes") == "New plan"
    assert state(planner.doc) == state(couple.doc) == state(wedding.room.doc)
    assert result.persisted.fields == ()


def test_a_carried_write_is_judged_as_any_write_of_the_entry() -> None:
    wedding = Wedding()
    vendor = wedding.join(Role.VENDOR, rejects=True)
    planner = wedding.join(Role.PLANNER, rejects=True)
    invalid = local_edit(planner, set_entry("photos", "start", "25:99"))
    foreign = local_edit(vendor, set_entry("photos", "title", "Mine now"))  # OTHER_VENDOR's
    wedding.edit(vendor, delete_entry("photos"))  # refused: a copy is put back
    for client, update, label in [
        (planner, invalid, "timeline[photos].start"),
        (vendor, foreign, "timeline[photos].title"),
    ]:
        result = wedding.send(client, update)
        assert [r.field for r in client.rejects][-1] == label
        assert result.persisted.fields == ()
    photos = entry(wedding.room.doc, "photos")
    assert (photos.get("start"), photos.get("title")) == ("17:30", "Photos")
    assert state(planner.doc) == state(vendor.doc) == state(wedding.room.doc)


def test_two_new_entries_with_one_id_fare_the_same_whatever_the_room_judged_before() -> None:
    assert entries_kept_of_two_with_one_id(earlier=False) == entries_kept_of_two_with_one_id(
        earlier=True
    )


# -- a write hidden behind the room's undo (Enforcer.reassert) -----------------------------------


def join_as(wedding: Wedding, role: Role, client_id: int) -> Client:
    """A member of ``role`` whose Doc writes with ``client_id`` (Yjs orders concurrent writes
    of one key by client id)."""
    client = wedding.join(role)
    client.doc = Doc(client_id=client_id)
    client.doc.apply_update(wedding.room.doc.get_update())
    return client


def replayed(results: Sequence[Result]) -> dict[str, Any]:
    """The document the store's log holds: WEDDING, then what each result persisted."""
    doc: Doc[Any] = Doc()
    doc.apply_update(WEDDING)
    for result in results:
        doc.apply_update(result.persisted.update or b"")
    return state(doc)


@pytest.mark.parametrize("key", ["venue", "venue_address"], ids=["restored", "removed"])
@pytest.mark.parametrize("couple_id", [50, 950], ids=["couple-id-lower", "couple-id-higher"])
def test_a_couples_concurrent_write_wins_over_the_undo_of_a_refused_vendor_write(
    couple_id: int, key: str
) -> None:
    wedding = Wedding()
    vendor = join_as(wedding, Role.VENDOR, 900)
    couple = join_as(wedding, Role.COUPLE, couple_id)
    observer = join_as(wedding, Role.PLANNER, 10)  # a replica applying the room's broadcasts
    mine = local_edit(couple, set_core(key, "Couple venue"))  # on the state before the vendor's
    refusal = wedding.edit(vendor, set_core(key, "Vendor venue"))  # refused: undone
    assert refusal.persisted.fields == ()
    result = wedding.send(couple, mine)
    assert core(wedding.room.doc)[key] == "Couple venue"
    docs = [wedding.room.doc, couple.doc, vendor.doc, observer.doc]
    assert [state(doc) for doc in docs] == [state(wedding.room.doc)] * 4
    assert result.persisted.fields == (f"core.{key}",)
    assert result.persisted.author == couple.session.grant.author
    assert replayed([refusal, result]) == state(wedding.room.doc)
    if couple_id > 900:  # visible on arrival: shared as it came, nothing re-asserted
        assert result.persisted.update == mine
        assert result.broadcast.exclude is couple.session
    else:  # hidden behind the undo: the room writes it again, and everyone gets that
        assert result.persisted.update != mine
        assert result.broadcast.exclude is None


def test_a_couple_losing_to_another_couples_concurrent_write_is_not_reasserted() -> None:
    wedding = Wedding()
    higher = join_as(wedding, Role.COUPLE, 900)
    lower = join_as(wedding, Role.COUPLE, 50)
    mine = local_edit(lower, set_core("venue", "Lower venue"))
    wedding.edit(higher, set_core("venue", "Higher venue"))
    result = wedding.send(lower, mine)
    assert core(wedding.room.doc)["venue"] == "Higher venue"  # last writer wins by client id
    assert result.persisted.update == mine
    assert result.persisted.fields == ()
    assert state(lower.doc) == state(higher.doc) == state(wedding.room.doc)


def test_an_undo_restoring_another_couples_value_keeps_last_writer_wins() -> None:
    wedding = Wedding()
    higher = join_as(wedding, Role.COUPLE, 900)
    lower = join_as(wedding, Role.COUPLE, 50)
    vendor = join_as(wedding, Role.VENDOR, 950)
    mine = local_edit(lower, set_core("venue", "Lower venue"))  # concurrent with the higher's
    wedding.edit(higher, set_core("venue", "Higher venue"))
    wedding.edit(vendor, set_core("venue", "Vendor venue"))  # made on the higher's: undone
    result = wedding.send(lower, mine)
    # the lower couple's write was made on the old value, not on the one the undo restores
    assert core(wedding.room.doc)["venue"] == "Higher venue"
    assert result.persisted.update == mine
    assert state(lower.doc) == state(vendor.doc) == state(wedding.room.doc)


def test_a_write_hidden_behind_an_undo_is_reasserted_only_within_the_schema() -> None:
    wedding = Wedding()
    vendor = join_as(wedding, Role.VENDOR, 900)
    couple = join_as(wedding, Role.COUPLE, 50)
    mine = local_edit(couple, set_core("venue", "x" * 201))  # too long: hidden, and invalid
    wedding.edit(vendor, set_core("venue", "Vendor venue"))
    result = wedding.send(couple, mine)
    assert core(wedding.room.doc)["venue"] == CORE["venue"]
    assert result.persisted.fields == ()
    assert state(couple.doc) == state(wedding.room.doc)


def test_a_write_made_on_an_undo_of_an_undo_is_reasserted() -> None:
    wedding = Wedding()
    vendor = join_as(wedding, Role.VENDOR, 900)
    couple = join_as(wedding, Role.COUPLE, 50)
    mine = local_edit(couple, set_core("venue", "Couple venue"))
    wedding.edit(vendor, set_core("venue", "Vendor venue"))
    wedding.edit(vendor, set_core("venue", "Vendor venue again"))  # made on the first undo
    wedding.send(couple, mine)
    assert core(wedding.room.doc)["venue"] == "Couple venue"
    assert state(couple.doc) == state(vendor.doc) == state(wedding.room.doc)
