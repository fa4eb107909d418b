"""Backlog: what a client that reads too slowly is owed, collapsed instead of queued.

A member whose outbox is full (``GATEWAY_CLIENT_QUEUE_LIMIT`` messages or
``GATEWAY_CLIENT_OUTBOX_BYTES`` bytes wait for it) is not closed for being behind: the messages
that follow go into its Backlog, which keeps

- every document update (sync update or step 2) merged into one update,
- the awareness entries, the newest per client id,
- the latest ACK, POSITION and STATUS (each supersedes the ones before it: ACKs only grow),
- every other message (REJECT, DRAIN, CATCH_UP, a step 1, a HELLO answer) in order.

When the client has read what was queued before, ``frames()`` hands over the messages to send
instead, in that order. Every part moves content earlier than the messages that followed it
or acknowledgements later, never the reverse: a REJECT still comes after the undo it explains
and an ACK after the updates it covers. A Backlog that would hold more than its bounds raises
SlowClient (close 4001): the client drains too little for even the collapsed form. No I/O.
"""

from __future__ import annotations

from pycrdt import merge_updates

from gateway.errors import SlowClient, WireProtocolError
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    Ack,
    AwarenessEntry,
    AwarenessUpdate,
    Position,
    Status,
    SyncStep2,
    SyncUpdate,
)

MERGE_EVERY = 64
"""Document updates kept apart before they are merged into one (bounds the merges' cost and
lets the byte bound see the merged size)."""


class Backlog:
    """The collapsed messages owed to one client (see the module's docstring)."""

    __slots__ = (
        "_ack",
        "_awareness",
        "_others",
        "_position",
        "_status",
        "_step2",
        "_updates",
        "collapsed",
        "max_bytes",
        "max_messages",
    )

    def __init__(self, *, max_bytes: int, max_messages: int) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._updates: list[bytes] = []  # merged into one every MERGE_EVERY
        self._step2 = False  # a step 2 was among them: the merged update goes out as a step 2
        self._awareness: dict[int, AwarenessEntry] = {}
        self._ack: bytes | None = None
        self._position: bytes | None = None
        self._status: bytes | None = None
        self._others: list[bytes] = []
        self.collapsed = 0
        """Messages taken in (reported when the client catches up)."""

    def add(self, data: bytes) -> None:
        """Take one encoded server message. Raises SlowClient over the bounds."""
        self.collapsed += 1
        try:
            message = codec.decode_server_message(data)
        except WireProtocolError:
            message = None  # not ours to read (never expected): kept as it is
        match message:
            case SyncUpdate(update):
                self._add_update(update)
            case SyncStep2(update):
                self._step2 = True
                self._add_update(update)
            case AwarenessUpdate(payload):
                self._add_awareness(payload, data)
            case Ack():
                self._ack = data
            case Position():
                self._position = data
            case Status():
                self._status = data
            case _:
                self._others.append(data)
                if len(self._others) > self.max_messages:
                    raise SlowClient(f"{len(self._others)} messages wait for this client")
        if self.size() > self.max_bytes:
            raise SlowClient(f"{self.size()} bytes wait for this client, collapsed")

    def size(self) -> int:
        """Bytes held (awareness states counted by their text)."""
        return (
            sum(map(len, self._updates))
            + sum(len(e.state) + 8 for e in self._awareness.values())
            + sum(map(len, self._others))
            + sum(len(m) for m in (self._ack, self._position, self._status) if m is not None)
        )

    def frames(self) -> list[bytes]:
        """The messages to send in place of everything taken in."""
        frames: list[bytes] = []
        if self._updates:
            update = self._merged()
            kind = SyncStep2(update) if self._step2 else SyncUpdate(update)
            frames.append(codec.encode(kind))
        if self._awareness:
            entries = list(self._awareness.values())
            frames.append(codec.encode(AwarenessUpdate(codec.encode_awareness(entries))))
        frames += self._others
        frames += [m for m in (self._ack, self._position, self._status) if m is not None]
        return frames

    def _add_update(self, update: bytes) -> None:
        self._updates.append(update)
        if len(self._updates) >= MERGE_EVERY:
            self._updates = [self._merged()]

    def _merged(self) -> bytes:
        if len(self._updates) == 1:
            return self._updates[0]
        try:
            return merge_updates(*self._updates)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # pyo3 panics are BaseExceptions (DESIGN.md §7)
            raise SlowClient("behind, and its updates could not be merged") from None

    def _add_awareness(self, payload: bytes, data: bytes) -> None:
        try:
            entries = codec.decode_awareness(payload, max_entries=len(payload))
        except WireProtocolError:
            self._others.append(data)  # never expected: ours, checked when it came in
            return
        for entry in entries:
            known = self._awareness.get(entry.client_id)
            if known is None or entry.clock >= known.clock:
                self._awareness[entry.client_id] = entry
