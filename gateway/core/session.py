"""Sync state of one client connection. No I/O; driven by one connection task."""

from __future__ import annotations

import enum
import itertools

from gateway.core import codec
from gateway.core.messages import Feature, Message
from gateway.errors import MessageTooBig

_ids = itertools.count(1)


class SessionState(enum.Enum):
    """CONNECTING → SYNCING → LIVE → CLOSED (proto/spec.md §3)."""

    CONNECTING = "connecting"  # accepted, room not joined yet
    SYNCING = "syncing"  # joined; server's step 1 sent; client's step 1 not answered yet
    LIVE = "live"  # step 2 sent: receives every later update of the room
    CLOSED = "closed"


class Session:
    """One client's protocol state: its lifecycle, opted-in features and message counters."""

    __slots__ = ("awareness_clients", "features", "id", "max_message_bytes", "seq", "state")

    def __init__(self, *, max_message_bytes: int) -> None:
        self.id = next(_ids)
        self.state = SessionState.CONNECTING
        self.features = Feature(0)
        self.seq = 0
        """Document-bearing messages (sync step 2 and update) received so far (proto §4.2)."""
        self.awareness_clients: set[int] = set()
        self.max_message_bytes = max_message_bytes

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state.value}>"

    @property
    def wants_acks(self) -> bool:
        return Feature.ACKS in self.features

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    def receive_data(self, data: bytes) -> Message:
        """Decode one binary WebSocket message from the client.

        Raises ProtocolError (or MessageTooBig) when the bytes break proto/spec.md; the caller
        must then close the connection with the error's close code.
        """
        if len(data) > self.max_message_bytes:
            raise MessageTooBig(
                f"message of {len(data)} bytes exceeds the limit of {self.max_message_bytes}"
            )
        return codec.decode(data)

    def next_seq(self) -> int:
        """Count one document-bearing message and return its sequence number (1-based)."""
        self.seq += 1
        return self.seq
