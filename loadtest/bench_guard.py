"""Cost of the update guard per update: ``python -m loadtest.bench_guard``.

Builds a wedding room with pycrdt, records the real updates of typical edits (20-200 bytes:
map sets, new timeline entries, entry edits, deletions), a 1 MB paste and whole-room snapshots,
then times ``check_update`` on each against the room as it was just before (state vector and
DocIndex), next to pycrdt's own ``apply_update`` for scale. Prints microseconds per update.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text

from gateway.core.update_check import DocIndex, check_update
from wedsync_protocol.codec import Reader


def state_of(doc: Doc[Any]) -> dict[int, int]:
    reader = Reader(doc.get_state())
    return {reader.read_varuint(): reader.read_varuint() for _ in range(reader.read_varuint())}


@dataclass
class Case:
    """One update with the room it was sent to."""

    name: str
    update: bytes
    before: bytes  # the room's whole state before the update


def record_session(entries: int) -> list[Case]:
    """A planner filling in a wedding: every update the room receives, with the room before."""
    client: Doc[Any] = Doc(client_id=1)
    room: Doc[Any] = Doc()
    cases: list[Case] = []
    label = ["edit"]

    def sent(update: bytes) -> None:
        cases.append(Case(label[0], update, room.get_update()))
        room.apply_update(update)

    client.observe(lambda event: sent(event.update))
    core, timeline = client.get("core", type=Map), client.get("timeline", type=Array)
    core.update({"partner_a": "Ana Silva", "partner_b": "Bea Costa", "status": "planning"})
    for i in range(entries):
        label[0] = "new timeline entry"
        timeline.append(Map({"id": f"item-{i}", "title": f"Moment {i}", "start": "16:30"}))
        label[0] = "edit entry key"
        timeline[len(timeline) - 1]["location"] = "Garden by the old olive tree"
        label[0] = "set core key"
        core["guest_count"] = 100 + i
        core["venue"] = f"Quinta do Lago, hall {i}"
        if i % 5 == 4:
            label[0] = "delete entry"
            del timeline[0]
    label[0] = "1 MB paste"
    core["notes"] = ("Cake arrives at 14:00. Café ☕ " * 40_000).encode()[:1_000_000].decode()
    label[0] = "300 kB Y.Text paste"
    entry = Map({"id": "speech", "speech": Text("Dear friends " * 23_000)})
    timeline.append(entry)
    cases.append(Case("room snapshot (new room)", room.get_update(), b""))
    return cases


def per_update_us(run: Callable[[], object], budget: float) -> float:
    """Median microseconds of ``run`` over repeats filling about ``budget`` seconds."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    repeats = max(3, min(2000, int(budget / max(once, 1e-7))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def measure(case: Case, budget: float) -> tuple[float, float, float]:
    """(guard with index µs, guard without index µs, pycrdt apply µs) for one update."""
    room: Doc[Any] = Doc()
    if case.before:
        room.apply_update(case.before)
    state = state_of(room)
    index = DocIndex.from_history([case.before] if case.before else [])
    guarded = per_update_us(lambda: check_update(case.update, state, index=index), budget)
    bare = per_update_us(lambda: check_update(case.update, state), budget)

    def apply() -> None:
        doc: Doc[Any] = Doc()
        doc.apply_update(case.update)

    applied = per_update_us(apply, budget) if not case.before else float("nan")
    return guarded, bare, applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=40, help="timeline entries in the session")
    parser.add_argument("--budget", type=float, default=0.05, help="seconds of repeats per case")
    args = parser.parse_args()
    cases = record_session(args.entries)
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.name, []).append(case)
    print(f"{'update':<28}{'n':>5}{'bytes (median)':>16}{'guard+index µs':>16}{'guard µs':>10}")
    for name, group in groups.items():
        results = [measure(case, args.budget) for case in group[:50]]
        size = statistics.median(len(c.update) for c in group)
        guarded = statistics.median(r[0] for r in results)
        bare = statistics.median(r[1] for r in results)
        print(f"{name:<28}{len(group):>5}{size:>16,.0f}{guarded:>16,.1f}{bare:>10,.1f}")
    snapshot = groups["room snapshot (new room)"][0]
    apply_us = measure(snapshot, args.budget)[2]
    print(f"\nfor scale: pycrdt applies that room snapshot in {apply_us:,.0f} µs")


if __name__ == "__main__":
    main()
