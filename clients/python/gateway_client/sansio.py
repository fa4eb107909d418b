"""The client side of the y-websocket protocol with WedSync extensions. No I/O.

Feed it what the server sends (``receive_data``); send what it returns. It tracks which local
edits the server has made durable (proto/spec.md §4.2) and resends unacknowledged edits after a
reconnect, so an edit is never lost while the client lives. The connection rules (HELLO, RESUME,
the server's sync step 1 held until the CATCH_UP, POSITION, ACK numbering) are
``gateway_client.sync.ClientSync``'s; this class is its ``Replica``: a pycrdt Doc and its edits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from gateway_client.sync import ClientSync, Origin
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AUTH_TOKEN,
    EMPTY_UPDATE,
    Auth,
    Drain,
    Feature,
    Message,
    Reject,
    Status,
    SyncUpdate,
)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """One ACK as the client saw it (proto/spec.md §4.2), for ``ClientProtocol.on_ack``."""

    seq: int
    """The ACK's cumulative sequence number on this connection."""
    sent: int
    """Document-bearing messages this connection had sent when the ACK arrived."""
    durable_before: int
    """``durable_version`` before this ACK."""
    durable_after: int
    """``durable_version`` after it: local edits ``durable_before + 1 .. durable_after`` became
    durable with this ACK (none when equal)."""


class ClientProtocol:
    """Sync state of one client Doc across connections.

    ``on_ack``, when set, is called with an ``Acknowledgement`` for every ACK received (an
    observer: tests and the load-test kit's fault suite record which edit became durable when).
    """

    def __init__(
        self, doc: Doc[Any], *, acks: bool = True, token: str | None = None, resume: bool = True
    ) -> None:
        self.doc = doc
        self.acks = acks
        self.resume = resume and acks
        """Resume with RESUME (epoch, offset, state vector) instead of sync step 1 (§4.6)."""
        features = None
        if acks:
            features = Feature.ACKS | Feature.REJECTS
            if self.resume:
                features |= Feature.RESUME | Feature.GZIP
        self.sync = ClientSync(self, features=features, resume=self.resume, token=token)
        self.resets = 0
        """Times the server said the wedding's history was reset (the document was replaced)."""
        self.catch_up_bytes: list[int] = []
        """Size of each CATCH_UP update received (the resume payloads)."""
        self.connected = False
        self.local_version = 0  # local edits made so far
        self.durable_version = 0  # local edits known durable at the server
        self.rejected: list[Reject] = []
        self.drain: Drain | None = None
        self.acks_paused = False
        """The server said it cannot make edits durable now (STATUS, proto/spec.md §4.7): edits
        are applied and shared, their ACKs come once its store recovers."""
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._in_flight: deque[tuple[int, int]] = deque()  # (seq, local version it covers)
        self._applying_remote = False
        self._outbox: list[bytes] = []
        self._subscription = doc.observe(self._on_transaction)
        self.on_ack: Callable[[Acknowledgement], None] | None = None

    @property
    def epoch(self) -> int:
        """The epoch of the last position the server gave (§4.6); 0 at first."""
        return self.sync.epoch

    @property
    def position(self) -> int:
        """The offset the server said this document covers (§4.6); 0 at first."""
        return self.sync.offset

    @property
    def synced(self) -> bool:
        """This connection's initial sync (sync step 2 or CATCH_UP) is done."""
        return self.sync.synced

    @property
    def acks_enabled(self) -> bool:
        return self.sync.acks_enabled

    @property
    def token(self) -> str | None:
        """Sent in an auth message first on each connection (proto/spec.md §2.4)."""
        return self.sync.token

    # -- connection lifecycle -------------------------------------------------------------------

    def connection_made(self) -> list[bytes]:
        """Call once a WebSocket is open; send the returned messages in order."""
        self.connected = True
        self._in_flight.clear()
        self._outbox.clear()
        return self.sync.connection_made(self.doc.get_state())

    def resend(self) -> list[bytes]:
        """Unacknowledged edits, merged: the server may have lost them (proto/spec.md §4.3)."""
        if not self._unacked:
            return []
        version = self._unacked[-1][0]
        merged = merge_updates(*(u for _, u in self._unacked))
        return [self._document_message(SyncUpdate(merged), version)]

    def refresh_token(self, token: str) -> list[bytes]:
        """Replace the token (a later expiry, a new role); returns the message to send now."""
        self.sync.token = token
        return [codec.encode(Auth(AUTH_TOKEN, token))] if self.connected else []

    def connection_lost(self) -> None:
        """Call when the WebSocket closed; edits go on locally and are resent on reconnect."""
        self.sync.synced = False
        self.connected = False
        self.acks_paused = False  # the next node says so again if its store is failing too
        self._in_flight.clear()
        self._outbox.clear()

    # -- data ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[bytes]:
        """Handle one message from the server; returns messages to send back."""
        return list(self.sync.receive_data(data))

    def data_to_send(self) -> list[bytes]:
        """Messages produced by local edits since the last call."""
        out, self._outbox = self._outbox, []
        return out

    # -- Replica (called by ClientSync) ------------------------------------------------------------

    def received(self, update: bytes, origin: Origin) -> None:
        if origin is Origin.RESET:
            self._reset()
        if origin is Origin.CATCH_UP or origin is Origin.RESET:
            self.catch_up_bytes.append(self.sync.catch_up_bytes)  # as received: gzip or not
        self._apply_remote(update)

    def answer(self, state_vector: bytes) -> bytes:
        return self.doc.get_update(state_vector)

    def acknowledged(self, seq: int) -> None:
        before = self.durable_version
        while self._in_flight and self._in_flight[0][0] <= seq:
            _, version = self._in_flight.popleft()
            self.durable_version = max(self.durable_version, version)
        while self._unacked and self._unacked[0][0] <= self.durable_version:
            self._unacked.popleft()
        if self.on_ack is not None:
            self.on_ack(Acknowledgement(seq, self.sync.seq, before, self.durable_version))

    def other(self, message: Message) -> None:
        match message:
            case Reject():
                self.rejected.append(message)
            case Drain():
                self.drain = message
            case Status():
                self.acks_paused = message.acks_paused
            case _:
                pass  # awareness: this client shows no presence

    # -- internals -------------------------------------------------------------------------------

    def _reset(self) -> None:
        """The server's history was reset: this document belongs to a history that no longer
        exists. Start from a new, empty Doc (edits not yet acknowledged are dropped with it:
        merging them would bring the old history back)."""
        self.doc.unobserve(self._subscription)
        self.doc = Doc()
        self._subscription = self.doc.observe(self._on_transaction)
        self._unacked.clear()
        self.durable_version = self.local_version
        self.resets += 1

    def _apply_remote(self, update: bytes) -> None:
        if update == EMPTY_UPDATE:
            return
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._applying_remote or event.update == EMPTY_UPDATE:
            return
        self.local_version += 1
        self._unacked.append((self.local_version, event.update))
        if self.connected:
            message = self._document_message(SyncUpdate(event.update), self.local_version)
            self._outbox.append(message)

    def _document_message(self, message: SyncUpdate, version: int) -> bytes:
        seq, data = self.sync.document(message)
        self._in_flight.append((seq, version))
        return data

    @property
    def unacked(self) -> int:
        """Local edits not yet known durable."""
        return len(self._unacked)
