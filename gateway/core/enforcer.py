"""Role and schema enforcement on every client update (proto/spec.md §7, proto/schema.md).

A Yjs update cannot be dropped: its clocks are the writer's, and every later update of that
writer depends on them. So the room applies a client update, reads what it changed (pycrdt's
deep events on ``core`` and ``timeline``), and judges each change against the writer's grant and
the schema. A refused change is undone at once by a compensating transaction of the room's own
Doc: a refused value is put back (or removed), a refused entry deleted, a refused deletion
re-inserted. The room then shares ``Doc.get_update(state before)`` instead of the client's bytes:
yrs has garbage-collected the refused content by then, so only tombstones of it (clock ranges,
no values) reach the store and the other clients, and the writer itself converges to the state
without its refused change.

Events are read inside pycrdt's callbacks (an event's target may be gone after the transaction:
reading it later crashes the process) into plain snapshots; the callback never raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pycrdt import Array, Assoc, Doc, Map

from gateway.core import schema
from gateway.core.callbacks import weak_callback
from gateway.core.policy import Grant, Timeline
from gateway.core.update_check import ID, ContentRef, UpdateSummary
from gateway.core.update_reader import read_any_content
from gateway.errors import InvalidUpdate

MAX_SNAPSHOT_DEPTH = 4
MAX_UNDO_REFS = 64
"""Items an undo of one core key remembers standing for (refused writes, what they were made on)."""
MAX_MOVED = 256
"""Entries put back for refused deletions whose deleted original the room remembers (``carry``)."""
TIMELINE = 0  # first element of a timeline path in ``_Changes.deep`` (a core path starts with str)


class Unjudgeable(Exception):
    """pycrdt's events for an update could not be read (never seen; a safety net)."""


class Shared(NamedTuple):
    """A shared type found where the schema allows only plain values."""

    kind: str


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""A key that had no value (restore it by deleting the key)."""

Entry = dict[str, Any]
KeyChange = tuple[str, Any, Any]  # action ("add" | "update" | "delete"), old value, new value


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused change: ``field`` as ``core.venue`` or ``timeline[dinner].end``."""

    field: str
    reason: str


@dataclass(slots=True)
class Verdict:
    """What one client update changed, what of it was refused, and how to undo the refused."""

    fields: list[str] = field(default_factory=list)
    """Accepted changes (the audit's ``fields``)."""
    refusals: list[Refusal] = field(default_factory=list)
    core: dict[str, Any] = field(default_factory=dict)
    """core key -> value to put back (ABSENT: delete the key)."""
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    """timeline index (after the update) -> key -> value to put back."""
    removals: set[int] = field(default_factory=set)
    """Timeline indexes (after the update) of refused new entries."""
    reinsertions: list[tuple[int, int, Entry]] = field(default_factory=list)
    """(index after the update, order, entry) of refused deletions: entries to put back."""

    @property
    def compensates(self) -> bool:
        return bool(self.core or self.entries or self.removals or self.reinsertions)


@dataclass(frozen=True, slots=True)
class Undo:
    """A core value the room put back, still the key's visible value.

    ``refs``: the refused writes' items and the items they were made on (their origins). A
    client write of the key made on one of them was made on the state the undo restores."""

    value: Any
    refs: frozenset[ID]


@dataclass(slots=True)
class Moved:
    """The entry the room put back, as a copy, when a deletion of its original was refused."""

    entry_id: str
    values: Entry
    """What the copy holds from the room: a key still holding its value here was not written
    since (a write made on the copy wins over one carried from the original)."""


@dataclass(slots=True)
class _Changes:
    core: dict[str, KeyChange] = field(default_factory=dict)
    deltas: list[list[tuple[str, Any]]] = field(default_factory=list)
    entries: list[tuple[int, dict[str, KeyChange], Entry]] = field(default_factory=list)
    deep: list[list[Any]] = field(default_factory=list)
    unreadable: bool = False


class Enforcer:
    """Judges the changes of client updates to one room's Doc. Call it from the room's task."""

    __slots__ = (
        "__weakref__", "_before_ids", "_changes", "_ids", "_replaced", "_subscriptions",
        "_undoing", "core", "doc", "moved", "timeline", "undone",
    )  # fmt: skip

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.core: Map[Any] = doc.get("core", type=Map)
        self.timeline: Array[Any] = doc.get("timeline", type=Array)
        self._changes: _Changes | None = None  # None: not collecting (trusted updates)
        self._ids: Counter[Any] | None = None
        """The timeline's entry ids, kept current by judged updates (reading them from the Doc
        costs ~8 µs per entry); None after any other change of the timeline."""
        self._undoing = False
        self.undone: dict[str, Undo] = {}
        """core key -> the room's undo that is the key's visible value: no event for the key
        since the undo (any event drops it)."""
        self._replaced: dict[str, Undo] = {}
        """The undos the judged update's changes replaced (an undo of an undo keeps their refs)."""
        self.moved: dict[ID, Moved] = {}
        """The item of an entry whose refused deletion the room undid -> the copy put back."""
        self._before_ids: list[ID | None] | None = None
        """The items of the timeline's entries before the judged update (``entries_before``)."""
        self._subscriptions = [  # weakly: the Doc must not keep its Enforcer alive (callbacks.py)
            self.core.observe_deep(weak_callback(self._collect_core)),
            self.timeline.observe_deep(weak_callback(self._collect_timeline)),
        ]

    # -- collecting ------------------------------------------------------------------------------

    def start(self) -> None:
        """Collect the changes of the next transactions (one client update)."""
        self._changes = _Changes()

    def entries_before(self, grant: Grant | None = None) -> list[Entry]:
        """The timeline as plain entries: what a refused deletion puts back. For a writer that
        may not delete every entry, also which item each entry is: the room remembers the
        deleted original of an entry it puts back (``carry``)."""
        entries = [snapshot(entry) for entry in self.timeline]
        may_be_refused = grant is not None and grant.rights.timeline is not Timeline.ALL
        self._before_ids = _item_ids(self.timeline, len(entries)) if may_be_refused else None
        return entries

    def _collect_core(self, events: list[Any]) -> None:
        changes = self._changes
        if changes is None:
            if self.undone and not self._undoing:
                self._forget(events)  # a trusted change (or a re-assertion) of these keys
            return
        try:
            for event in events:
                path = list(event.path)
                if path:
                    changes.deep.append(path)
                else:
                    changes.core.update(_key_changes(event.keys))
        except BaseException:
            changes.unreadable = True

    def _forget(self, events: list[Any]) -> None:
        try:
            for event in events:
                path = list(event.path)
                for key in [path[0]] if path else list(event.keys):
                    self.undone.pop(key, None)
        except BaseException:
            self.undone.clear()  # unreadable: no undo is known to be visible any more

    def _collect_timeline(self, events: list[Any]) -> None:
        changes = self._changes
        if changes is None:
            if not self._undoing:
                self._ids = None  # a peer's or the store's change: ids unknown until read
            return
        try:
            for event in events:
                path = list(event.path)
                if not path:
                    changes.deltas.append(_delta(event.delta))
                elif len(path) == 1 and isinstance(path[0], int) and hasattr(event, "keys"):
                    entry = snapshot(event.target)
                    changes.entries.append((path[0], _key_changes(event.keys), entry))
                else:
                    changes.deep.append([TIMELINE, *path])
        except BaseException:
            changes.unreadable = True

    # -- judging ---------------------------------------------------------------------------------

    def judge(self, grant: Grant, before: list[Entry] | None) -> Verdict:
        """Judge the changes collected since ``start``; ``before``: the timeline before them
        (needed when the update deletes entries).

        Raises Unjudgeable when pycrdt's events could not be read: the change can be neither
        judged nor undone, so the room must be rebuilt from the store (which never saw it)."""
        changes, self._changes = self._changes, None
        verdict = Verdict()
        if changes is None:
            return verdict
        if changes.unreadable:
            raise Unjudgeable("the changes of the update could not be read")
        undone = self.undone
        self._replaced = {
            key: undone.pop(key)
            for key in [*changes.core, *(p[0] for p in changes.deep if isinstance(p[0], str))]
            if key in undone
        }
        self._judge_core(grant, changes.core, verdict)
        for delta in changes.deltas:
            self._judge_delta(grant, delta, before, verdict)
        for index, keys, entry in changes.entries:
            self._judge_entry(grant, index, keys, entry, verdict)
        for path in changes.deep:
            self._judge_deep(path, verdict)
        return verdict

    def _judge_core(self, grant: Grant, keys: dict[str, KeyChange], verdict: Verdict) -> None:
        accepted: dict[str, KeyChange] = {}
        for key, change in keys.items():
            reason = self._core_reason(grant, key, change)
            if reason is None:
                accepted[key] = change
            else:
                self._refuse_key(verdict, verdict.core, f"core.{key}", key, change, reason)
        if not accepted:
            return
        present = set(self.core.keys())
        for key, value in verdict.core.items():
            (present.discard if value is ABSENT else present.add)(key)
        missing = [key for key in schema.REQUIRED_CORE if key not in present]
        if present and missing:  # a new wedding's first update sets every required field
            reason = f"a wedding needs {', '.join(schema.REQUIRED_CORE)}; missing {missing[0]}"
            for key, change in accepted.items():
                self._refuse_key(verdict, verdict.core, f"core.{key}", key, change, reason)
            return
        verdict.fields.extend(f"core.{key}" for key in accepted)

    def _core_reason(self, grant: Grant, key: str, change: KeyChange) -> str | None:
        action, _, new = change
        if not grant.rights.core:
            return f"role {grant.role} may not write core fields"
        if action == "delete":
            rule = schema.CORE.get(key)
            return "is required and cannot be deleted" if rule and rule.required else None
        return schema.check_field(schema.CORE, key, new)

    def _judge_delta(
        self,
        grant: Grant,
        delta: list[tuple[str, Any]],
        before: list[Entry] | None,
        verdict: Verdict,
    ) -> None:
        rights = grant.rights.timeline
        old = new = 0  # positions in the timeline before and after the update
        # the ids the update did not add: the known ones less those of the entries it deleted
        # (a move deletes and re-inserts one id); else read after it, less what it inserted
        gone = _deleted_ids(delta, before)
        ids = self._ids
        if ids is not None and gone:
            ids = ids - gone
        elif gone is None:
            ids = None
        if ids is None and any(op == "insert" for op, _ in delta):
            inserted = Counter(
                _entry_id(item) for op, value in delta if op == "insert" for item in value
            )
            ids = Counter(_entry_id(e) for e in self.timeline) - inserted
        added: Counter[Any] = Counter()
        accepted: list[Any] = []
        for op, value in delta:
            if op == "retain":
                old += value
                new += value
            elif op == "insert":
                for item in value:
                    entry_id = _entry_id(item)
                    assert ids is not None
                    taken = ids[entry_id] + added[entry_id] > 0  # the first of one id is kept
                    added[entry_id] += 1
                    reason = _insert_reason(grant, item, taken)
                    label = _label(item, new)
                    if reason is None:
                        verdict.fields.append(label)
                        accepted.append(entry_id)
                    else:
                        verdict.refusals.append(Refusal(label, reason))
                        verdict.removals.add(new)
                    new += 1
            elif op == "delete":
                for k in range(value):
                    known = before is not None and old + k < len(before)
                    entry = before[old + k] if before is not None and known else None
                    label = _label(entry, old + k)
                    reason = _delete_reason(grant, rights, entry)
                    if reason is None:
                        verdict.fields.append(label)
                    elif entry is None:  # unknown content: nothing to put back
                        verdict.refusals.append(Refusal(label, reason))
                    else:
                        verdict.refusals.append(Refusal(label, reason))
                        verdict.reinsertions.append((new, old + k, entry))
                old += value
        if ids is not None:  # as the Doc holds them once the refused changes are undone
            ids.update(accepted)
            ids.update(_entry_id(entry) for _, _, entry in verdict.reinsertions)
            self._ids = ids
        else:
            self._ids = None  # which ids left is unknown (no snapshot): read them next time

    def _judge_entry(
        self,
        grant: Grant,
        index: int,
        keys: dict[str, KeyChange],
        entry: Entry,
        verdict: Verdict,
    ) -> None:
        # named by the id it had: a refused id change must not name the entry by the new one
        label = _label({"id": keys["id"][1]} if "id" in keys else entry, index)
        rights = grant.rights.timeline
        owner_reason: str | None = None
        if rights is Timeline.NONE:
            owner_reason = f"role {grant.role} may not write the timeline"
        elif rights is Timeline.OWN:
            before = keys["vendor_id"][1] if "vendor_id" in keys else entry.get("vendor_id")
            if before != grant.vendor_id or entry.get("vendor_id") != grant.vendor_id:
                owner_reason = f"vendor {grant.vendor_id} may edit only its own entries"
        restore: dict[str, Any] = {}
        accepted = []
        for key, change in keys.items():
            reason = owner_reason or _entry_key_reason(key, change)
            if reason is None:
                accepted.append(key)
            else:
                self._refuse_key(verdict, restore, f"{label}.{key}", key, change, reason)
        if "start" in accepted or "end" in accepted:
            after = {**entry, **{k: v for k, v in restore.items() if v is not ABSENT}}
            for key in [k for k, v in restore.items() if v is ABSENT]:
                after.pop(key, None)
            span = schema.check_span(after)
            if span is not None:
                for key in ("start", "end"):
                    if key in accepted:
                        accepted.remove(key)
                        self._refuse_key(verdict, restore, f"{label}.{key}", key, keys[key], span)
        if restore:
            verdict.entries.setdefault(index, {}).update(restore)
        verdict.fields.extend(f"{label}.{key}" for key in accepted)

    def _judge_deep(self, path: list[Any], verdict: Verdict) -> None:
        """A change inside a shared type nested below a field: remove the field holding it."""
        reason = "nested shared types are not in the schema"
        if isinstance(path[0], str):  # a core path
            verdict.refusals.append(Refusal(f"core.{path[0]}", reason))
            verdict.core.setdefault(path[0], ABSENT)
            return
        path = path[1:]  # a timeline path: [index, key?, ...]
        if len(path) >= 2 and isinstance(path[0], int) and isinstance(path[1], str):
            verdict.refusals.append(Refusal(f"timeline[#{path[0]}].{path[1]}", reason))
            verdict.entries.setdefault(path[0], {}).setdefault(path[1], ABSENT)
        elif path and isinstance(path[0], int):
            verdict.refusals.append(Refusal(f"timeline[#{path[0]}]", reason))
            verdict.removals.add(path[0])
        else:
            verdict.refusals.append(Refusal("timeline", reason))

    @staticmethod
    def _refuse_key(
        verdict: Verdict,
        restore: dict[str, Any],
        label: str,
        key: str,
        change: KeyChange,
        reason: str,
    ) -> None:
        verdict.refusals.append(Refusal(label, reason))
        old = change[1]
        restore[key] = ABSENT if change[0] == "add" or isinstance(old, Shared) else old

    # -- undoing ---------------------------------------------------------------------------------

    def compensate(self, verdict: Verdict, summary: UpdateSummary | None = None) -> None:
        """Undo the refused changes in one transaction of the room's own Doc; ``summary``: of
        the judged update, whose refused core writes the undos then stand for."""
        assert self._changes is None, "compensate after judge"
        self._undoing = True  # judge already accounted for what this does to the entry ids
        try:
            self._undo(verdict)
        finally:
            self._undoing = False
            self._before_ids = None
        for key, value in verdict.core.items():  # ABSENT too: the deleted write is visible
            write = summary.core_writes.get(key) if summary is not None else None
            refs = write.refs if write is not None else frozenset()
            before = self._replaced.get(key)
            if before is not None:  # the undo of a write made on an undo: the same old value
                refs |= before.refs
            if len(refs) > MAX_UNDO_REFS:
                refs = write.refs if write is not None else frozenset()
            self.undone[key] = Undo(value, refs)
        self._replaced = {}

    def reassert(self, grant: Grant, summary: UpdateSummary) -> list[str]:
        """Write again the accepted core values of ``summary``'s update that pycrdt hid behind
        one of the room's undos; returns the fields (``core.venue``) written.

        A refused write must be as if it never happened: a concurrent write of the same key,
        made on the value the undo restores, must win over that restored value. But Yjs orders
        concurrent writes of one key by client id, so a writer with a lower id than the refused
        one lands left of it and the undo stays the visible value: no event fires and the write
        is lost. Only over an undo that is still the key's visible value (no event since), for a
        write made on what the undo stands for (never over another client's value: that is
        last-writer-wins), and only a value the writer may write (schema and role)."""
        self._replaced = {}
        if not self.undone or not grant.rights.core:
            return []
        chosen: dict[str, Any] = {}
        for key, write in summary.core_writes.items():
            undo = self.undone.get(key)
            if undo is None or write.at < 0 or not write.refs & undo.refs:
                continue
            try:
                value = summary.core_value(key)
            except InvalidUpdate:
                continue
            if (
                value != undo.value
                and self._core_reason(grant, key, ("update", undo.value, value)) is None
            ):
                chosen[key] = value
        if chosen:
            with self.doc.transaction():
                for key, value in chosen.items():
                    self.core[key] = value  # the observer drops these undos
        return [f"core.{key}" for key in chosen]

    def _undo(self, verdict: Verdict) -> None:
        with self.doc.transaction():
            for key, value in verdict.core.items():
                _restore(self.core, key, value)
            for index, keys in verdict.entries.items():
                if index in verdict.removals or index >= len(self.timeline):
                    continue
                entry = self.timeline[index]
                if isinstance(entry, Map):
                    for key, value in keys.items():
                        _restore(entry, key, value)
            # from the end backwards, so each index still means what the verdict meant;
            # at one index, remove the refused entry before putting a deleted one back
            steps = [(-i, 0, 0, None) for i in verdict.removals] + [
                (-i, 1, -order, entry) for i, order, entry in verdict.reinsertions
            ]
            for position, kind, order, entry in sorted(steps, key=lambda s: s[:3]):
                if kind == 0:
                    del self.timeline[-position]
                else:
                    plain = {k: v for k, v in (entry or {}).items() if not isinstance(v, Shared)}
                    self.timeline.insert(-position, Map(plain))
                    self._remember_moved(-order, plain)

    def _remember_moved(self, order: int, values: Entry) -> None:
        ids, entry_id = self._before_ids, values.get("id")
        original = ids[order] if ids is not None and order < len(ids) else None
        if original is None or not isinstance(entry_id, str):
            return
        moved = self.moved
        moved[original] = Moved(entry_id, dict(values))
        while len(moved) > MAX_MOVED:
            del moved[next(iter(moved))]  # the oldest: its writers have long seen the copy

    def carry(self, grant: Grant, summary: UpdateSummary, refusals: list[Refusal]) -> list[str]:
        """Write into the entries the room put back what ``summary``'s update wrote into their
        deleted originals; returns the fields (``timeline[photos].notes``) written, and adds to
        ``refusals`` the writes it may not carry.

        Yjs cannot undelete: a refused deletion is undone by putting a copy of the entry back.
        A client that had not seen the deletion yet still writes into the original, where
        pycrdt keeps the write out of sight (no event: nothing to judge, nothing visible), and
        the edit would be lost though accepted. Such a write of a plain value is carried to the
        copy when the writer may make it (role, schema; else it is refused) and the copy's key
        still holds what the room put there (a write made on the copy since is later, and
        wins)."""
        moved = self.moved
        if not moved:
            return []
        writes: dict[tuple[ID, str], tuple[ContentRef, int]] = {}
        for info in summary.items:
            parent = info.parent
            if info.key is not None and isinstance(parent, tuple) and parent in moved:
                writes[parent, info.key] = info.content, info.at  # the last one written counts
        if not writes:
            return []
        copies = {_entry_id(e): (i, e) for i, e in enumerate(self.timeline) if isinstance(e, Map)}
        chosen: list[tuple[Map[Any], Moved, str, Any, str]] = []
        for (original, key), (content, at) in writes.items():
            record = moved[original]
            found = copies.get(record.entry_id)
            if found is None:
                continue  # the copy was deleted since: so is what was written into it
            index, copy = found
            entry = snapshot(copy)
            label = f"{_label(entry, index)}.{key}"
            reason: str | None = "nested shared types are not in the schema"
            value: Any = ABSENT
            if content is ContentRef.ANY and at >= 0:
                try:
                    value = read_any_content(summary.data, at)
                    reason = _carry_reason(grant, entry, key, value)
                except InvalidUpdate as exc:
                    reason = str(exc)
            if reason is not None:
                refusals.append(Refusal(label, reason))
            elif entry.get(key, ABSENT) == record.values.get(key, ABSENT) != value:
                chosen.append((copy, record, key, value, label))  # (else written on the copy)
        if not chosen:
            return []
        self._undoing = True  # no id changes: the known entry ids stay right
        try:
            with self.doc.transaction():
                for copy, record, key, value, _ in chosen:
                    copy[key] = value
                    record.values[key] = value
        finally:
            self._undoing = False
        return [label for *_, label in chosen]


def snapshot(value: Any, depth: int = 0) -> Any:
    """A plain copy of a value read from the Doc: a Map as a dict, other shared types marked."""
    if isinstance(value, Map):
        if depth >= MAX_SNAPSHOT_DEPTH:
            return Shared("Map")
        return {key: snapshot(item, depth + 1) for key, item in value.items()}
    if hasattr(value, "observe"):  # Array, Text, Xml*: not plain
        return Shared(type(value).__name__)
    return value


def _key_changes(keys: Mapping[str, Mapping[str, Any]]) -> dict[str, KeyChange]:
    return {
        key: (
            change["action"],
            snapshot(change["oldValue"]) if "oldValue" in change else ABSENT,
            snapshot(change["newValue"]) if "newValue" in change else ABSENT,
        )
        for key, change in keys.items()
    }


def _delta(delta: list[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for op in delta:
        for name, value in op.items():
            ops.append((name, [snapshot(v) for v in value] if name == "insert" else value))
    return ops


def _deleted_ids(delta: list[tuple[str, Any]], before: list[Entry] | None) -> Counter[Any] | None:
    """The ids of the entries ``delta`` deletes; None when unknown (no snapshot before it)."""
    gone: Counter[Any] = Counter()
    old = 0
    for op, value in delta:
        if op == "retain":
            old += value
        elif op == "delete":
            if before is None or old + value > len(before):
                return None
            gone.update(_entry_id(entry) for entry in before[old : old + value])
            old += value
    return gone


def _entry_id(entry: Any) -> Any:
    """The id of an entry, read from the Doc (a Map) or from a snapshot (a dict)."""
    return entry.get("id") if isinstance(entry, Map | dict) else None


def _label(entry: Any, index: int) -> str:
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(entry_id, str) and schema.IDENTIFIER(entry_id) is None:
        return f"timeline[{entry_id}]"
    return f"timeline[#{index}]"


def _insert_reason(grant: Grant, item: Any, taken: bool) -> str | None:
    rights = grant.rights.timeline
    if rights is Timeline.NONE:
        return f"role {grant.role} may not write the timeline"
    if not isinstance(item, dict):
        return "a timeline entry must be a Y.Map"
    problem = schema.check_entry(item)
    if problem is not None:
        return f"{problem[0]} {problem[1]}"
    if taken:
        return f"id {item['id']} is already in the timeline"
    if rights is Timeline.OWN and item.get("vendor_id") != grant.vendor_id:
        return f"vendor {grant.vendor_id} may add only entries with vendor_id {grant.vendor_id}"
    return None


def _delete_reason(grant: Grant, rights: Timeline, entry: Entry | None) -> str | None:
    if rights is Timeline.ALL:
        return None
    if rights is Timeline.NONE:
        return f"role {grant.role} may not write the timeline"
    if entry is None or entry.get("vendor_id") != grant.vendor_id:
        return f"vendor {grant.vendor_id} may delete only its own entries"
    return None


def _item_ids(timeline: Array[Any], n: int) -> list[ID | None]:
    """The item of each of the first ``n`` entries (a sticky index names the item it sticks to)."""
    ids: list[ID | None] = []
    for index in range(n):
        item = timeline.sticky_index(index, Assoc.AFTER).to_json().get("item")
        ids.append((item["client"], item["clock"]) if isinstance(item, dict) else None)
    return ids


def _carry_reason(grant: Grant, entry: Entry, key: str, value: Any) -> str | None:
    """Why ``grant`` may not write ``value`` under ``key`` of ``entry`` (None: it may)."""
    rights = grant.rights.timeline
    if rights is Timeline.NONE:
        return f"role {grant.role} may not write the timeline"
    after = {**entry, key: value}
    if rights is Timeline.OWN and not (
        entry.get("vendor_id") == after.get("vendor_id") == grant.vendor_id
    ):  # as _judge_entry: the entry is the vendor's before and after
        return f"vendor {grant.vendor_id} may edit only its own entries"
    reason = _entry_key_reason(key, ("update", entry.get(key, ABSENT), value))
    if reason is None and key in ("start", "end"):
        reason = schema.check_span(after)
    return reason


def _entry_key_reason(key: str, change: KeyChange) -> str | None:
    action, _, new = change
    if key == "id":
        return "an entry's id never changes"
    if action == "delete":
        rule = schema.ENTRY.get(key)
        return "is required and cannot be deleted" if rule and rule.required else None
    return schema.check_field(schema.ENTRY, key, new)


def _restore(target: Map[Any], key: str, value: Any) -> None:
    if value is ABSENT:
        if key in target:
            del target[key]
    else:
        target[key] = value
