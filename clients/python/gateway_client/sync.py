"""The connection rules every WedSync client shares, without a document and without I/O.

``ClientSync`` decides what a client sends when a connection opens (auth, HELLO, then RESUME or
sync step 1), when it answers the server's sync step 1 (only after the CATCH_UP when resuming,
proto/spec.md §4.6), when it resends unacknowledged edits (§4.3, §4.6), the position
``(epoch, offset)`` kept across connections (§4.6), and the sequence numbers of the
document-bearing messages that an ACK counts (§4.2). What an update does to the document and
what an ACK means to its owner belong to the owner, a ``Replica``.

``gateway_client.sansio.ClientProtocol`` and the load-test kit's clients (loadtest/client.py,
loadtest/resume_bench.py) all drive this one class, each over its own sockets.
"""

from __future__ import annotations

import enum
import gzip
from typing import Protocol

from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AUTH_TOKEN,
    EXTENSION_VERSION,
    Ack,
    Auth,
    CatchUp,
    Feature,
    Hello,
    Message,
    Position,
    Resume,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

NOTHING: tuple[bytes, ...] = ()
"""What most messages need sent back (shared: the load generator receives thousands a second)."""


class Origin(enum.Enum):
    """Where a remote update came from."""

    UPDATE = "update"
    """A live update (sync update) from another client."""
    STEP2 = "step2"
    """A sync step 2: the server's answer to this client's sync step 1 (the initial sync)."""
    CATCH_UP = "catch-up"
    """A CATCH_UP: everything this client lacked (§4.6); ``ClientSync.offset`` moves after it."""
    RESET = "reset"
    """A CATCH_UP with RESET: the history this client held is gone; replace the document with
    this update (do not merge it) and drop unacknowledged edits (§4.6)."""


class Replica(Protocol):
    """The document side of a client, called by ``ClientSync.receive``."""

    def received(self, update: bytes, origin: Origin) -> None:
        """Apply a remote update (a CATCH_UP's already decompressed)."""

    def answer(self, state_vector: bytes) -> bytes | None:
        """The update answering the server's sync step 1 (the document's diff against
        ``state_vector``), or None to leave it unanswered."""

    def resend(self) -> list[bytes]:
        """Edits to resend now (§4.3), each numbered with ``ClientSync.document``; often []."""

    def acknowledged(self, seq: int) -> None:
        """The server made every document-bearing message up to ``seq`` durable (§4.2)."""

    def other(self, message: Message) -> None:
        """A message with no connection rule: REJECT, DRAIN, awareness."""


class ClientSync:
    """One client's connection state across connections; feed it every server message.

    ``features`` is sent in HELLO (None: no HELLO, a stock y-websocket client). ``resume``
    opens with RESUME instead of sync step 1 (§4.6); ``token`` is sent in an auth message first
    on each connection (§2.4).
    """

    __slots__ = (
        "_caught_up",
        "_held_step1",
        "acks_enabled",
        "catch_up_bytes",
        "epoch",
        "features",
        "offset",
        "replica",
        "resume",
        "seq",
        "synced",
        "token",
    )

    def __init__(
        self,
        replica: Replica,
        *,
        features: Feature | None,
        resume: bool = False,
        token: str | None = None,
    ) -> None:
        self.replica = replica
        self.features = features
        self.resume = resume
        self.token = token
        self.epoch = 0
        self.offset = 0
        """The last (epoch, offset) the server said this document covers; 0, 0 at first."""
        self.catch_up_bytes = 0
        """The size of the last CATCH_UP's update as received (compressed if gzip)."""
        self.synced = False
        """This connection's initial sync is done (sync step 2 or CATCH_UP received)."""
        self.acks_enabled = False
        """The server answered HELLO with feature ACKS on this connection."""
        self.seq = 0
        """Document-bearing messages sent on this connection: what ACK(seq) counts (§4.2)."""
        self._caught_up = False
        self._held_step1: bytes | None = None

    def connection_made(self, state_vector: bytes) -> list[bytes]:
        """Call once a WebSocket is open, with the document's state vector; send the returned
        messages in order. Edits are resent at once (§4.3), or after the CATCH_UP when resuming:
        they may belong to a history the server has reset (§4.6)."""
        self.synced = self.acks_enabled = self._caught_up = False
        self._held_step1 = None
        self.seq = 0
        out = []
        if self.token is not None:
            out.append(codec.encode(Auth(AUTH_TOKEN, self.token)))
        if self.features is not None:
            out.append(codec.encode(Hello(EXTENSION_VERSION, self.features)))
        if self.resume:
            out.append(codec.encode(Resume(self.epoch, self.offset, state_vector)))
            return out
        out.append(codec.encode(SyncStep1(state_vector)))
        out.extend(self.replica.resend())
        return out

    def document(self, message: SyncStep2 | SyncUpdate) -> tuple[int, bytes]:
        """Number a document-bearing message (its seq is what an ACK names) and encode it;
        send the bytes on this connection."""
        self.seq += 1
        return self.seq, codec.encode(message)

    def receive_data(self, data: bytes) -> tuple[bytes, ...]:
        """Decode one server message (raises ``wedsync_protocol.ProtocolError``) and handle it."""
        return self.receive(codec.decode_server_message(data))

    def receive(self, message: Message) -> tuple[bytes, ...]:
        """Handle one decoded server message; send the returned messages in order."""
        match message:  # the most frequent first: this runs once per message received
            case SyncUpdate(update):
                self.replica.received(update, Origin.UPDATE)
            case Ack(seq):
                self.replica.acknowledged(seq)
            case Position(epoch, offset):
                self.epoch, self.offset = epoch, offset
            case SyncStep1(state_vector):
                if self.resume and not self._caught_up:
                    self._held_step1 = state_vector  # answered after the CATCH_UP (§4.6)
                    return NOTHING
                return self._answer(state_vector)
            case SyncStep2(update):
                self.replica.received(update, Origin.STEP2)
                self.synced = True
            case CatchUp():
                return self._catch_up(message)
            case Hello(_, features):
                self.acks_enabled = Feature.ACKS in features
            case _:
                self.replica.other(message)
        return NOTHING

    def _catch_up(self, message: CatchUp) -> tuple[bytes, ...]:
        update = message.update
        self.catch_up_bytes = len(update)
        if message.gzip:
            update = gzip.decompress(update)
        self.replica.received(update, Origin.RESET if message.reset else Origin.CATCH_UP)
        self.epoch, self.offset = message.epoch, message.offset
        self.synced = self._caught_up = True
        held, self._held_step1 = self._held_step1, None
        out = self._answer(held) if held is not None else NOTHING
        resent = self.replica.resend()
        return out + tuple(resent) if resent else out

    def _answer(self, state_vector: bytes) -> tuple[bytes, ...]:
        update = self.replica.answer(state_vector)
        if update is None:
            return NOTHING
        return (self.document(SyncStep2(update))[1],)
