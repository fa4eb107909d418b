"""The client side of the y-websocket protocol with WedSync extensions. No I/O.

Feed it what the server sends (``receive_data``); send what it returns. It tracks which local
edits the server has made durable (proto/spec.md §4.2) and resends unacknowledged edits after a
reconnect, so an edit is never lost while the client lives.
"""

from __future__ import annotations

import gzip
from collections import deque
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AUTH_TOKEN,
    EMPTY_UPDATE,
    EXTENSION_VERSION,
    Ack,
    Auth,
    AwarenessUpdate,
    CatchUp,
    Drain,
    Feature,
    Hello,
    Message,
    Position,
    QueryAwareness,
    Reject,
    Resume,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)


class ClientProtocol:
    """Sync state of one client Doc across connections."""

    def __init__(
        self, doc: Doc[Any], *, acks: bool = True, token: str | None = None, resume: bool = True
    ) -> None:
        self.doc = doc
        self.acks = acks
        self.resume = resume and acks
        """Resume with RESUME (epoch, offset, state vector) instead of sync step 1 (§4.6)."""
        self.epoch = 0
        self.position = 0
        """The last (epoch, offset) the server said this document covers; 0, 0 at first."""
        self.resets = 0
        """Times the server said the wedding's history was reset (the document was replaced)."""
        self.catch_up_bytes: list[int] = []
        """Size of each CATCH_UP update received (the resume payloads)."""
        self.token = token
        """Sent in an auth message first on each connection (proto/spec.md §2.4)."""
        self.synced = False
        self.connected = False
        self.acks_enabled = False
        self.local_version = 0  # local edits made so far
        self.durable_version = 0  # local edits known durable at the server
        self.rejected: list[Reject] = []
        self.drain: Drain | None = None
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._seq = 0  # document-bearing messages sent on this connection
        self._in_flight: deque[tuple[int, int]] = deque()  # (seq, local version it covers)
        self._applying_remote = False
        self._caught_up = False
        self._server_state: bytes | None = None
        """The server's sync step 1, held until the CATCH_UP (resume mode)."""
        self._outbox: list[bytes] = []
        self._subscription = doc.observe(self._on_transaction)

    # -- connection lifecycle -------------------------------------------------------------------

    def connection_made(self) -> list[bytes]:
        """Call once a WebSocket is open; send the returned messages in order."""
        self.synced = False
        self.connected = True
        self._caught_up = False
        self._server_state = None
        self.acks_enabled = False
        self._seq = 0
        self._in_flight.clear()
        self._outbox.clear()
        out = []
        if self.token is not None:
            out.append(codec.encode(Auth(AUTH_TOKEN, self.token)))
        if self.acks:
            features = Feature.ACKS | Feature.REJECTS
            if self.resume:
                features |= Feature.RESUME | Feature.GZIP
            out.append(codec.encode(Hello(EXTENSION_VERSION, features)))
        if self.resume:  # resent after the CATCH_UP: they may belong to a history now reset
            out.append(codec.encode(Resume(self.epoch, self.position, self.doc.get_state())))
            return out
        out.append(codec.encode(SyncStep1(self.doc.get_state())))
        out.extend(self._resend())
        return out

    def _resend(self) -> list[bytes]:
        """Unacknowledged edits, merged: the server may have lost them (proto/spec.md §4.3)."""
        if not self._unacked:
            return []
        version = self._unacked[-1][0]
        merged = merge_updates(*(u for _, u in self._unacked))
        return [self._document_message(SyncUpdate(merged), version)]

    def refresh_token(self, token: str) -> list[bytes]:
        """Replace the token (a later expiry, a new role); returns the message to send now."""
        self.token = token
        return [codec.encode(Auth(AUTH_TOKEN, token))] if self.connected else []

    def connection_lost(self) -> None:
        """Call when the WebSocket closed; edits go on locally and are resent on reconnect."""
        self.synced = False
        self.connected = False
        self._in_flight.clear()
        self._outbox.clear()

    # -- data ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[bytes]:
        """Handle one message from the server; returns messages to send back."""
        message = codec.decode_server_message(data)
        return self._handle(message)

    def _handle(self, message: Message) -> list[bytes]:
        match message:
            case SyncStep1(state_vector):
                if self.resume and not self._caught_up:
                    self._server_state = state_vector  # answered after the CATCH_UP: the
                    return []  # document may belong to a history the server has reset
                return [self._document_message(SyncStep2(self.doc.get_update(state_vector)), 0)]
            case SyncStep2(update):
                self._apply_remote(update)
                self.synced = True
                return []
            case SyncUpdate(update):
                self._apply_remote(update)
                return []
            case Hello(_, features):
                self.acks_enabled = Feature.ACKS in features
                return []
            case Ack(seq):
                self._acknowledge(seq)
                return []
            case Reject():
                self.rejected.append(message)
                return []
            case Drain():
                self.drain = message
                return []
            case CatchUp(epoch, offset, _, update):
                if message.reset:
                    self._reset()
                self.catch_up_bytes.append(len(update))  # as received: compressed if gzip
                if message.gzip:
                    update = gzip.decompress(update)
                self._apply_remote(update)
                self.epoch, self.position = epoch, offset
                self.synced = True
                self._caught_up = True
                out = []
                if self._server_state is not None:
                    answer = SyncStep2(self.doc.get_update(self._server_state))
                    out.append(self._document_message(answer, 0))
                    self._server_state = None
                return out + self._resend()
            case Position(epoch, offset):
                self.epoch, self.position = epoch, offset
                return []
            case AwarenessUpdate() | QueryAwareness():
                return []
            case _:
                return []

    def data_to_send(self) -> list[bytes]:
        """Messages produced by local edits since the last call."""
        out, self._outbox = self._outbox, []
        return out

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

    def _document_message(self, message: SyncStep2 | SyncUpdate, version: int) -> bytes:
        self._seq += 1
        self._in_flight.append((self._seq, version))
        return codec.encode(message)

    def _acknowledge(self, seq: int) -> None:
        while self._in_flight and self._in_flight[0][0] <= seq:
            _, version = self._in_flight.popleft()
            self.durable_version = max(self.durable_version, version)
        while self._unacked and self._unacked[0][0] <= self.durable_version:
            self._unacked.popleft()

    @property
    def unacked(self) -> int:
        """Local edits not yet known durable."""
        return len(self._unacked)
