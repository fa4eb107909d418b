"""ApplyJournal: what a room calls around applying one client update (no I/O here)."""

from __future__ import annotations

from typing import Protocol


class ApplyJournal(Protocol):
    """Brackets every client update a room applies (gateway/durability.py ``ApplyGate``).

    ``begin_apply`` runs before the update is checked or applied: raising there (a GatewayError)
    refuses it, and nothing of it is applied, broadcast or stored. ``end_apply`` runs after,
    whatever happened, unless the process died (gateway/crash_journal.py).
    """

    def begin_apply(self, update: bytes) -> None: ...

    def end_apply(self) -> None: ...
