"""The client side of the y-websocket protocol with WedSync extensions. No I/O.

Feed it what the server sends (``receive_data``); send what it returns. It tracks which local
edits the server has made durable (proto/spec.md §4.2) and resends unacknowledged edits after a
reconnect, so an edit is never lost while the client lives.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from gateway.core import codec
from gateway.core.messages import (
    AUTH_TOKEN,
    EMPTY_UPDATE,
    EXTENSION_VERSION,
    Ack,
    Auth,
    AwarenessUpdate,
    Drain,
    Feature,
    Hello,
    Message,
    QueryAwareness,
    Reject,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)


class ClientProtocol:
    """Sync state of one client Doc across connections."""

    def __init__(self, doc: Doc[Any], *, acks: bool = True, token: str | None = None) -> None:
        self.doc = doc
        self.acks = acks
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
        self._outbox: list[bytes] = []
        self._subscription = doc.observe(self._on_transaction)

    # -- connection lifecycle -------------------------------------------------------------------

    def connection_made(self) -> list[bytes]:
        """Call once a WebSocket is open; send the returned messages in order."""
        self.synced = False
        self.connected = True
        self.acks_enabled = False
        self._seq = 0
        self._in_flight.clear()
        self._outbox.clear()
        out = []
        if self.token is not None:
            out.append(codec.encode(Auth(AUTH_TOKEN, self.token)))
        if self.acks:
            features = Feature.ACKS | Feature.REJECTS
            out.append(codec.encode(Hello(EXTENSION_VERSION, features)))
        out.append(codec.encode(SyncStep1(self.doc.get_state())))
        if self._unacked:  # resend: the server may have lost them (proto/spec.md §4.3)
            version = self._unacked[-1][0]
            merged = merge_updates(*(u for _, u in self._unacked))
            out.append(self._document_message(SyncUpdate(merged), version))
        return out

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
            case AwarenessUpdate() | QueryAwareness():
                return []
            case _:
                return []

    def data_to_send(self) -> list[bytes]:
        """Messages produced by local edits since the last call."""
        out, self._outbox = self._outbox, []
        return out

    # -- internals -------------------------------------------------------------------------------

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
