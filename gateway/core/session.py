"""Sync state of one client connection. No I/O; driven by one connection task."""

from __future__ import annotations

import enum
import itertools

from gateway.core.limits import Limits, TokenBucket
from gateway.core.policy import DEVELOPMENT_GRANT, Awareness, Grant
from gateway.errors import (
    InvalidState,
    MessageTooBig,
    RateLimited,
    WireProtocolError,
    as_gateway_error,
)
from wedsync_protocol import codec
from wedsync_protocol.messages import ALL_FEATURES, Feature, Message

_ids = itertools.count(1)


class SessionState(enum.Enum):
    """CONNECTING → SYNCING → LIVE → CLOSED (proto/spec.md §3)."""

    CONNECTING = "connecting"  # accepted, room not joined yet
    SYNCING = "syncing"  # joined; server's step 1 sent; client's step 1 not answered yet
    LIVE = "live"  # step 2 sent: receives every later update of the room
    CLOSED = "closed"


class Session:
    """One client's protocol state: its lifecycle, opted-in features and message counters.

    Only its own methods change ``state`` and ``features``; the room calls them.
    """

    __slots__ = (
        "_owed",
        "acked",
        "byte_rate",
        "client_id_claims",
        "features",
        "grant",
        "id",
        "last_receive",
        "max_message_bytes",
        "message_rate",
        "owned_client_ids",
        "pacing",
        "seq",
        "state",
    )

    def __init__(
        self, *, max_message_bytes: int, limits: Limits | None = None, now: float = 0.0
    ) -> None:
        self.id = next(_ids)
        self.state = SessionState.CONNECTING
        self.features = Feature(0)
        self.grant: Grant = DEVELOPMENT_GRANT
        """What this connection may do in its wedding (its token's; replaced by a refresh)."""
        self.seq = 0
        """Document-bearing messages (sync step 2 and update) received so far (proto §4.2)."""
        self.acked = 0
        """The highest ACK sent to the client: ACKs only grow (a relayed one is sent once)."""
        self.owned_client_ids: set[int] = set()
        self.client_id_claims: list[float] = []  # when each new client id was claimed
        self.last_receive = now
        self.max_message_bytes = max_message_bytes
        self._owed = 0.0  # seconds of pause the last message's cost asks for
        self.message_rate: TokenBucket | None = None
        self.byte_rate: TokenBucket | None = None
        self.pacing: TokenBucket | None = None
        """Seconds this client may still be held back (``rate_pacing_seconds`` per
        ``rate_window_seconds``): spent by each pause, refilled over the window."""
        if limits is not None:
            self.message_rate = TokenBucket(
                limits.messages_per_second, limits.message_burst, now=now
            )
            self.byte_rate = TokenBucket(limits.bytes_per_second, limits.byte_burst, now=now)
            self.pacing = TokenBucket(
                limits.rate_pacing_seconds / limits.rate_window_seconds,
                limits.rate_pacing_seconds,
                now=now,
            )

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state.value}>"

    @property
    def wants_acks(self) -> bool:
        return Feature.ACKS in self.features

    @property
    def resumes(self) -> bool:
        """Opted in to RESUME: receives POSITION (proto §4.6)."""
        return Feature.RESUME in self.features

    @property
    def wants_rejects(self) -> bool:
        return Feature.REJECTS in self.features

    @property
    def receives_awareness(self) -> bool:
        return self.grant.rights.awareness is not Awareness.NONE

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    def receive_data(self, data: bytes, now: float = 0.0) -> Message:
        """Decode one binary WebSocket message from the client, received at ``now`` (seconds).

        Raises ProtocolError (or MessageTooBig) when the bytes break proto/spec.md; the caller
        must then close the connection with the error's close code. The message's cost against
        the client's rates is counted: ``pause`` says how long to wait before reading on.
        """
        self.last_receive = now
        if len(data) > self.max_message_bytes:
            raise MessageTooBig(
                f"message of {len(data)} bytes exceeds the limit of {self.max_message_bytes}"
            )
        if self.message_rate is not None and self.byte_rate is not None:
            self._owed = max(self.message_rate.owe(1, now), self.byte_rate.owe(len(data), now))
        try:
            return codec.decode(data)
        except WireProtocolError as exc:
            raise as_gateway_error(exc) from None

    def pause(self, now: float) -> float:
        """Seconds to stop reading from this client so that it keeps to its message and byte
        rates (0.0 when it does): a client over them is paced, not cut off. Raises RateLimited
        once it has been held back more than ``rate_pacing_seconds`` within
        ``rate_window_seconds``: the excess is sustained."""
        owed, self._owed = self._owed, 0.0
        if not owed or self.pacing is None:
            return 0.0
        if not self.pacing.take(owed, now):
            assert self.message_rate is not None
            assert self.byte_rate is not None
            raise RateLimited(
                f"over {self.message_rate.rate:g} messages/s or {self.byte_rate.rate:g} bytes/s"
                f" for too long: held back more than {self.pacing.burst:g} s"
                f" in {self.pacing.burst / self.pacing.rate:g} s"
            )
        return owed

    # -- transitions (proto/spec.md §3); called by the room --------------------------------------

    def joined(self) -> None:
        """CONNECTING → SYNCING: the room sent its sync step 1. Joining twice is our bug."""
        if self.state is not SessionState.CONNECTING:
            raise InvalidState(f"{self} joined a room twice")
        self.state = SessionState.SYNCING

    def went_live(self) -> None:
        """→ LIVE: its step 1 (or RESUME) was answered; later updates reach it by broadcast."""
        self.state = SessionState.LIVE

    def left(self) -> None:
        """→ CLOSED: it left the room."""
        self.state = SessionState.CLOSED

    def accept(self, features: Feature) -> Feature:
        """HELLO (proto/spec.md §4.1): keep the features this server knows; return them."""
        self.features = features & ALL_FEATURES
        return self.features

    def next_seq(self) -> int:
        """Count one document-bearing message and return its sequence number (1-based)."""
        self.seq += 1
        return self.seq
