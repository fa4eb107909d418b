"""Cost of role and schema enforcement per update: ``python -m loadtest.bench_enforcement``.

A wedding room (core fields and ``--entries`` timeline entries) receives typical edits: a core
field set, a timeline entry added, an entry's notes edited, by a planner and by a vendor on its
own entry, and edits the room refuses and undoes. For each kind a client Doc makes N edits one
at a time; each update goes through ``Room.receive`` of a room that enforces and of one built with
``enforce=False``, timed alternately, so both see the same sequence. What a room sends back is
applied to its client's Doc, as a client of the gateway would (the undo of a refused edit too).
Added entries are deleted again by an untimed edit, so the timeline keeps its size.
Prints microseconds per update, median and p99 over N, with and without enforcement.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, TransactionEvent

from gateway.core.effects import Broadcast, Effect
from gateway.core.limits import Limits
from gateway.core.policy import Grant, Role
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import SyncUpdate

VENDOR_ID = "florist-7"
PLANNER = Grant("planner-1", Role.PLANNER)
VENDOR = Grant("vendor-1", Role.VENDOR, vendor_id=VENDOR_ID)
CORE = {
    "partner_a": "Ana Silva",
    "partner_b": "Bea Costa",
    "status": "confirmed",
    "wedding_date": "2027-06-12",
    "ceremony_time": "16:30",
    "timezone": "Europe/Lisbon",
    "venue": "Quinta do Lago",
    "guest_count": 120,
}
LIMITS = Limits()

Change = Callable[[Doc[Any], int], None]
"""Edit number ``i`` of a client's Doc (one transaction)."""


def wedding(entries: int) -> bytes:
    """The room's state before the bench: a planned wedding, one entry the vendor's own."""
    doc: Doc[Any] = Doc(client_id=1)
    with doc.transaction():
        doc.get("core", type=Map).update(CORE)
        timeline = doc.get("timeline", type=Array)
        for i in range(entries):
            timeline.append(Map({"id": f"item-{i}", "title": f"Moment {i}", "start": "17:00"}))
        timeline.append(
            Map({"id": "flowers", "title": "Flowers", "start": "10:00", "vendor_id": VENDOR_ID})
        )
    return doc.get_update()


# -- the edits -------------------------------------------------------------------------------------


def set_venue(doc: Doc[Any], i: int) -> None:
    doc.get("core", type=Map)["venue"] = f"Quinta do Lago, hall {i}"


def add_entry(vendor_id: str | None) -> Change:
    def change(doc: Doc[Any], i: int) -> None:
        entry = {"id": f"bench-{i}", "title": "First dance", "start": "21:00", "end": "21:15"}
        if vendor_id is not None:
            entry["vendor_id"] = vendor_id
        doc.get("timeline", type=Array).append(Map(entry))

    return change


def add_backwards_entry(doc: Doc[Any], i: int) -> None:
    """Refused: an entry that ends before it starts (the room deletes it again)."""
    entry = {"id": f"bad-{i}", "title": "Cake", "start": "22:00", "end": "21:00"}
    doc.get("timeline", type=Array).append(Map(entry))


def delete_last_entry(doc: Doc[Any], i: int) -> None:
    timeline = doc.get("timeline", type=Array)
    del timeline[len(timeline) - 1]


def edit_notes(entry_id: str) -> Change:
    def change(doc: Doc[Any], i: int) -> None:
        for entry in doc.get("timeline", type=Array):
            if entry.get("id") == entry_id:
                entry["notes"] = f"Peonies, not roses ({i})."
                return
        raise LookupError(f"no timeline entry {entry_id}")

    return change


@dataclass(frozen=True, slots=True)
class Case:
    """One kind of update: who sends it, the timed edit, and an untimed one after it."""

    name: str
    grant: Grant
    edit: Change
    cleanup: Change | None = None
    refused: bool = False  # the enforcing room refuses every timed edit and undoes it


CASES = (
    Case("planner sets a core field", PLANNER, set_venue),
    Case("planner adds an entry", PLANNER, add_entry(None), delete_last_entry),
    Case("planner edits entry notes", PLANNER, edit_notes("item-0")),
    Case("vendor adds its own entry", VENDOR, add_entry(VENDOR_ID), delete_last_entry),
    Case("vendor edits its entry notes", VENDOR, edit_notes("flowers")),
    Case("refused: vendor sets core", VENDOR, set_venue, refused=True),
    Case("refused: entry ends early", PLANNER, add_backwards_entry, refused=True),
)


# -- one writer in one room ------------------------------------------------------------------------


class Writer:
    """A client Doc in sync with one room, and its session there."""

    def __init__(self, history: bytes, grant: Grant, *, enforce: bool) -> None:
        self.room = Room(RoomId("bench"), [history], limits=LIMITS, enforce=enforce)
        self.session = Session(max_message_bytes=LIMITS.max_message_bytes)
        self.session.grant = grant
        self.room.join(self.session)
        self.doc: Doc[Any] = Doc(client_id=100)
        self.doc.apply_update(history)
        self._captured: list[bytes] = []
        self._subscription = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._captured.append(event.update)

    def make(self, change: Change, i: int) -> bytes:
        """Make edit ``i`` in the client's Doc; returns its update."""
        self._captured.clear()
        with self.doc.transaction():
            change(self.doc, i)
        (update,) = self._captured
        return update

    def send(self, update: bytes) -> int:
        """Feed ``update`` to the room; returns the nanoseconds ``receive`` took."""
        started = time.perf_counter_ns()
        effects = self.room.receive(self.session, SyncUpdate(update))
        elapsed = time.perf_counter_ns() - started
        self._hear(effects)
        return elapsed

    def _hear(self, effects: list[Effect]) -> None:
        """Apply what the room broadcasts to this client (the undo of a refused change)."""
        for effect in effects:
            if isinstance(effect, Broadcast) and effect.exclude is not self.session:
                message = codec.decode(effect.data)
                if isinstance(message, SyncUpdate):
                    self.doc.apply_update(message.update)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    n: int
    bytes: int  # median update size
    off: tuple[float, float]  # (median µs, p99 µs) with enforce=False
    on: tuple[float, float]
    refusals: int  # changes the enforcing room refused (and undid)
    expected_refusals: int


def run_case(case: Case, history: bytes, n: int, warmup: int) -> Row:
    """Send ``warmup`` + ``n`` edits of ``case`` to both rooms; time the last ``n``."""
    writers = (
        Writer(history, case.grant, enforce=False),
        Writer(history, case.grant, enforce=True),
    )
    samples: tuple[list[int], list[int]] = ([], [])
    sizes = []
    gc.collect()
    for i in range(warmup + n):
        for writer, timings in zip(writers, samples, strict=True):
            update = writer.make(case.edit, i)
            elapsed = writer.send(update)
            if i >= warmup:
                timings.append(elapsed)
                sizes.append(len(update))
            if case.cleanup is not None:
                writer.send(writer.make(case.cleanup, i))
    off, on = samples
    refusals = writers[1].room.refusals
    expected = warmup + n if case.refused else 0
    return Row(case.name, n, _median(sizes), _summary(off), _summary(on), refusals, expected)


def _summary(nanoseconds: list[int]) -> tuple[float, float]:
    return _median(nanoseconds) / 1000, _percentile(nanoseconds, 0.99) / 1000


def _median(values: Sequence[int]) -> int:
    return _percentile(values, 0.5)


def _percentile(values: Sequence[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def format_table(rows: list[Row]) -> str:
    """Microseconds per ``Room.receive``; ``+µs`` is what enforcement adds at the median."""
    header = (
        f"{'update':<30}{'n':>6}{'bytes':>7}{'off p50':>9}{'off p99':>9}"
        f"{'on p50':>9}{'on p99':>9}{'+µs p50':>9}{'refused':>9}"
    )
    lines = [header]
    for row in rows:
        extra = row.on[0] - row.off[0]
        lines.append(
            f"{row.name:<30}{row.n:>6}{row.bytes:>7}{row.off[0]:>9.1f}{row.off[1]:>9.1f}"
            f"{row.on[0]:>9.1f}{row.on[1]:>9.1f}{extra:>+9.1f}{row.refusals:>9}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="timed updates per kind")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates first")
    parser.add_argument("--entries", type=int, default=30, help="timeline entries in the room")
    args = parser.parse_args(argv)
    history = wedding(args.entries)
    rows = [run_case(case, history, args.n, args.warmup) for case in CASES]
    print(f"µs per Room.receive(SyncUpdate), enforcement off vs on; {args.entries + 1} entries")
    print(format_table(rows))
    for row in rows:
        if row.refusals != row.expected_refusals:
            print(
                f"NOTE: {row.name}: the room refused {row.refusals} changes, not "
                f"{row.expected_refusals}: its timings do not measure what the row says"
            )
    return rows


if __name__ == "__main__":
    main()
