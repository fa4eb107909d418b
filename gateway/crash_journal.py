"""Crash journal: an update that kills the process mid-apply is refused after the restart.

pycrdt can be killed (SIGSEGV) by crafted updates (DESIGN.md §7). The guard refuses every such
input we know of; this is the second line. Before an update is applied its SHA-256 is written to
a small memory-mapped file, and cleared after. The kernel keeps a shared mapping's pages when the
process dies, so after a crash the next start finds the digest still there, adds it to the deny
list and logs it. A denied update is refused (4500) on every later attempt, and it was never
stored: an update is appended only after it applied cleanly, so a restart never replays it.
No system call is made per update: a memory write before apply and one after.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from pathlib import Path
from typing import Self

import structlog

log = structlog.get_logger(__name__)

_MAGIC = b"WSJ1"
_SLOT = 4 + 32  # magic, then the SHA-256 of the update being applied
_EMPTY = bytes(_SLOT)


class CrashJournal:
    """The in-flight update of this process and the deny list of updates that killed it."""

    def __init__(self, journal: Path, deny_list: Path) -> None:
        self.journal_path = journal
        self.deny_list_path = deny_list
        self.denied: set[bytes] = set()
        self._map: mmap.mmap | None = None

    @classmethod
    def open(cls, data_dir: Path) -> Self:
        """Open (creating) the journal in ``data_dir``; an input left in flight is denied."""
        data_dir.mkdir(parents=True, exist_ok=True)
        journal = cls(data_dir / "inflight.journal", data_dir / "denied-updates.txt")
        journal._load_deny_list()
        journal._map_slot()
        return journal

    @staticmethod
    def digest(update: bytes) -> bytes:
        return hashlib.sha256(update).digest()

    def is_denied(self, digest: bytes) -> bool:
        return digest in self.denied

    def begin(self, digest: bytes) -> None:
        """Record ``digest`` as being applied (call right before ``Doc.apply_update``)."""
        assert self._map is not None
        self._map[4:_SLOT] = digest
        self._map[0:4] = _MAGIC

    def end(self) -> None:
        """The update applied (or failed) without killing the process."""
        assert self._map is not None
        self._map[0:4] = b"\0\0\0\0"

    def deny(self, digest: bytes, reason: str) -> None:
        """Add ``digest`` to the deny list, durably."""
        if digest in self.denied:
            return
        self.denied.add(digest)
        with self.deny_list_path.open("a", encoding="ascii") as f:
            f.write(f"{digest.hex()} {int(time.time())} {reason}\n")
            f.flush()
            os.fsync(f.fileno())

    def quarantine(self, room: str, update: bytes, reason: str) -> Path:
        """Keep a refused-after-the-fact update for operators, and deny it from now on."""
        digest = self.digest(update)
        folder = self.journal_path.parent / "quarantine"
        folder.mkdir(exist_ok=True)
        path = folder / f"{int(time.time())}-{room}-{digest.hex()[:16]}.bin"
        path.write_bytes(update)
        path.with_suffix(".txt").write_text(f"room {room}\n{reason}\n", encoding="utf-8")
        self.deny(digest, reason.replace("\n", " "))
        return path

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def _load_deny_list(self) -> None:
        if self.deny_list_path.exists():
            for line in self.deny_list_path.read_text(encoding="ascii").splitlines():
                if line.strip():
                    self.denied.add(bytes.fromhex(line.split()[0]))

    def _map_slot(self) -> None:
        fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SLOT:
                os.ftruncate(fd, _SLOT)
            self._map = mmap.mmap(fd, _SLOT)
        finally:
            os.close(fd)
        if self._map[0:4] == _MAGIC:
            digest = bytes(self._map[4:_SLOT])
            log.error("poison_update_denied", digest=digest.hex(), journal=str(self.journal_path))
            self.deny(digest, "the process died while applying it")
        self._map[0:_SLOT] = _EMPTY
