"""Durability: appends go to the committer, durable ones become the core's ACK and POSITION
effects, logs are compacted, and a RESUME reads the log it can answer from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import structlog

from gateway.committer import Committer
from gateway.core.effects import Persist, ReadLog
from gateway.core.outgoing import compact_updates
from gateway.core.session import Session
from gateway.crash_journal import CrashJournal
from gateway.errors import BackendUnavailable, GatewayError, LeaseLost, ProtocolError, RoomReset
from gateway.fanout import Fanout
from gateway.ports import Retention, Store
from gateway.slot import RoomSlot
from gateway.supervision import Spawn
from gateway.telemetry import Histogram
from gateway.types import RoomId

log = structlog.get_logger(__name__)

DATE_FIELD = "core.wedding_date"
"""What an Append's ``fields`` name when the edit changed the wedding's date."""
RESUME_LOG_MAX_UPDATES = 500
"""Default of GATEWAY_RESUME_LOG_MAX_UPDATES.

A RESUME further behind than this many stored updates gets the state-vector diff without a
read of the log: merging the missed updates runs on the event loop (500 took 1.6 ms, 5,000 took
165 ms), and the diff only loses to them on documents with large delete sets."""


class ApplyGate:
    """The rooms' ApplyJournal (gateway/core/journal.py): what must hold before a client update
    is applied — the store keeps up, and the update never killed a node (crash journal)."""

    __slots__ = ("committer", "journal")

    def __init__(self, committer: Committer, journal: CrashJournal | None) -> None:
        self.committer = committer
        self.journal = journal

    def begin_apply(self, update: bytes) -> None:
        """Raise BackendUnavailable (the store is too far behind) or ProtocolError (a denied
        update) to refuse ``update``; else record it as being applied."""
        if self.committer.full:
            raise BackendUnavailable("the store is too far behind; try again later")
        journal = self.journal
        if journal is not None:
            digest = journal.digest(update)
            if journal.is_denied(digest):
                raise ProtocolError("this update crashed a gateway node before; it is refused")
            journal.begin(digest)  # if pycrdt kills the process now, the restart denies it

    def end_apply(self) -> None:
        if self.journal is not None:
            self.journal.end()


class Durability:
    """The committer's client: submits the rooms' appends and compacts their logs."""

    def __init__(
        self,
        committer: Committer,
        store: Store,
        fanout: Fanout,
        spawn: Spawn,
        *,
        snapshot_every: int,
        resume_log_max_updates: int = RESUME_LOG_MAX_UPDATES,
        retention: Retention | None = None,
    ) -> None:
        """``retention``: what compaction keeps for version history (None: only the newest
        snapshot and the log after it)."""
        self.committer = committer
        self.retention = retention
        self.store = store
        self.date_changed: Callable[[RoomSlot], None] = lambda slot: None
        """Called once an edit of ``core.wedding_date`` is durable (gateway/warm.py)."""
        self.fanout = fanout
        self.spawn = spawn
        self.snapshot_every = snapshot_every
        self.resume_log_max_updates = resume_log_max_updates
        self.updates_persisted = 0
        self.compactions = 0
        self.lease_lost: Callable[[RoomSlot], None] = lambda slot: None
        """Called when the store refused one of the room's appends (another node owns it)."""
        self.ack_latency: Histogram | None = None
        """Frame received → durable ACK queued, for this node's own clients (the node's
        telemetry; a proxy's ACK is timed where its client is, gateway/relay.py)."""

    def persist(self, slot: RoomSlot, effect: Persist) -> None:
        """Submit one append (a Persist effect); its durability answers with ``Room.durable``."""
        update = effect.update
        future = self.committer.submit_nowait(
            slot.id, update, effect.author, effect.fields, slot.fence
        )
        session = effect.session
        # the frame's arrival: the Persist is carried out while its message is handled
        received = session.last_receive if session is not None else 0.0
        if update is None:
            if session is not None:
                future.add_done_callback(
                    partial(self._durable, slot, session, effect.seq, received)
                )
            return
        slot.in_flight += 1
        future.add_done_callback(partial(self._appended, slot, session, effect.seq, received))
        if DATE_FIELD in effect.fields:  # the index follows the durable document, never leads
            future.add_done_callback(partial(self._date_durable, slot))
        self.updates_persisted += 1
        slot.appends_since_snapshot += 1
        if slot.appends_since_snapshot >= self.snapshot_every and not slot.compacting:
            slot.compacting = True
            future.add_done_callback(partial(self._start_compaction, slot))

    def _date_durable(self, slot: RoomSlot, future: asyncio.Future[int | None]) -> None:
        if not future.cancelled() and future.exception() is None and future.result() is not None:
            self.date_changed(slot)

    def _appended(
        self,
        slot: RoomSlot,
        session: Session | None,
        seq: int,
        received: float,
        future: asyncio.Future[int | None],
    ) -> None:
        """One of the room's updates is durable (or failed: no ack, the client resends)."""
        slot.in_flight -= 1
        room = slot.room
        if future.cancelled() or room is None:
            return
        error = future.exception()
        if error is not None:
            if isinstance(error, LeaseLost):
                self.lease_lost(slot)  # nothing of it is stored, and it is never acknowledged
            else:
                self._unacknowledged(session, error)
            return
        self.fanout.execute(slot, room.durable(session, seq, future.result()))
        self._acknowledged(session, received)

    def _durable(
        self,
        slot: RoomSlot,
        session: Session | None,
        seq: int,
        received: float,
        future: asyncio.Future[int | None],
    ) -> None:
        """A barrier is durable: everything submitted before it is (the ack of an unchanged
        message, proto/spec.md §4.2)."""
        room = slot.room
        if future.cancelled() or room is None:
            return
        error = future.exception()
        if error is not None:
            self._unacknowledged(session, error)
            return
        self.fanout.execute(slot, room.durable(session, seq, future.result()))
        self._acknowledged(session, received)

    def _acknowledged(self, session: Session | None, received: float) -> None:
        histogram = self.ack_latency
        if histogram is not None and session is not None and session not in self.fanout.proxies:
            histogram.observe(time.monotonic() - received)

    def _unacknowledged(self, session: Session | None, error: BaseException) -> None:
        """An append failed for good: its writer will never get the ack, so close it (4002);
        it reconnects and sends what was not acknowledged again (proto/spec.md §4.3)."""
        if session is not None:
            self.fanout.close(
                session, BackendUnavailable(f"an update could not be stored: {error}")
            )

    async def wait_flushed(self, room_id: RoomId) -> None:
        """Return once everything submitted before is durable (and its acks are queued)."""
        await self.committer.wait_flushed(room_id)

    # -- resuming (proto/spec.md §4.6) ----------------------------------------------------------

    async def read_log(self, slot: RoomSlot, read: ReadLog) -> None:
        """Answer RESUME with one CATCH_UP, reading the store's log after the client's offset
        when that can make the answer smaller. Raises RoomReset if the room went meanwhile."""
        room = slot.room
        assert room is not None
        resume = read.resume
        missed: list[bytes] | None = None
        through = 0
        worth_reading = (
            resume.epoch == room.epoch
            and 0 < resume.offset <= room.position
            and room.position - resume.offset <= self.resume_log_max_updates
            and room.peer_changes == 0
            and slot.in_flight == 0
        )
        if worth_reading:
            try:
                history = await self.store.load_since(slot.id, resume.offset)
            except BackendUnavailable:
                history = None  # the diff alone answers
            if history is not None and history.snapshot is None and history.epoch == room.epoch:
                missed = [update for _, update in history.updates]
                through = history.last_offset
        if slot.room is not room or not slot.serving:
            raise RoomReset(f"room {slot.id} is being reset; reconnect")
        self.fanout.execute(
            slot, room.catch_up(read.session, resume, missed, through, slot.in_flight)
        )

    # -- compaction -----------------------------------------------------------------------------

    async def flush_and_compact(self, slot: RoomSlot) -> None:
        """The room unloads: wait until its appends are durable, then compact its log unless
        a compaction runs or its history was reset (``compact_on_unload``)."""
        await self.committer.wait_flushed(slot.id)
        if slot.appends_since_snapshot and slot.compact_on_unload and not slot.compacting:
            await self.compact(slot.id)

    def _start_compaction(self, slot: RoomSlot, future: asyncio.Future[int | None]) -> None:
        if future.cancelled() or future.exception() is not None:
            slot.compacting = False
            return
        self.spawn("compaction", self._compact_in_background(slot))

    async def _compact_in_background(self, slot: RoomSlot) -> None:
        try:
            if slot.compact_on_unload:  # a reset history is never written back
                await self.compact(slot.id)
            slot.appends_since_snapshot = 0
        except GatewayError as exc:
            log.warning("compaction_failed", room=slot.id, error=str(exc))
        finally:
            slot.compacting = False

    async def compact(self, room_id: RoomId) -> None:
        """Replace the room's durable log by one snapshot, built from the store's own content."""
        history = await self.store.load(room_id)
        if not history.updates:
            return
        snapshot = compact_updates(history.blobs())
        if self.retention is None:
            await self.store.compact(room_id, snapshot, history.last_offset)
        else:
            await self.store.compact(
                room_id, snapshot, history.last_offset, retention=self.retention
            )
        self.compactions += 1
