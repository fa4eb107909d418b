"""Version history: past states, field-level changes, and the edits that restore or undo them.

Everything here reads the store's ``Versions`` (gateway/ports.py) and works on Docs that never
leave the calling function; nothing here writes. The writes (``POST .../restore``, ``PATCH
.../core``) go through gateway/history_write.py, as a client's would.

- ``state_at``: the JSON view of the wedding as it was at an offset (a checkpoint at or before it,
  then the log up to it).
- ``changes_after``: one ``ChangeSet`` per audit entry after an offset: its author, and what it
  changed, field by field, with the value before and after (the views before and after the
  entry's update are compared: ``core.<key>``, ``timeline[<id>]`` for an entry added or deleted,
  ``timeline[<id>].<key>`` for one of its values). An entry without an id is named by its
  position, ``timeline[#3]``.
- ``restore_to``: change a Doc (a copy of the live one) so its view equals a past view.
- ``undo_changes``: change a Doc so the fields a subject changed last since an offset go back to
  what they were before that subject's changes, leaving every field someone else changed later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pycrdt import Array, Doc, Map

from gateway.documents import THREAD_HISTORY_BYTES
from gateway.errors import GatewayError
from gateway.ports import AuditEntry, History, Versions
from gateway.types import RoomId

View = dict[str, Any]
"""A wedding as JSON: ``{"core": {...}, "timeline": [...]}`` (gateway/http_api.py)."""

MISSING: Any = None
"""What ``old`` / ``new`` hold for a field or entry that did not exist."""


class HistoryGone(GatewayError):
    """The store no longer holds what rebuilding a past state needs (compacted, or before the
    wedding's history was reset). HTTP: 410."""

    close_code = 4500
    retryable = False


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    """``core.venue``, ``timeline[dinner]`` (added or deleted), ``timeline[dinner].notes``."""
    old: Any
    new: Any
    index: int = 0
    """For a whole entry: its position in the timeline before the change (after, if added)."""


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What one stored update changed, and who made it (an audit entry with values)."""

    entry: AuditEntry
    changes: list[FieldChange] = field(default_factory=list)


def iso_time(at: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds (as ``gateway audit`` prints them)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- views ----------------------------------------------------------------------------------------


def view_of(doc: Doc[Any]) -> View:
    """The JSON view (``guest_count`` as an int when whole, as gateway/http_api.py renders it)."""
    core: dict[str, Any] = doc.get("core", type=Map).to_py() or {}
    timeline: list[Any] = doc.get("timeline", type=Array).to_py() or []
    guest_count = core.get("guest_count")
    if isinstance(guest_count, float) and guest_count.is_integer():
        core["guest_count"] = int(guest_count)
    return {"core": core, "timeline": timeline}


def entry_key(entry: Any, index: int) -> str:
    """How a timeline entry is named in a field: its id, else ``#<index>``."""
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        return str(entry["id"])
    return f"#{index}"


def diff(before: View, after: View) -> list[FieldChange]:
    """Field-level differences between two views, core first, then the timeline in order."""
    changes = [
        FieldChange(f"core.{key}", before["core"].get(key), after["core"].get(key))
        for key in sorted(before["core"].keys() | after["core"].keys())
        if before["core"].get(key) != after["core"].get(key)
    ]
    old = {entry_key(e, i): (i, e) for i, e in enumerate(before["timeline"])}
    new = {entry_key(e, i): (i, e) for i, e in enumerate(after["timeline"])}
    for key in [*old, *(k for k in new if k not in old)]:
        index, was = old.get(key, (None, None))
        later, now = new.get(key, (0, None))
        if was == now:
            continue
        if not isinstance(was, dict) or not isinstance(now, dict):
            position = index if index is not None else later
            changes.append(FieldChange(f"timeline[{key}]", was, now, position))
            continue
        changes.extend(
            FieldChange(f"timeline[{key}].{name}", was.get(name), now.get(name))
            for name in sorted(was.keys() | now.keys())
            if was.get(name) != now.get(name)
        )
    return changes


def _rebuild(history: History) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for blob in history.blobs():
        doc.apply_update(blob)
    return doc


# -- reading the past -----------------------------------------------------------------------------


async def state_at(store: Versions, room: RoomId, offset: int) -> tuple[History, View]:
    """The wedding's view at ``offset``; raises HistoryGone when it can no longer be rebuilt."""
    history = await store.load_at(room, offset)
    if history is None:
        raise HistoryGone(f"the state of wedding {room} at offset {offset} is no longer kept")
    if sum(map(len, history.blobs())) > THREAD_HISTORY_BYTES:
        return history, await asyncio.to_thread(lambda: view_of(_rebuild(history)))
    return history, view_of(_rebuild(history))


async def changes_after(store: Versions, room: RoomId, after: int, limit: int) -> list[ChangeSet]:
    """The first ``limit`` change sets after offset ``after``, in offset order."""
    entries = await store.audit_range(room, after=after, limit=limit)
    if not entries:
        return []
    history = await store.load_at(room, after, through=entries[-1].offset)
    if history is None:
        raise HistoryGone(f"the changes of wedding {room} after offset {after} are no longer kept")
    if sum(len(update) for _, update in history.updates) > THREAD_HISTORY_BYTES:
        return await asyncio.to_thread(_replay, history, after, entries)
    return _replay(history, after, entries)


def _replay(history: History, after: int, entries: Sequence[AuditEntry]) -> list[ChangeSet]:
    """Apply the updates up to ``after``, then each audit entry's update, comparing views."""
    doc: Doc[Any] = Doc()
    if history.snapshot is not None:
        doc.apply_update(history.snapshot)
    later = {}
    for offset, update in history.updates:
        if offset <= after:
            doc.apply_update(update)
        else:
            later[offset] = update
    before = view_of(doc)
    sets = []
    for entry in entries:
        found = later.get(entry.offset)
        if found is None:  # an offset of another epoch: nothing of it is in this history
            sets.append(ChangeSet(entry))
            continue
        doc.apply_update(found)
        now = view_of(doc)
        sets.append(ChangeSet(entry, diff(before, now)))
        before = now
    return sets


# -- changing a Doc -------------------------------------------------------------------------------


def restore_to(doc: Doc[Any], target: View) -> None:
    """Change ``doc`` (a working copy) so that its view equals ``target``, in one transaction.

    Core keys are set or deleted; timeline entries still present keep their identity (their
    changed values are set), entries gone since are inserted again as new entries, entries
    added since are deleted, and the order of ``target`` is restored (an entry out of order is
    deleted and inserted again).
    """
    with doc.transaction():
        core = doc.get("core", type=Map)
        _set_map(core, core.to_py() or {}, target["core"])
        _restore_timeline(doc.get("timeline", type=Array), target["timeline"])


def _set_map(target: Map[Any], current: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in current.keys() - wanted.keys():
        del target[key]
    for key, value in wanted.items():
        if current.get(key) != value or key not in current:
            target[key] = value


def _restore_timeline(timeline: Array[Any], target: list[Any]) -> None:
    current = timeline.to_py() or []
    wanted_keys = [entry_key(e, i) for i, e in enumerate(target)]
    position = {key: i for i, key in enumerate(wanted_keys) if not key.startswith("#")}
    kept: set[int] = set()
    kept_keys: set[str] = set()
    last = -1
    for i, entry in enumerate(current):
        key = entry_key(entry, i)
        if key in position and key not in kept_keys and position[key] > last:
            kept.add(i)
            kept_keys.add(key)
            last = position[key]
    for i in reversed(range(len(current))):
        if i not in kept:
            del timeline[i]
    for i, entry in enumerate(target):
        if wanted_keys[i] in kept_keys:
            existing = timeline[i]
            if isinstance(existing, Map) and isinstance(entry, dict):
                _set_map(existing, existing.to_py() or {}, entry)
        else:
            timeline.insert(i, _entry(entry))


def _entry(value: Any) -> Any:
    return Map(dict(value)) if isinstance(value, dict) else value


@dataclass(frozen=True, slots=True)
class Revert:
    """Put ``field`` back to ``value`` (MISSING: remove it)."""

    field: str
    value: Any
    index: int = 0
    """For an entry put back: where it stood before it was deleted."""


def reverts_for(subject: str, sets: Iterable[ChangeSet]) -> list[Revert]:
    """What undoing ``subject``'s changes in ``sets`` (in offset order) puts back.

    A field counts only when ``subject`` changed it last: it goes back to its value before
    that subject's last run of changes to it. A field (or entry) someone else changed
    afterwards keeps their value; so do the values of an entry someone else changed after
    ``subject`` added or deleted it.
    """
    runs: dict[str, FieldChange | None] = {}  # field -> the first change of subject's run
    for change_set in sets:
        mine = change_set.entry.subject == subject
        for change in change_set.changes:
            if not mine:
                runs[change.field] = None
                _forget_entry(runs, change.field)
            elif runs.get(change.field) is None:
                runs[change.field] = change
    return [Revert(name, run.old, run.index) for name, run in runs.items() if run is not None]


def _forget_entry(runs: dict[str, FieldChange | None], name: str) -> None:
    """Someone else changed a value of an entry: an add or delete of the whole entry by the
    subject is no longer the last word on it (nor the other way round)."""
    key, _, rest = name.partition("]")
    if not name.startswith("timeline["):
        return
    if rest:  # a value changed: the entry itself stays
        runs[key + "]"] = None if key + "]" in runs else runs.get(key + "]")
    else:  # the entry was added or deleted: the subject's values in it no longer count
        for other in [n for n in runs if n.startswith(key + "].")]:
            runs[other] = None


def undo_changes(doc: Doc[Any], reverts: Sequence[Revert]) -> None:
    """Apply ``reverts`` to ``doc`` (a working copy) in one transaction. A value of an entry
    that no longer exists is skipped; entries named by position only (no id) are skipped."""
    with doc.transaction():
        core = doc.get("core", type=Map)
        timeline = doc.get("timeline", type=Array)
        for revert in reverts:
            name = revert.field
            if name.startswith("core."):
                key = name[len("core.") :]
                if revert.value is MISSING:
                    if key in core:
                        del core[key]
                else:
                    core[key] = revert.value
            elif name.startswith("timeline["):
                _undo_timeline(timeline, revert)


def _undo_timeline(timeline: Array[Any], revert: Revert) -> None:
    key, _, value_key = revert.field[len("timeline[") :].partition("]")
    if key.startswith("#"):
        return
    value_key = value_key.removeprefix(".")
    index = next((i for i, e in enumerate(timeline.to_py() or []) if entry_key(e, i) == key), None)
    if not value_key:  # the whole entry
        if revert.value is MISSING and index is not None:
            del timeline[index]
        elif revert.value is not MISSING and index is None:
            timeline.insert(min(revert.index, len(timeline)), _entry(revert.value))
        return
    if index is None:
        return
    entry = timeline[index]
    if not isinstance(entry, Map):
        return
    if revert.value is MISSING:
        if value_key in entry:
            del entry[value_key]
    else:
        entry[value_key] = revert.value
