"""gateway/history.py on plain Docs: field-level diffs, restoring a view, undoing one subject."""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map

from gateway.history import (
    ChangeSet,
    FieldChange,
    diff,
    restore_to,
    reverts_for,
    undo_changes,
    view_of,
)
from gateway.ports import AuditEntry


def wedding(*entries: dict[str, Any], **core: Any) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc["core"] = Map(core)
    doc["timeline"] = Array([Map(e) for e in entries])
    return doc


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "title": entry_id.title(), "start": "10:00", **fields}


def copy(doc: Doc[Any]) -> Doc[Any]:
    other: Doc[Any] = Doc()
    other.apply_update(doc.get_update())
    return other


def test_diff_names_core_keys_entries_and_entry_values() -> None:
    before = view_of(wedding(entry("a"), entry("b", notes="x"), venue="A", status="planning"))
    after = view_of(wedding(entry("b", notes="y"), entry("c"), venue="B", status="planning"))
    assert diff(before, after) == [
        FieldChange("core.venue", "A", "B"),
        FieldChange("timeline[a]", entry("a"), None, 0),
        FieldChange("timeline[b].notes", "x", "y"),
        FieldChange("timeline[c]", None, entry("c"), 1),
    ]


def test_restore_to_a_past_view_reorders_reinserts_and_removes() -> None:
    past = wedding(entry("a"), entry("b"), entry("c"), venue="A", guest_count=120)
    live = copy(past)
    with live.transaction():  # since then: a deleted, c moved first, d added, venue changed
        timeline = live.get("timeline", type=Array)
        del timeline[0]
        moved = timeline[1].to_py()
        del timeline[1]
        timeline.insert(0, Map(moved))
        timeline.append(Map(entry("d")))
        core = live.get("core", type=Map)
        core["venue"] = "B"
        core["notes"] = "new"
    restore_to(live, view_of(past))
    assert view_of(live) == view_of(past)
    replica = copy(past)  # another replica converges by merging the restoring update
    replica.apply_update(live.get_update())
    assert view_of(replica) == view_of(past)


def change_set(offset: int, subject: str, *changes: FieldChange) -> ChangeSet:
    return ChangeSet(AuditEntry(offset, 0.0, subject, "planner", ()), list(changes))


def test_undo_reverts_only_what_the_subject_changed_last() -> None:
    sets = [
        change_set(1, "ada", FieldChange("core.venue", "A", "B")),
        change_set(2, "ada", FieldChange("core.notes", None, "ada")),
        change_set(3, "grace", FieldChange("core.notes", "ada", "grace")),
        change_set(4, "ada", FieldChange("timeline[x]", entry("x"), None, 1)),
        change_set(5, "ada", FieldChange("core.venue", "B", "C")),
        change_set(6, "ada", FieldChange("timeline[y]", None, entry("y"), 2)),
        change_set(7, "grace", FieldChange("timeline[y].notes", None, "grace's")),
    ]
    reverts = {r.field: r.value for r in reverts_for("ada", sets)}
    assert reverts == {"core.venue": "A", "timeline[x]": entry("x")}
    doc = wedding(entry("w"), entry("y", notes="grace's"), venue="C", notes="grace")
    undo_changes(doc, reverts_for("ada", sets))
    view = view_of(doc)
    assert view["core"] == {"venue": "A", "notes": "grace"}
    assert [e["id"] for e in view["timeline"]] == ["w", "x", "y"]
