"""A room's awareness table, and checks of awareness states beyond their framing
(proto/spec.md §2.3, §5). No I/O."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from gateway.errors import ProtocolError
from wedsync_protocol import codec
from wedsync_protocol.messages import AwarenessEntry, AwarenessUpdate

MAX_AWARENESS_CLOCKS = 10_000
"""Awareness clocks kept per room; beyond this only the present entries' clocks are kept."""


class AwarenessTable:
    """The present awareness entries of a room and the last clock of every client seen.

    Clocks are kept after an entry is removed, so a relayed old entry cannot resurrect it
    (y-protocols awareness clock rule).
    """

    __slots__ = ("_clocks", "_entries")

    def __init__(self) -> None:
        self._entries: dict[int, AwarenessEntry] = {}
        self._clocks: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterable[AwarenessEntry]:
        return self._entries.values()

    def changes(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """The entries that would change the table (newer clock, or a removal of a present
        entry); the caller checks who may write them, then calls ``apply``.

        Stock y-websocket clients relay the entries of others with the same clocks: those
        change nothing and are not counted as written by the relaying client.
        """
        changing = []
        for entry in entries:
            clock = self._clocks.get(entry.client_id, 0)
            present = entry.client_id in self._entries
            if entry.clock > clock or (entry.clock == clock and entry.removed and present):
                if entry.removed and not present:
                    self._clocks[entry.client_id] = entry.clock  # nothing to remove
                else:
                    changing.append(entry)
        return changing

    def apply(self, changing: list[AwarenessEntry]) -> None:
        """Write entries returned by ``changes``."""
        if len(self._clocks) > MAX_AWARENESS_CLOCKS:
            self._clocks = {c: e.clock for c, e in self._entries.items()}
        for entry in changing:
            self._clocks[entry.client_id] = entry.clock
            if entry.removed:
                del self._entries[entry.client_id]
            else:
                self._entries[entry.client_id] = entry

    def remove(self, client_ids: Iterable[int]) -> list[AwarenessEntry]:
        """Remove the present entries of ``client_ids`` (a member left); returns the removals
        to tell everyone else."""
        gone = [
            AwarenessEntry(cid, self._entries[cid].clock + 1, "null")
            for cid in client_ids
            if cid in self._entries
        ]
        for entry in gone:
            del self._entries[entry.client_id]
        return gone


def awareness_message(entries: Iterable[AwarenessEntry]) -> bytes:
    """One awareness message holding ``entries``."""
    return codec.encode(AwarenessUpdate(codec.encode_awareness(list(entries))))


def check_json(text: str, *, max_depth: int) -> None:
    """Refuse ``text`` unless it is JSON nested at most ``max_depth`` deep (awareness states are
    parsed by every stock client: malformed JSON there breaks them)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"awareness state is not valid JSON: {exc}") from None
    level: list[object] = [value]
    for depth in range(max_depth + 1):
        children: list[object] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children:
            return
        level = children
        if depth == max_depth - 1 and any(isinstance(c, dict | list) for c in level):
            raise ProtocolError(f"awareness state is nested deeper than {max_depth}")
