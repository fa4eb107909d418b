"""Development only: tracemalloc snapshots of a running gateway on SIGUSR2.

Nothing happens unless Python traces allocations (``PYTHONTRACEMALLOC=25`` or ``-X
tracemalloc=25``, which slows the process several times): then ``gateway serve`` installs a
SIGUSR2 handler that writes ``tracemalloc-<pid>-<n>.snapshot`` (``tracemalloc.Snapshot.dump``,
for ``Snapshot.load`` and ``compare_to(..., "traceback")``) and the top 30 lines of it by
traceback as ``.txt`` into the data directory, after a full garbage collection, with the RSS
before and after ``malloc_trim(0)`` (what the allocator kept of freed memory). The soak tool
(``python -m loadtest.soak``, loadtest/README.md "Soak") measures the slope; these snapshots
say where it comes from.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

from gateway.memory import malloc_trim, rss_bytes

TOP_LINES = 30
"""Lines of the text summary written next to each snapshot."""


def dump_snapshot(directory: Path, n: int) -> Path:
    """Collect garbage, write snapshot ``n`` and its text summary; return the snapshot's path.

    The summary also says how much RSS ``malloc_trim(0)`` gave back: memory freed but kept by
    the allocator (fragmentation), not held by live objects.
    """
    uncollected = rss_bytes()
    found = gc.collect()
    collected = rss_bytes()
    snapshot = tracemalloc.take_snapshot()
    path = directory / f"tracemalloc-{os.getpid()}-{n}.snapshot"
    snapshot.dump(str(path))
    before = rss_bytes()
    trimmed = malloc_trim()
    lines = [
        f"traced: {tracemalloc.get_traced_memory()[0]} bytes",
        f"rss: {uncollected} bytes; after gc.collect ({found} unreachable): {collected} bytes",
        f"rss: {before} bytes; after malloc_trim: {rss_bytes()} bytes (trimmed: {trimmed})",
        f"gc.get_stats(): {gc.get_stats()}",
    ]
    for stat in snapshot.statistics("traceback")[:TOP_LINES]:
        lines.append(f"{stat.size} bytes in {stat.count} blocks")
        lines.extend(f"    {line}" for line in stat.traceback.format(limit=8))
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return path


def install_snapshot_signal(directory: Path) -> bool:
    """While tracemalloc traces, dump a snapshot into ``directory`` on each SIGUSR2."""
    if not tracemalloc.is_tracing():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    counter = itertools.count(1)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump_snapshot(directory, next(counter))

    signal.signal(signal.SIGUSR2, on_signal)
    return True
