"""One simulated client: a pycrdt Doc, its WebSocket, and what it measures.

Every edit carries ``LT|<sender>|<seq>|<intended ns>|<sent ns>|`` (CLOCK_MONOTONIC) in the value
it writes, so a receiver reads the sender, the sequence number and the send times straight out of
the update bytes (one regex; the update is also applied to the receiver's Doc, for the
convergence check). Every edit is valid under proto/schema.md, which the gateway enforces: the
wedding is created with its required core fields before the first edit, a core edit sets
``core["notes"]``, a timeline edit appends a complete entry.
All generator processes run on one machine, and CLOCK_MONOTONIC is system-wide on Linux, so the
receiver's clock and the embedded stamp compare directly. The stamp is the *intended* send time
of an open-model schedule: a late sender adds its lateness to the latency (coordinated-omission
correction).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import time
from collections import deque
from typing import Any

import orjson
from pycrdt import Array, Doc, Map, TransactionEvent

from gateway_client.sync import ClientSync, Origin
from loadtest.config import WEDDING_AUTHOR_CLIENT_ID, AckMode, RunConfig, Target
from loadtest.stats import record_us
from loadtest.tally import Tally
from loadtest.wsclient import WsConnection, open_connection
from wedsync_protocol import codec
from wedsync_protocol.codec import decode_state_vector
from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import (
    AwarenessUpdate,
    Feature,
    Message,
    Reject,
    SyncStep2,
    SyncUpdate,
)

MARKER = re.compile(rb"LT\|(\d+)\|(\d+)\|(\d+)\|(\d+)\|")
CONNECT_TIMEOUT = 30.0
WEDDING_CORE = {"partner_a": "Load", "partner_b": "Test", "status": "planning"}
"""The required core fields (proto/schema.md): a wedding without them accepts no core edit."""


@functools.cache
def wedding_update() -> bytes:
    """The update that creates a wedding: its required core fields, in one update.

    It is written with one fixed Yjs client id, so every client that sends it sends the same
    structs: a server applies the first copy it gets and ignores the others (nothing new).
    """
    doc: Doc[Any] = Doc(client_id=WEDDING_AUTHOR_CLIENT_ID)
    doc.get("core", type=Map).update(WEDDING_CORE)
    return doc.get_update()


def timeline_entry(sender: int, seq: int, marker: str) -> dict[str, str]:
    """A new timeline entry valid under proto/schema.md, its notes the marker (< 100 chars).

    The id is unique per sender and edit, and at most 44 characters (two 20-digit numbers), well
    within the schema's 64.
    """
    return {
        "id": f"lt-{sender}-{seq}",
        "title": "Load test",
        "start": f"{seq // 60 % 24:02d}:{seq % 60:02d}",
        "notes": marker,
    }


class LoadClient:
    """A y-websocket client that edits on command and records every delivery it sees.

    The connection rules (HELLO, RESUME, the server's sync step 1 held until the CATCH_UP,
    POSITION, ACK numbering) are the Python client's ``ClientSync``; this class is its
    ``Replica``. Unlike ``GatewayClient`` it resends nothing after a reconnect: an edit made
    while offline is not made at all (the driver edits only live clients), so every edit is
    sent once and counted once.
    """

    def __init__(self, gid: int, config: RunConfig, tally: Tally) -> None:
        self.gid = gid
        self.config = config
        self.tally = tally
        self.url = config.url_of(gid)
        self.doc: Doc[Any] = Doc(client_id=config.doc_client_id(gid))
        self.core = self.doc.get("core", type=Map)
        self.timeline = self.doc.get("timeline", type=Array)
        self._subscription = self.doc.observe(self._on_transaction)
        self._capturing = False
        self._captured = b""
        self.conn: WsConnection | None = None
        self.closed = asyncio.Event()  # set while no connection is open
        self.closed.set()
        self.live = False
        self.acks = False  # the server acknowledges this connection's edits (proto/spec.md §4.2)
        self.edit_seq = 0  # edits made, over every connection
        self.pending_acks: deque[tuple[int, int]] = deque()  # (message seq, intended ns)
        self._synced: asyncio.Future[None] | None = None
        self._now = 0  # when the message being handled arrived (CLOCK_MONOTONIC ns)
        # What this client has seen from each other member: the highest seq (core fields are
        # last-writer-wins, so seeing seq k means every value up to k is reflected) or, for
        # timeline entries, one flag per seq.
        self.seen_max: dict[int, int] = {}
        self.seen_entries: dict[int, bytearray] = {}
        self.covered = 0
        self.expected = 0  # set once the run's final sent counts are known
        self.updates_received = 0
        self._caught_up_at = -1  # updates_received when the state vector was last read
        # RESUME (--resume, proto/spec.md §4.6): the size of the last catch-up payload (the
        # update of the CATCH_UP, or of the sync step 2 answering this client's step 1).
        self.catch_up_bytes = 0
        features = None
        if config.acks is not AckMode.OFF:
            features = Feature.ACKS | Feature.REJECTS
            if config.resume:
                features |= Feature.RESUME  # not GZIP: the payload is measured as the server
        self.sync = ClientSync(self, features=features, resume=config.resume)  # builds it

    @property
    def epoch(self) -> int:
        """The epoch of the last position the server gave (§4.6)."""
        return self.sync.epoch

    @property
    def offset(self) -> int:
        """The last offset the server gave (CATCH_UP or POSITION, §4.6)."""
        return self.sync.offset

    @property
    def is_resumer(self) -> bool:
        return self.config.is_resumer(self.gid)

    # -- connecting --------------------------------------------------------------------------------

    async def connect(self) -> tuple[int, int]:
        """Open the socket and finish the initial sync; returns (connect µs, sync µs)."""
        started = time.monotonic_ns()
        self.conn = await open_connection(
            self.url, self, timeout=CONNECT_TIMEOUT, deflate=self.config.deflate
        )
        if self.conn.deflate:
            self.tally.deflate_connections += 1
        self.closed.clear()
        opened = time.monotonic_ns()
        self._synced = asyncio.get_running_loop().create_future()
        for data in self.sync.connection_made(self.doc.get_state()):
            self.conn.send(data)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await self._synced
        self.acks = self.sync.acks_enabled
        if self.config.edits:
            self.ensure_wedding()
        self.live = True
        synced = time.monotonic_ns()
        return (opened - started) // 1000, (synced - started) // 1000

    def dispose(self) -> None:
        """Let the Doc go once this client is done: pycrdt's Doc holds its observer (and so
        this client) in Rust, where the cycle collector cannot free them (loadtest/soak.py)."""
        self.doc.unobserve(self._subscription)

    def drop(self, *, abort: bool) -> None:
        """Leave: abort = a network failure (no close frame), else a clean close."""
        self.live = False
        if self.conn is not None:
            self.conn.abort() if abort else self.conn.close()

    # -- editing -----------------------------------------------------------------------------------

    def ensure_wedding(self) -> None:
        """Create the wedding if the synced Doc lacks it: call before this client's first edit.

        Each client that finds the required core fields missing after its initial sync sends them
        (the same update, ``wedding_update``) ahead of its own edits on its own connection, so
        the server node has applied them before it judges one of this client's edits.
        """
        if all(key in self.core for key in WEDDING_CORE):
            return
        update = wedding_update()
        self.doc.apply_update(update)
        self._send_document(SyncUpdate(update), None)

    def edit(self, intended_ns: int) -> None:
        """Make one edit stamped with its intended send time and send it, if connected."""
        self.edit_seq += 1
        marker = f"LT|{self.gid}|{self.edit_seq}|{intended_ns}|{time.monotonic_ns()}|"
        self._capturing = True
        try:
            if self.config.target is Target.CORE:
                # One field for all members: last writer wins; each update carries its marker.
                self.core["notes"] = marker
            else:
                self.timeline.append(Map(timeline_entry(self.gid, self.edit_seq, marker)))
        finally:
            self._capturing = False
        self._send_document(SyncUpdate(self._captured), intended_ns)
        self.tally.sent += 1

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._capturing:
            self._captured = event.update

    def _send_document(self, message: SyncStep2 | SyncUpdate, intended_ns: int | None) -> None:
        conn = self.conn
        if conn is None:
            return
        seq, data = self.sync.document(message)
        if self.acks and intended_ns is not None:
            self.pending_acks.append((seq, intended_ns))
        conn.send(data)

    # -- receiving (WsConnection's Handler) --------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        self._now = time.monotonic_ns()  # before decoding: latency is measured to arrival
        self.tally.messages_in += 1
        try:
            message = codec.decode_server_message(data)
        except ProtocolError:
            self.tally.errors["bad_message"] += 1
            return
        conn = self.conn
        for reply in self.sync.receive(message):  # a held sync step 2 answer (§4.6)
            if conn is not None:
                conn.send(reply)

    # -- Replica (called by ClientSync.receive) ------------------------------------------------

    def received(self, update: bytes, origin: Origin) -> None:
        if origin is Origin.UPDATE:
            self.doc.apply_update(update)
            self.updates_received += 1
            self._read_markers(update, self._now, live=True)
        else:  # STEP2, CATCH_UP; RESET never comes: the kit resets no wedding's history
            self._synced_with(update, self._now)

    def answer(self, state_vector: bytes) -> bytes | None:
        return None if self.conn is None else self.doc.get_update(state_vector)

    def resend(self) -> list[bytes]:
        return []  # nothing to resend: every edit was sent on a live connection, once

    def acknowledged(self, seq: int) -> None:
        pending = self.pending_acks
        histogram = self.tally.ack_latency
        now = self._now
        while pending and pending[0][0] <= seq:
            _, intended = pending.popleft()
            record_us(histogram, (now - intended) // 1000)

    def other(self, message: Message) -> None:
        if isinstance(message, Reject):
            self.tally.refused(message.field, message.reason)
        elif not isinstance(message, AwarenessUpdate):
            self.tally.errors[f"unexpected_{type(message).__name__}"] += 1

    def _synced_with(self, update: bytes, now: int) -> None:
        """A sync step 2 or CATCH_UP: the initial sync of this connection (or a later resync)."""
        self.doc.apply_update(update)
        self.updates_received += 1
        self._read_markers(update, now, live=False)
        self.catch_up()
        if self._synced is not None and not self._synced.done():
            self.catch_up_bytes = len(update)
            self._synced.set_result(None)

    def connection_lost(self, code: int | None, expected: bool) -> None:
        self.live = False
        self.count_bytes()
        self.conn = None
        self.closed.set()
        self.tally.unacked += len(self.pending_acks)
        self.pending_acks.clear()
        if self._synced is not None and not self._synced.done():
            self._synced.set_exception(ConnectionError(f"closed during sync (code {code})"))
        if not expected:
            self.tally.errors[f"disconnect_{code}"] += 1

    def _read_markers(self, update: bytes, now: int, *, live: bool) -> None:
        tally = self.tally
        core = self.config.target is Target.CORE
        for match in MARKER.finditer(update):
            sender = int(match[1])
            if sender == self.gid:
                continue  # servers such as y-websocket echo a client's own updates
            seq = int(match[2])
            fresh = self._see_core(sender, seq, live) if core else self._see_entry(sender, seq)
            if not live:
                continue
            if not fresh:
                tally.duplicates += 1
                continue
            latency = (now - int(match[3])) // 1000
            record_us(tally.latency, latency)
            record_us(tally.interval, latency)
            record_us(tally.wire_latency, (now - int(match[4])) // 1000)
            tally.delivered += 1

    def catch_up(self) -> None:
        """Core target: credit every edit this Doc holds, read from its state vector.

        Markers cannot show them all: members share ``core["notes"]``, so a sync step 2 (or a
        resent update) carries the values overwritten meanwhile as tombstones, without their
        markers. Each core edit is one Yjs clock of its sender's known client id
        (``RunConfig.doc_client_id``), so holding clock ``k`` means holding its first ``k`` edits.
        """
        if self.config.target is not Target.CORE or self._caught_up_at == self.updates_received:
            return
        self._caught_up_at = self.updates_received
        clocks = decode_state_vector(self.doc.get_state())
        config = self.config
        for member in config.members(config.wedding_of(self.gid)):
            held = clocks.get(config.doc_client_id(member), 0)
            if member != self.gid and held:
                self._see_core(member, held, live=False)

    def _see_core(self, sender: int, seq: int, live: bool) -> bool:
        previous = self.seen_max.get(sender, 0)
        if seq <= previous:
            return False
        if live and seq > previous + 1:
            self.tally.superseded += seq - previous - 1
        self.seen_max[sender] = seq
        self.covered += seq - previous
        return True

    def _see_entry(self, sender: int, seq: int) -> bool:
        flags = self.seen_entries.get(sender)
        if flags is None:
            flags = self.seen_entries[sender] = bytearray(max(64, seq + 1))
        elif seq >= len(flags):
            flags.extend(bytes(max(len(flags), seq + 1 - len(flags))))
        if flags[seq]:
            return False
        flags[seq] = 1
        self.covered += 1
        return True

    # -- the end of the run ------------------------------------------------------------------------

    def expect(self, sent: dict[int, int]) -> None:
        """Learn how many edits every other member of the wedding made."""
        members = self.config.members(self.config.wedding_of(self.gid))
        self.expected = sum(sent.get(m, 0) for m in members if m != self.gid)

    @property
    def settled(self) -> bool:
        """Every edit of the others is reflected here and every own edit is acknowledged."""
        return self.covered >= self.expected and not self.pending_acks

    def digest(self) -> str:
        """A hash of the document's content as canonical JSON (equal across a converged wedding)."""
        content = {"core": self.core.to_py() or {}, "timeline": self.timeline.to_py() or []}
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(canonical, digest_size=16).hexdigest()

    def count_bytes(self) -> None:
        """Add this connection's wire bytes to the tally (once, when it ends)."""
        if self.conn is not None:
            self.tally.bytes_in += self.conn.bytes_in
            self.tally.bytes_out += self.conn.bytes_out
