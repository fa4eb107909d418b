"""Sort py-spy's samples of a gateway into the parts of an edit's path (loadtest/profile.sh).

``python -m loadtest.profile_summary STACKS RUN_JSON`` reads py-spy's raw output (one line per
distinct stack: ``frame;frame;…;frame COUNT``, outermost first) and the kit's report of the same
run. py-spy samples only the thread holding the GIL (``--gil``): Python's CPU, not the waits
(SQLite's fsync) nor C code that released the GIL. Each sample goes to the part named by the
innermost frame that matches one (a schema check called from pycrdt's observer callback counts
as enforcement, not as apply). It prints a Markdown table: each part's share of the samples
and, scaled by the server's CPU time in the report, microseconds per edit and per delivery.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("store thread (SQLite)", ("SqliteStore._serve_jobs",)),
    ("logging, metrics", ("structlog/", "prometheus_client/", "logging/")),
    ("journal (crash journal)", ("gateway/crash_journal.py", "gateway/core/journal.py")),
    (
        "enforcement (roles, schema)",
        ("gateway/core/enforcer.py", "gateway/core/schema", "policy.py"),
    ),
    ("guard (update check)", ("update_check.py", "update_reader.py", "gateway/core/guard.py")),
    ("apply (pycrdt)", ("pycrdt/",)),
    ("decode", ("Session.receive_data", "codec.py:decode", "decode_server_message")),
    ("encode", ("codec.py", "encode_frame", "gateway/core/outgoing.py")),
    (
        "writes (fan-out, frames, transport)",
        ("gateway/fanout.py", "gateway/adapters/websocket.py", "ConnectionDriver."),
    ),
    ("durability (committer, acks)", ("gateway/committer.py", "gateway/durability.py")),
    ("bus, relay", ("gateway/relay.py", "memory_bus.py", "redis_bus.py")),
    (
        "room and node logic",
        (
            "gateway/core/room.py",
            "gateway/node.py",
            "gateway/rooms.py",
            "gateway/connection.py",
            "gateway/core/session.py",
        ),
    ),
    ("WebSocket parsing (uvicorn, websockets)", ("uvicorn/", "websockets/")),
    ("event loop (uvloop: epoll, socket reads and writes)", ("asyncio/runners.py",)),
]


def classify(frames: list[str]) -> str:
    """The part a sample belongs to (codec frames split by function name)."""
    if frames and "SqliteStore._serve_jobs" in ";".join(frames):
        return PARTS[0][0]
    for frame in reversed(frames):
        function = frame.split(" (")[0]
        if "codec.py" in frame:
            return "decode" if "decode" in function else "encode"
        for name, needles in PARTS[1:]:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    stacks, report = Path(argv[0]), json.loads(Path(argv[1]).read_text())
    counts: Counter[str] = Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            counts[classify(stack.split(";"))] += int(count)
    total = sum(counts.values())
    cpu = report["server"]["cpu_seconds"]
    sent, delivered = report["sent"], report["delivered"]
    print(f"{total} samples; server CPU {cpu:.1f} s for {sent} edits, {delivered} deliveries")
    print()
    print("| part | share | µs per edit | µs per delivery |")
    print("|---|---:|---:|---:|")
    for name, n in counts.most_common():
        share = n / total
        per_edit = share * cpu / sent * 1e6 if sent else 0.0
        per_delivery = share * cpu / delivered * 1e6 if delivered else 0.0
        print(f"| {name} | {share:.1%} | {per_edit:.1f} | {per_delivery:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
