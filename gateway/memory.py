"""Memory the process holds: its RSS, and giving the allocator's free pages back.

A room that unloads frees its objects, but glibc's allocator keeps most freed pages for reuse,
spread over its arenas, so the RSS of a node whose weddings come and go keeps rising although
live memory does not (the soak, loadtest/README.md "Soak": tracemalloc saw the Python heap flat
while the RSS grew, and ``malloc_trim(0)`` gave back 25-50 MB). ``Trimmer`` calls it after rooms
unload, at most once per ``GATEWAY_MALLOC_TRIM_SECONDS``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def rss_bytes() -> int:
    """This process's resident set (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``), if it can."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


class Trimmer:
    """Trims the heap after rooms unload (``unloaded()``), at most once per ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.trims = 0
        self._unloaded = asyncio.Event()

    def unloaded(self) -> None:
        """A room unloaded: what it held is free."""
        self._unloaded.set()

    async def run(self) -> None:
        """Until cancelled (a supervised loop of the node; not started when ``seconds`` is 0)."""
        while True:
            await self._unloaded.wait()
            self._unloaded.clear()
            before = rss_bytes()
            await asyncio.to_thread(malloc_trim)
            self.trims += 1
            log.debug("heap_trimmed", rss_before=before, rss_after=rss_bytes())
            await asyncio.sleep(self.seconds)  # a rate limit, not a wait for a condition
