"""Identifiers shared by every layer."""

from __future__ import annotations

import enum
import re
from typing import NewType

RoomId = NewType("RoomId", str)
"""A wedding id: ``^[A-Za-z0-9_-]{1,64}$`` (proto/spec.md §1)."""

NodeId = NewType("NodeId", str)
"""This gateway process, as named in logs and on the bus."""

ClientId = NewType("ClientId", int)
"""A Yjs client id (the writer id inside updates and awareness entries)."""

ROOM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_room_id(text: str) -> RoomId | None:
    """Return ``text`` as a RoomId, or None when it is not a valid wedding id."""
    return RoomId(text) if ROOM_ID_PATTERN.fullmatch(text) else None


class Origin(enum.Enum):
    """Where a change to a room's document came from (never republish bus traffic)."""

    CLIENT = "client"
    BUS = "bus"
    STORE = "store"
