"""Size and time of the resume body per Content-Encoding: ``python -m loadtest.bench_compression``.

Records a realistic wedding of ``--edits`` updates (default 5,000): a planner creates it and
fills in a timeline of a few hundred entries over many sessions (a new client id each), vendors
edit their entries' notes and times, core fields change, some entries are deleted. Then it
measures what ``GET /v1/weddings/{id}/resume`` does with it (gateway/content_coding.py):

1. rebuilding a Doc from the stored log (every update, then the compacted snapshot) and
   rendering it (the update, the JSON view), the same renderings on a loaded room's Doc, and the
   event loop's longest stall while the log is rebuilt on it or in ``asyncio.to_thread``: what
   decides ``THREAD_HISTORY_BYTES``;
2. each coding and level on the whole document (a first sync) and on a catch-up (what a client
   50 edits behind lacks): bytes, compression ms and decompression ms (median of repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import brotli  # type: ignore[import-untyped]  # no type hints shipped
import zstandard
from pycrdt import Array, Doc, Map, merge_updates

from gateway.content_coding import BROTLI_QUALITY, GZIP_LEVEL, ZSTD_LEVEL, compress
from gateway.documents import rebuild_and_render
from gateway.http_api import render_json, render_update

WORDS = (
    *("ceremony", "garden", "olive", "tree", "quinta", "lisbon", "cake", "florist", "band"),
    *("photographer", "toast", "dinner", "speech", "dance", "guests", "arrive", "shuttle"),
    *("parking", "rain", "plan", "candles", "tables", "linen", "menu", "vegan", "allergies"),
    *("champagne", "sunset", "portraits", "bouquet", "string", "quartet", "aisle", "vows"),
)
TITLES = ("Ceremony", "Cocktails", "Dinner", "First dance", "Cake", "Speeches", "Photos", "Party")


@dataclass(frozen=True, slots=True)
class Wedding:
    log: list[bytes]
    """Every update in the order the room received it."""
    behind: bytes
    """The state vector of a client that missed the last 50 edits."""


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _time(rng: random.Random) -> str:
    return f"{rng.randrange(10, 24):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def record_wedding(edits: int, *, seed: int = 7, session_edits: int = 40) -> Wedding:
    """Record ``edits`` updates of a wedding, one per edit, a new client id per session."""
    rng = random.Random(seed)
    log: list[bytes] = []
    room: Doc[Any] = Doc()
    behind = b""
    client: Doc[Any] | None = None
    for n in range(edits):
        if n % session_edits == 0:  # a new session: a fresh replica synced from the room
            client = Doc(client_id=rng.randrange(1, 2**31))
            client.apply_update(room.get_update())
            client.observe(lambda event: log.append(event.update))
        assert client is not None
        if n == edits - 50:
            behind = room.get_state()
        _edit(client, n, rng)
        room.apply_update(log[-1])
    return Wedding(log, behind)


def _edit(doc: Doc[Any], n: int, rng: random.Random) -> None:
    core, timeline = doc.get("core", type=Map), doc.get("timeline", type=Array)
    if n == 0:
        core.update({"partner_a": "Ana Silva", "partner_b": "Bea Costa", "status": "planning"})
        return
    kind = rng.random()
    if kind < 0.08 or len(timeline) < 5:
        entry = {"id": f"e{n}", "title": rng.choice(TITLES), "start": _time(rng)}
        entry["location"] = _sentence(rng, 3)
        timeline.append(Map(entry))
    elif kind < 0.11:
        del timeline[rng.randrange(len(timeline))]
    elif kind < 0.25:
        key = rng.choice(("guest_count", "venue", "notes", "ceremony_time"))
        values: dict[str, Any] = {
            "guest_count": rng.randrange(50, 300),
            "venue": f"Quinta do Lago, hall {n % 7}",
            "notes": _sentence(rng, rng.randrange(5, 60)),
            "ceremony_time": _time(rng),
        }
        core[key] = values[key]
    else:
        entry = timeline[rng.randrange(len(timeline))]
        key = rng.choice(("notes", "notes", "start", "end", "location", "title"))
        value = _sentence(rng, rng.randrange(3, 40)) if key in ("notes", "location") else None
        entry[key] = value or (_time(rng) if key in ("start", "end") else rng.choice(TITLES))


def median_ms(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def rebuild(blobs: list[bytes], render: Callable[[Doc[Any]], object]) -> object:
    return rebuild_and_render(blobs, render)


def _gzip(level: int, body: bytes) -> bytes:
    return gzip.compress(body, level, mtime=0)


def _zstd(level: int, body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(body)


def _unzstd(body: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(body)


def _br(quality: int, body: bytes) -> bytes:
    return bytes(brotli.compress(body, quality=quality))


def _unbr(body: bytes) -> bytes:
    return bytes(brotli.decompress(body))


Codec = tuple[str, int, Callable[[bytes], bytes], Callable[[bytes], bytes]]
CODINGS: list[Codec] = [
    *[("gzip", level, partial(_gzip, level), gzip.decompress) for level in (1, 3, 4, 5, 6, 9)],
    *[("zstd", level, partial(_zstd, level), _unzstd) for level in (1, 2, 3, 4, 6, 9, 12, 19)],
    *[("br", quality, partial(_br, quality), _unbr) for quality in (1, 3, 4, 5, 6, 9, 11)],
]


def compression_table(name: str, body: bytes, repeats: int) -> None:
    print(f"\n{name}: identity {len(body):,} bytes")
    print(f"{'coding':<8}{'level':>6}{'bytes':>10}{'ratio':>8}{'comp ms':>10}{'decomp ms':>11}")
    for coding, level, comp, decomp in CODINGS:
        packed = comp(body)
        assert decomp(packed) == body
        ms = median_ms(partial(comp, body), repeats)
        back = median_ms(partial(decomp, packed), repeats)
        ratio = len(body) / len(packed)
        print(f"{coding:<8}{level:>6}{len(packed):>10,}{ratio:>8.2f}{ms:>10.2f}{back:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=5000, help="updates in the wedding's log")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement")
    args = parser.parse_args()
    wedding = record_wedding(args.edits)
    snapshot = merge_updates(*wedding.log)
    loaded: Doc[Any] = Doc()
    loaded.apply_update(snapshot)
    full = render_update(loaded, None)
    catch_up = render_update(loaded, wedding.behind)
    log_bytes = sum(map(len, wedding.log))
    print(f"wedding of {len(wedding.log):,} updates ({log_bytes:,} bytes in the log, ", end="")
    print(f"snapshot {len(snapshot):,} bytes, document {len(full):,} bytes)")
    print(f"{'work':<58}{'ms':>8}")
    resume = partial(render_update, state_vector=None)
    behind = partial(render_update, state_vector=wedding.behind)
    rows: list[tuple[str, Callable[[], object]]] = [
        (
            "store, log of every update: rebuild + whole update",
            lambda: rebuild(wedding.log, resume),
        ),
        ("store, log: rebuild + JSON view", lambda: rebuild(wedding.log, render_json)),
        ("store, compacted snapshot: rebuild + whole update", lambda: rebuild([snapshot], resume)),
        (
            "store, snapshot: rebuild + catch-up (50 edits behind)",
            lambda: rebuild([snapshot], behind),
        ),
        ("store, snapshot: rebuild + JSON view", lambda: rebuild([snapshot], render_json)),
        ("loaded room: whole update (on the event loop)", lambda: resume(loaded)),
        ("loaded room: catch-up update (on the event loop)", lambda: behind(loaded)),
        ("loaded room: JSON view (on the event loop)", lambda: render_json(loaded)),
    ]
    for label, run in rows:
        print(f"{label:<58}{median_ms(run, args.repeats):>8.2f}")
    inline, threaded = asyncio.run(loop_stalls(wedding.log))
    print(f"{'event loop stall, log rebuilt on the loop':<58}{inline:>8.2f}")
    print(f"{'event loop stall, log rebuilt in asyncio.to_thread':<58}{threaded:>8.2f}")
    compression_table("whole document (no sv)", full, args.repeats)
    compression_table("catch-up (client 50 edits behind)", catch_up, args.repeats)
    chosen = f"br quality {BROTLI_QUALITY}, zstd level {ZSTD_LEVEL}, gzip level {GZIP_LEVEL}"
    print(f"\nthe gateway uses: {chosen}")
    for coding in ("br", "zstd", "gzip"):
        ms = median_ms(partial(compress, full, coding), args.repeats)
        size = len(compress(full, coding))
        print(f"  {coding:<5} whole document {size:>9,} bytes {ms:>7.2f} ms")


async def loop_stalls(log: list[bytes]) -> tuple[float, float]:
    """The event loop's longest stall (ms) while the log is rebuilt on it, then in a thread."""
    resume = partial(render_update, state_vector=None)

    async def longest_stall(work: Callable[[], Awaitable[object]]) -> float:
        done = asyncio.Event()
        longest = 0.0

        async def tick() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(tick())
            await asyncio.sleep(0)
            await work()
            done.set()
        return longest * 1000

    async def on_loop() -> object:
        return rebuild_and_render(log, resume)

    inline = await longest_stall(on_loop)
    threaded = await longest_stall(lambda: asyncio.to_thread(rebuild_and_render, log, resume))
    return inline, threaded


if __name__ == "__main__":
    main()
