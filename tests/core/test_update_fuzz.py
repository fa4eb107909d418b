"""Fuzz: mutated real updates through the guard and pycrdt, in a child process (DESIGN.md §7).

Each input is checked against the state of a room Doc and, when the guard accepts it, applied
and read back, all in ``update_fuzz_worker``: a segfault or abort ends the child, which the harness
sees as a crash; an input without an answer within ``INPUT_DEADLINE`` is a hang. Crashing, hanging
and erroring inputs are written to ``corpus/`` (update hex, then room base hex) and replayed by
``test_corpus_inputs_are_rejected_or_applied`` from then on.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, merge_updates

from gateway.core.update_reader import Struct, TypeRef, UpdateLimits, read_update
from tests.core import update_builder as b

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
INPUT_DEADLINE = 1.0
"""Seconds one input may take in the child: protection against hangs, not a speed bound."""
START_DEADLINE = 20.0
MUTATIONS = 3200
REWRITES = 1200
LENIENT = UpdateLimits(allowed_roots={"core": TypeRef.TEXT, "timeline": TypeRef.TEXT})
"""Reads rewritten updates back whatever their roots hold (a Y.Text root takes both kinds)."""


@dataclass
class Worker:
    """One ``update_fuzz_worker`` child; restarted after a crash or a hang."""

    guard: bool = True
    process: subprocess.Popen[bytes] | None = None
    buffer: bytes = b""
    restarts: int = field(default=0)

    def start(self) -> None:
        args = [sys.executable, "-m", "tests.core.update_fuzz_worker"]
        args += [] if self.guard else ["--no-guard"]
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.buffer = b""
        assert self.read_line(START_DEADLINE) == "ready", "the fuzz worker did not start"

    def stop(self) -> int | None:
        """Kill the child (if still running) and close its pipes; returns its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        process.kill()
        code = process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        return code

    def read_line(self, timeout: float) -> str | None:
        """The next line from the child; None on a timeout; "" on EOF (the child died)."""
        assert self.process is not None
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def run(self, base: bytes, update: bytes) -> str:
        """``rejected``, ``applied``, ``error ...``, ``crash (exit N)`` or ``hang``."""
        if self.process is None:
            self.start()
        assert self.process is not None
        assert self.process.stdin is not None
        frames = struct.pack(">I", len(base)) + base + struct.pack(">I", len(update)) + update
        try:
            self.process.stdin.write(frames)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.read_line(INPUT_DEADLINE)
        if line:
            return line
        if line == "":  # EOF: the child died by itself; wait for its exit code
            self.process.wait()
        code = self.stop()
        self.restarts += 1
        return "hang" if line is None else f"crash (exit {code})"


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker()
    w.start()
    yield w
    w.stop()


def keep(kind: str, base: bytes, update: bytes) -> Path:
    """Save a failing input in the regression corpus."""
    CORPUS.mkdir(exist_ok=True)
    digest = hashlib.sha1(base + b"|" + update).hexdigest()[:12]
    path = CORPUS / f"{kind}-{digest}.hex"
    path.write_text(f"{update.hex()}\n{base.hex()}\n")
    return path


def corpus_entries() -> list[Path]:
    return sorted(CORPUS.glob("*.hex")) if CORPUS.is_dir() else []


def read_entry(path: Path) -> tuple[bytes, bytes]:
    """(base, update) of a corpus file: update hex on line 1, room base hex on line 2."""
    lines = path.read_text().split("\n")
    return (bytes.fromhex(lines[1]) if len(lines) > 1 else b""), bytes.fromhex(lines[0])


# -- seeds: real updates with the room they were sent to ---------------------------------------


class Session:
    """Two pycrdt clients and a room; every client update is recorded with the room before it."""

    def __init__(self, seed: int) -> None:
        self.room: Doc[Any] = Doc()
        self.docs: list[Doc[Any]] = [Doc(client_id=seed * 100 + i + 1) for i in range(2)]
        self.pairs: list[tuple[bytes, bytes]] = []
        self.syncing = False
        for doc in self.docs:
            doc.observe(lambda event, doc=doc: self.sent(doc, event.update))

    def sent(self, doc: Doc[Any], update: bytes) -> None:
        if self.syncing:
            return
        self.pairs.append((self.room.get_update(), update))
        self.room.apply_update(update)
        self.syncing = True
        for other in self.docs:
            if other is not doc:
                other.apply_update(update)
        self.syncing = False


def seed_pairs() -> list[tuple[bytes, bytes]]:
    """Updates of every content kind the guard admits, each with its room's base state."""
    pairs: list[tuple[bytes, bytes]] = []
    for seed in range(3):
        session = Session(seed)
        a, c = session.docs
        core, timeline = a.get("core", type=Map), a.get("timeline", type=Array)
        core["partner_a"] = "Ana Silva"
        core["guest_count"] = 120
        core["extra"] = {"list": [1, 2.5, None, True], "deep": {"x": "😀"}}
        core["blob"] = b"\x00\x01binary"
        entry: Map[Any] = Map({"id": f"e{seed}", "title": "Ceremony", "start": "16:30"})
        timeline.append(entry)
        entry["notes"] = Text("Cake at 14:00")
        notes = entry["notes"]
        notes.insert(4, " 🎂", {"bold": True})
        notes.format(0, 4, {"italic": True})
        notes.insert_embed(2, {"image": "cake.png"})
        c.get("timeline", type=Array).insert(0, Map({"id": "c", "nested": Map({"k": "v"})}))
        del core["extra"]
        del timeline[1]
        core["notes"] = "long note " * 200
        pairs += session.pairs
        updates = [u for _, u in session.pairs]
        pairs.append((b"", session.room.get_update()))
        pairs.append((b"", merge_updates(updates[0], updates[2], updates[4])))  # Skip structs
    pairs += hand_built_pairs()
    return pairs


def hand_built_pairs() -> list[tuple[bytes, bytes]]:
    """Rarer structs real clients write: XML types, GC, Skip, Binary content, delete sets."""
    base = b.update([b.section(1, 0, [b.map_set("core", "a", 1), b.map_set("core", "b", "x")])])
    entry = b.item(b.TYPE, b.type_content(b.MAP), parent="timeline")
    xml = b.item(b.TYPE, b.type_content(b.XML_ELEMENT, "p"), parent=(7, 0), key="x")
    binary = b.item(b.BINARY, b.string(b"\x01\x02"), parent=(7, 0), key="bin")
    deleted = b.item(b.DELETED, b.varuint(3), parent="timeline")
    update = b.update(
        [b.section(7, 0, [entry, xml, binary, deleted, b.gc(2), b.skip(3)])], {1: [(0, 1)]}
    )
    later = b.update([b.section(1, 2, [b.map_set("core", "a", 2, origin=(1, 0))])], {7: [(1, 1)]})
    return [(b"", base), (base, update), (base, later)]


# -- mutations ----------------------------------------------------------------------------------

BIG_NUMBERS = (2**31 - 1, 2**31, 2**32, 2**53 - 1, 2**53, 2**63, 2**64 + 1, 2**70)


def mutate(rng: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    """One random mutation: bit flips, byte sets, truncation, splices or a huge varint."""
    out = bytearray(data)
    n = len(out)
    at = rng.randrange(n) if n else 0
    kind = rng.randrange(9)
    if kind == 0 and n:  # flip 1-3 bits
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == 1 and n:  # interesting byte
        out[at] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, 0x09, 0x0A, 0x0B, 0x1F, 0x74))
    elif kind == 2:  # truncate
        del out[rng.randrange(n + 1) :]
    elif kind == 3 and n:  # delete a range
        del out[at : at + rng.randint(1, 8)]
    elif kind == 4:  # insert random bytes
        out[at:at] = rng.randbytes(rng.randint(1, 8))
    elif kind == 5 and n:  # duplicate a range
        out[at:at] = out[at : at + rng.randint(1, 16)]
    elif kind == 6:  # splice another update in
        donor = rng.choice(donors)
        start = rng.randrange(len(donor) + 1)
        out[at:] = donor[start:]
    elif kind == 7 and n:  # replace one byte with a huge varint
        out[at : at + 1] = b.varuint(rng.choice(BIG_NUMBERS))
    else:  # trailing bytes
        out += rng.randbytes(rng.randint(1, 4))
    if rng.random() < 0.2 and len(out) > 0:  # sometimes stack a second bit flip
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def content_of(struct: Struct) -> bytes:
    """Content bytes of a given kind and length (the values themselves do not matter)."""
    match struct.content:
        case b.ANY:
            return b.any_content(*range(struct.length))
        case b.STRING:
            return b.string("a" * struct.length)
        case b.DELETED:
            return b.varuint(struct.length)
        case b.TYPE:
            return b.type_content(struct.type_ref or 0, "p" if struct.type_ref in (3, 5) else None)
        case b.EMBED:
            return b.string('{"image": "cake.png"}')
        case b.FORMAT:
            return b.string("bold") + b.string("true")
        case _:
            return b.string(b"\x01")


def encode(structs: list[Struct], deletes: dict[int, tuple[tuple[int, int], ...]]) -> bytes:
    sections: dict[int, list[Struct]] = {}
    for one in structs:
        sections.setdefault(one.client, []).append(one)
    encoded = []
    for client, group in sections.items():
        parts = []
        for one in group:
            if one.content in (b.GC, b.SKIP):
                parts.append((b.gc if one.content == b.GC else b.skip)(one.length))
                continue
            parent = None if one.origin or one.right else one.parent
            key = one.key if parent else None
            content = content_of(one)
            origin, right = one.origin, one.right
            parts.append(
                b.item(
                    one.content, content, parent=parent, key=key, origin=origin, right_origin=right
                )
            )
        encoded.append(b.section(client, group[0].clock, parts))
    return b.update(encoded, deletes)


def change(rng: random.Random, item: Struct, some_id: b.ID) -> Struct:
    """One field of ``item`` changed: an origin or parent to ``some_id``, a key, a content."""
    match rng.randrange(9):
        case 0:
            return item._replace(origin=some_id)
        case 1:
            return item._replace(right=some_id)
        case 2:
            return item._replace(origin=item.right, right=item.origin)
        case 3:
            parent: str | b.ID = rng.choice(["core", "timeline"]) if rng.random() < 0.7 else some_id
            return item._replace(origin=None, right=None, parent=parent)
        case 4:
            return item._replace(key=rng.choice([None, "k", "partner_a"]))
        case 5:
            return item._replace(content=rng.choice([b.ANY, b.STRING, b.DELETED]))
        case 6:
            return item._replace(content=b.TYPE, length=1, type_ref=rng.choice([0, 1, 2, 6]))
        case 7:
            return item._replace(content=rng.choice([b.EMBED, b.FORMAT, b.BINARY]), length=1)
        case _:
            return item._replace(length=max(0, item.length + rng.choice((-1, 1))))


def rewrite(rng: random.Random, base: bytes, update: bytes) -> bytes:
    """A semantic mutation: the update re-encoded with one or two fields of its items pointed
    at other IDs that exist (origins, parents), or given another key, content kind or length."""
    parsed = read_update(update, LENIENT)
    every = (read_update(base, LENIENT).structs if base else []) + parsed.structs
    known = [one for one in every if one.content not in (b.GC, b.SKIP)]
    structs = list(parsed.structs)
    items = [i for i, one in enumerate(structs) if one.content not in (b.GC, b.SKIP)]
    for _ in range(rng.randint(1, 2) if items else 0):
        at, other = rng.choice(items), rng.choice(known)
        structs[at] = change(rng, structs[at], (other.client, other.clock + other.length // 2))
        if structs[at].content in (b.ANY, b.STRING) and structs[at].length == 0:
            structs[at] = structs[at]._replace(length=1)
    clocks: dict[int, int] = {}
    for i, one in enumerate(structs):  # clocks follow the new lengths
        clock = clocks.setdefault(one.client, one.clock)
        structs[i] = one._replace(clock=clock)
        clocks[one.client] = clock + one.length
    return encode(structs, dict(parsed.deletes))


def test_the_seeds_are_accepted_and_applied(worker: Worker) -> None:
    outcomes = Counter(worker.run(base, update) for base, update in seed_pairs())
    assert outcomes == Counter({"applied": sum(outcomes.values())})


def test_mutated_updates_never_crash_hang_or_raise_past_the_guard(worker: Worker) -> None:
    rng = random.Random(20240604)
    seeds = seed_pairs()
    donors = [update for _, update in seeds]
    outcomes: Counter[str] = Counter()
    failures = []
    for _ in range(MUTATIONS):
        base, update = rng.choice(seeds)
        mutant = mutate(rng, update, donors)
        outcome = worker.run(base, mutant)
        outcomes[outcome.split(" ")[0]] += 1
        if outcome not in ("rejected", "applied"):
            failures.append((outcome, keep(outcome.split(" ")[0], base, mutant).name))
    assert failures == [], f"{len(failures)} failing inputs kept in {CORPUS}: {failures[:5]}"
    assert outcomes["rejected"] + outcomes["applied"] == MUTATIONS
    assert outcomes["rejected"] > MUTATIONS // 2  # the mutations do hit the guard


def test_rewritten_updates_never_crash_hang_or_raise_past_the_guard(worker: Worker) -> None:
    rng = random.Random(20240605)
    seeds = seed_pairs()
    outcomes: Counter[str] = Counter()
    failures = []
    for _ in range(REWRITES):
        base, update = rng.choice(seeds)
        mutant = rewrite(rng, base, update)
        outcome = worker.run(base, mutant)
        outcomes[outcome.split(" ")[0]] += 1
        if outcome not in ("rejected", "applied"):
            failures.append((outcome, keep(outcome.split(" ")[0], base, mutant).name))
    assert failures == [], f"{len(failures)} failing inputs kept in {CORPUS}: {failures[:5]}"
    assert min(outcomes["rejected"], outcomes["applied"]) > REWRITES // 10  # both sides probed


@pytest.mark.parametrize("path", corpus_entries(), ids=lambda p: p.name)
def test_corpus_inputs_are_rejected_or_applied(worker: Worker, path: Path) -> None:
    base, update = read_entry(path)
    assert worker.run(base, update) in ("rejected", "applied")


@pytest.mark.parametrize("path", corpus_entries(), ids=lambda p: p.name)
def test_corpus_inputs_still_break_pycrdt_without_the_guard(path: Path) -> None:
    unguarded = Worker(guard=False)
    try:
        outcome = unguarded.run(*read_entry(path))
    finally:
        unguarded.stop()
    assert outcome != "applied", "pycrdt now copes with this input: the entry may be retired"
