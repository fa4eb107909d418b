"""Messages of the y-websocket protocol and of the WedSync extensions (proto/spec.md §2-§4).

Enum values are the wire values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MessageType(enum.IntEnum):
    """First varUint of every message (proto/spec.md §2)."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    # 100-127: WedSync extensions, sent only to clients that said HELLO (proto/spec.md §4).
    HELLO = 100
    ACK = 101
    REJECT = 102
    DRAIN = 103
    RESUME = 104
    CATCH_UP = 105
    POSITION = 106
    STATUS = 107


class SyncType(enum.IntEnum):
    """Second varUint of a SYNC message (y-protocols sync)."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class Feature(enum.IntFlag):
    """Extension features a client asks for in HELLO (proto/spec.md §4.1)."""

    ACKS = 1
    REJECTS = 2
    RESUME = 4
    GZIP = 8


ALL_FEATURES = Feature.ACKS | Feature.REJECTS | Feature.RESUME | Feature.GZIP
"""The bits this version knows; others in a HELLO are ignored."""


EXTENSION_VERSION = 1
EMPTY_UPDATE = b"\x00\x00"
"""An update with no structs and an empty delete set: what a synced peer sends in step 2."""


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """'Here is my state vector; send me what I am missing.'"""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The answer to SyncStep1: an update with what the asker was missing."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """Awareness entries, still encoded (decode with ``codec.decode_awareness``)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """A y-protocols auth message: ``auth_type`` then a string (a token, or a denial reason)."""

    auth_type: int
    text: str


AUTH_PERMISSION_DENIED = 0
"""Auth type, server → client (y-protocols): the text says why; the close frame follows."""
AUTH_TOKEN = 1
"""Auth type, client → server (WedSync): the text is a token (proto/spec.md §2.4)."""


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """'Send me every awareness entry you know.'"""


@dataclass(frozen=True, slots=True)
class Hello:
    """Opt-in to WedSync extensions (client → server) or their confirmation (server → client)."""

    version: int
    features: Feature


@dataclass(frozen=True, slots=True)
class Ack:
    """The first ``seq`` document-bearing messages of this connection are durable."""

    seq: int


@dataclass(frozen=True, slots=True)
class Reject:
    """A change in message ``seq`` of this connection was refused and undone (proto §4.4):
    ``field`` names what it touched (``core.wedding_date``, ``timeline[dinner].end``,
    ``awareness``), ``reason`` says why."""

    seq: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Client → server, instead of sync step 1 (proto §4.6): where the client's document stands.

    ``epoch`` and ``offset`` are the last POSITION (or CATCH_UP) the client received, 0 and 0 if
    none; ``state_vector`` is its document's."""

    epoch: int
    offset: int
    state_vector: bytes


CATCH_UP_RESET = 1
"""CATCH_UP flag: the wedding's history was reset; drop the document, ``update`` is all of it."""
CATCH_UP_GZIP = 2
"""CATCH_UP flag: ``update`` is gzip-compressed (only to clients that accepted feature GZIP)."""
CATCH_UP_GZIP_BYTES = 1024
"""Catch-up updates from this size on are compressed for clients that accepted GZIP."""
CATCH_UP_GZIP_LEVEL = 1
"""Measured: 676 KB → 85 KB in 1.9 ms at level 1; level 6 saves 5 % more in 3.6 times the time."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Server → client, the answer to RESUME: everything the client lacks, in one message."""

    epoch: int
    offset: int
    flags: int
    update: bytes

    @property
    def reset(self) -> bool:
        return bool(self.flags & CATCH_UP_RESET)

    @property
    def gzip(self) -> bool:
        return bool(self.flags & CATCH_UP_GZIP)


@dataclass(frozen=True, slots=True)
class Position:
    """Server → client: the client's document now holds every stored update up to ``offset``."""

    epoch: int
    offset: int


@dataclass(frozen=True, slots=True)
class Drain:
    """This node is shutting down; reconnect (to another node) after ``retry_ms``."""

    retry_ms: int


STATUS_ACKS_PAUSED = 1
"""STATUS flag: the node cannot make updates durable now (its store is failing); updates are
still applied and broadcast, and their ACKs follow once the store recovers."""


@dataclass(frozen=True, slots=True)
class Status:
    """Server → client: the node's state as it affects this client (``STATUS_*`` flags, 0: all
    well). Sent when it changes, and after HELLO while it is not 0."""

    flags: int

    @property
    def acks_paused(self) -> bool:
        return bool(self.flags & STATUS_ACKS_PAUSED)


Message = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessUpdate
    | Auth
    | QueryAwareness
    | Hello
    | Ack
    | Reject
    | Drain
    | Status
    | Resume
    | CatchUp
    | Position
)


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's presence: ``state`` is JSON text, ``"null"`` when the client left."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"
