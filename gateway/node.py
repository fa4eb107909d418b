"""Node: the rooms and connections on this gateway process; executes what the core decides."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Protocol, Self, assert_never

import structlog
from pycrdt import merge_updates

from gateway import documents
from gateway.committer import Committer, CommitterStatistics
from gateway.core.effects import Broadcast, Close, Effect, Persist, Publish, Send
from gateway.core.limits import Limits
from gateway.core.room import Room, compact_updates
from gateway.core.session import Session
from gateway.core.update_check import MissingReference
from gateway.crash_journal import CrashJournal
from gateway.errors import (
    BackendUnavailable,
    GatewayError,
    InvalidState,
    ProtocolError,
    RoomPoisoned,
    RoomReset,
    ShuttingDown,
)
from gateway.ports import Author, Bus, BusMessage, Store, is_loss_marker
from gateway.types import NodeId, RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    CATCH_UP_RESET,
    EMPTY_UPDATE,
    Ack,
    CatchUp,
    Drain,
    MessageType,
    Resume,
    SyncStep2,
    SyncUpdate,
)

log = structlog.get_logger(__name__)


class Outlet(Protocol):
    """How the node reaches one client connection (implemented by gateway.connection)."""

    def send_nowait(self, data: bytes) -> None:
        """Queue one message; on overflow the outlet closes itself with SlowClient."""
        ...

    def close_nowait(self, error: GatewayError) -> None:
        """Close the connection with the error's close code once queued data is handled."""
        ...


RESUME_LOG_MAX_UPDATES = 500
"""Default of GATEWAY_RESUME_LOG_MAX_UPDATES.

A RESUME further behind than this many stored updates gets the state-vector diff without a
read of the log: merging the missed updates runs on the event loop (500 took 1.6 ms, 5,000 took
165 ms), and the diff only loses to them on documents with large delete sets."""


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    rooms: int
    connections: int
    messages_received: int
    updates_persisted: int
    compactions: int
    loads: int
    repairs: int
    resets: int
    refusals: int
    committer: CommitterStatistics


class PendingBroadcast:
    """A room's document broadcasts held for one merged write (``broadcast_batch_ms``)."""

    __slots__ = ("announce", "messages", "sender", "timer")

    def __init__(self, timer: asyncio.TimerHandle, sender: Session | None) -> None:
        self.timer = timer
        self.messages: list[bytes] = []
        """Encoded sync updates, in the order the room applied them."""
        self.sender: Session | None = sender
        """The one client every held update came from (it has them all), else None."""
        self.announce = False
        """A POSITION waits for this write: it promises the client's document holds these."""


class RoomSlot:
    """A room on this node, from its first joiner until it is unloaded."""

    __slots__ = (
        "announcing",
        "appends_since_snapshot",
        "batch",
        "changed",
        "closed",
        "compacting",
        "id",
        "in_flight",
        "loaded",
        "repairing",
        "room",
        "unloading",
    )

    def __init__(self, room_id: RoomId) -> None:
        self.id = room_id
        self.loaded: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self.room: Room | None = None
        self.changed = asyncio.Event()  # set on every join and leave
        self.closed = asyncio.Event()  # set once unloaded and flushed
        self.unloading = False
        self.compacting = False
        self.repairing = False
        self.appends_since_snapshot = 0
        self.in_flight = 0
        """Appends of this room submitted and not yet durable."""
        self.announcing = False
        self.batch: PendingBroadcast | None = None


class Node:
    """Owns the rooms of this process, the committer and every background task."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        bus: Bus,
        store: Store,
        limits: Limits,
        room_idle_seconds: float = 30.0,
        snapshot_every: int = 500,
        commit_batch_max: int = 512,
        max_pending_appends: int = 10_000,
        drain_seconds: float = 10.0,
        journal: CrashJournal | None = None,
        broadcast_batch_ms: float = 0.0,
        resume_log_max_updates: int = RESUME_LOG_MAX_UPDATES,
    ) -> None:
        self.node_id = node_id
        self.bus = bus
        self.store = store
        self.limits = limits
        self.room_idle_seconds = room_idle_seconds
        self.snapshot_every = snapshot_every
        self.drain_seconds = drain_seconds
        self.journal = journal
        self.broadcast_batch = broadcast_batch_ms / 1000
        self.resume_log_max_updates = resume_log_max_updates
        """Seconds a room's document broadcasts are held to be merged into one write; 0: none."""
        self.committer = Committer(
            store, max_batch=commit_batch_max, max_pending=max_pending_appends
        )
        self._rooms: dict[RoomId, RoomSlot] = {}
        self._unloading: dict[RoomId, RoomSlot] = {}
        self._resetting: dict[RoomId, asyncio.Event] = {}
        self._outlets: dict[Session, Outlet] = {}
        self._room_tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._stack = AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self._messages_received = self._updates_persisted = self._compactions = 0
        self._loads = self._repairs = self._resets = self._refusals = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._committer_task = self._tasks.create_task(self.committer.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.drain()
        finally:
            self._committer_task.cancel()
            for task in self._room_tasks:
                task.cancel()
            await self._stack.aclose()

    async def drain(self) -> None:
        """Stop: acknowledge what is durable, tell clients (DRAIN, then 1012), unload rooms."""
        self._stopping.set()
        for slot in self._rooms.values():
            slot.changed.set()
        try:
            async with asyncio.timeout(self.drain_seconds):
                await self.committer.wait_flushed(RoomId(""))  # acks are queued before closes
        except (TimeoutError, GatewayError):
            log.warning("drain_flush_incomplete", pending=self.committer.statistics().pending)
        for slot in list(self._rooms.values()):
            self._flush_batch(slot)  # queued before the DRAIN and the close
        for session, outlet in list(self._outlets.items()):
            if session.wants_acks:
                outlet.send_nowait(codec.encode(Drain(retry_ms=0)))
            outlet.close_nowait(ShuttingDown(f"node {self.node_id} is shutting down"))
        if self._room_tasks:
            _, pending = await asyncio.wait(self._room_tasks, timeout=self.drain_seconds)
            if pending:
                log.warning("drain_incomplete", rooms=len(pending))

    @property
    def tasks(self) -> asyncio.TaskGroup:
        if self._tasks is None:
            raise RuntimeError("Node is used outside its async context")
        return self._tasks

    # -- joining and leaving --------------------------------------------------------------------

    async def join(self, room_id: RoomId, session: Session, outlet: Outlet) -> RoomSlot:
        """Add a client to a room, loading the room once however many clients join at once."""
        while True:
            if self._stopping.is_set():
                raise ShuttingDown(f"node {self.node_id} is shutting down")
            resetting = self._resetting.get(room_id)
            if resetting is not None:
                await resetting.wait()  # load the new epoch, not the history being dropped
                continue
            slot = self._rooms.get(room_id)
            if slot is None:
                slot = self._rooms[room_id] = RoomSlot(room_id)
                task = self.tasks.create_task(self._run_room(slot), context=contextvars.Context())
                self._room_tasks.add(task)
                task.add_done_callback(self._room_tasks.discard)
            room = await asyncio.shield(slot.loaded)
            if not slot.unloading:
                break
            await slot.closed.wait()
        self._outlets[session] = outlet
        slot.changed.set()
        self.execute(slot, room.join(session))
        return slot

    def leave(self, slot: RoomSlot, session: Session) -> None:
        """Remove a client; the room unloads after ``room_idle_seconds`` without members."""
        if slot.room is not None:
            self.execute(slot, slot.room.leave(session))
        self._outlets.pop(session, None)
        slot.changed.set()

    def receive(self, slot: RoomSlot, session: Session, data: bytes) -> None:
        """Handle one binary message from a member. Raises GatewayError to close the client."""
        self._messages_received += 1
        if slot.unloading:
            raise RoomReset(f"room {slot.id} is being reset; reconnect")
        message = session.receive_data(data, time.monotonic())
        assert slot.room is not None
        if not isinstance(message, SyncUpdate | SyncStep2):
            self.execute(slot, slot.room.receive(session, message))
            return
        if self.committer.full:
            raise BackendUnavailable("the store is too far behind; try again later")
        refusals = slot.room.refusals
        try:
            effects = self._receive_update(slot.room, session, message)
        except RoomPoisoned as exc:
            self._reset_room(slot, exc, sender=session)
            raise
        except MissingReference:
            self._repair_soon(slot)  # this node may lack a peer's update: the store has it
            raise
        if slot.room.refusals != refusals:
            self._refusals += slot.room.refusals - refusals
            grant = session.grant
            log.info(
                "changes_refused",
                room=slot.id,
                count=slot.room.refusals - refusals,
                subject=grant.subject,
                role=grant.role.value,
            )
        self.execute(slot, effects)

    def _receive_update(
        self, room: Room, session: Session, message: SyncUpdate | SyncStep2
    ) -> list[Effect]:
        if self.journal is None:
            return room.receive(session, message)
        digest = self.journal.digest(message.update)
        if self.journal.is_denied(digest):
            raise ProtocolError("this update crashed a gateway node before; it is refused")
        self.journal.begin(digest)  # if pycrdt kills the process now, the restart denies it
        try:
            return room.receive(session, message)
        finally:
            self.journal.end()

    def _reset_room(self, slot: RoomSlot, error: RoomPoisoned, sender: Session | None) -> None:
        """pycrdt failed inside the room's Doc: quarantine the input, drop the room, and let
        its members reconnect to a room rebuilt from the store (which never saw the input)."""
        self._resets += 1
        where = self.journal.quarantine(slot.id, error.update, str(error)) if self.journal else None
        log.error(
            "room_poisoned",
            room=slot.id,
            error=repr(error.__cause__),
            quarantined=str(where) if where else None,
        )
        slot.unloading = True
        slot.changed.set()  # the room task flushes and unloads without waiting for idle
        if slot.room is not None:
            for member in list(slot.room.members.values()):
                if member is not sender and member in self._outlets:
                    self._outlets[member].close_nowait(
                        RoomReset(f"room {slot.id} was reset after a bad update; reconnect")
                    )

    # -- effects --------------------------------------------------------------------------------

    def execute(self, slot: RoomSlot, effects: list[Effect]) -> None:
        """Carry out the core's effects for one room, in order."""
        for effect in effects:
            match effect:
                case Send(session, data):
                    if slot.batch is not None and data[0] == MessageType.REJECT:
                        self._flush_batch(slot)  # the undo goes first (see _hold)
                    self._outlets[session].send_nowait(data)
                case Broadcast(data, exclude, live_only, awareness):
                    if self.broadcast_batch and live_only and not awareness:
                        self._hold(slot, data, exclude)
                    else:
                        self._broadcast(slot, data, exclude, live_only, awareness)
                case Publish(data):
                    self.bus.publish_nowait(slot.id, data)
                case Persist(update, session, seq, author, fields):
                    self._persist(slot, update, session, seq, author, fields)
                case Close(session, error):
                    self._outlets[session].close_nowait(error)
                case _:
                    assert_never(effect)

    def _broadcast(
        self, slot: RoomSlot, data: bytes, exclude: Session | None, live_only: bool, awareness: bool
    ) -> None:
        assert slot.room is not None
        outlets = self._outlets
        for member in slot.room.members.values():
            if member is not exclude and (member.live or not live_only):
                if awareness and not member.receives_awareness:
                    continue
                outlets[member].send_nowait(data)

    # -- batched document broadcasts (broadcast_batch_ms) ----------------------------------------
    #
    # A room's sync updates wait up to ``broadcast_batch`` seconds from the first one, then go
    # out merged, as one message, to every LIVE member. Everything else is written at once and
    # may overtake them, which is safe because: an ACK promises durability, not delivery; a
    # sync step 2 or CATCH_UP is computed from the Doc, which already holds the held updates
    # (a member that turns LIVE meanwhile receives them twice, and CRDT updates are
    # idempotent); awareness is presence, not document. Two messages must not overtake them:
    # a REJECT (its undo is among the held updates) flushes the batch first, and a POSITION
    # (it says the client's document holds every stored update up to an offset) waits for the
    # write. Publishing to the bus and persisting are never held.

    def _hold(self, slot: RoomSlot, data: bytes, sender: Session | None) -> None:
        batch = slot.batch
        if batch is None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.broadcast_batch, self._flush_batch, slot)
            batch = slot.batch = PendingBroadcast(timer, sender)
        elif batch.sender is not sender:
            batch.sender = None  # several senders: everyone gets the merge (one message)
        batch.messages.append(data)

    def _flush_batch(self, slot: RoomSlot) -> None:
        """Write the room's held document updates now, merged; then a POSITION that waited."""
        batch = slot.batch
        if batch is None:
            return
        slot.batch = None
        batch.timer.cancel()
        if slot.room is None:
            return
        for data in _merged(batch.messages):
            self._broadcast(slot, data, batch.sender, True, False)
        if batch.announce:
            self._announce(slot)

    def _persist(
        self,
        slot: RoomSlot,
        update: bytes | None,
        session: Session | None,
        seq: int,
        author: Author | None = None,
        fields: tuple[str, ...] = (),
    ) -> None:
        future = self.committer.submit_nowait(slot.id, update, author, fields)
        if session is not None:
            future.add_done_callback(partial(_send_ack, self._outlets[session], seq))
        if update is None:
            return
        slot.in_flight += 1
        future.add_done_callback(partial(self._durable, slot))
        self._updates_persisted += 1
        slot.appends_since_snapshot += 1
        if slot.appends_since_snapshot >= self.snapshot_every and not slot.compacting:
            slot.compacting = True
            future.add_done_callback(partial(self._start_compaction, slot))

    def _durable(self, slot: RoomSlot, future: asyncio.Future[int | None]) -> None:
        """One of the room's appends is durable (or failed): advance its position."""
        slot.in_flight -= 1
        room = slot.room
        if future.cancelled() or future.exception() is not None or room is None:
            return
        offset = future.result()
        if offset is not None and room.advance(offset) and not slot.announcing:
            slot.announcing = True  # one POSITION per room per loop tick
            asyncio.get_running_loop().call_soon(self._announce, slot)

    def _announce(self, slot: RoomSlot) -> None:
        """Tell the room's LIVE resuming members the position their documents now cover."""
        slot.announcing = False
        room = slot.room
        if room is None or slot.unloading:
            return
        if slot.batch is not None:
            slot.batch.announce = True  # after the held updates (see _hold)
            return
        data = room.position_message()
        for member in room.members.values():
            if member.live and member.resumes and member in self._outlets:
                self._outlets[member].send_nowait(data)

    async def resume(self, slot: RoomSlot, session: Session, data: bytes) -> None:
        """RESUME (proto/spec.md §4.6): answer with one CATCH_UP, reading the store's log after
        the client's offset when that can make the answer smaller."""
        message = session.receive_data(data, time.monotonic())
        if not isinstance(message, Resume):
            raise InvalidState(f"resume() got a {type(message).__name__}")
        room = slot.room
        assert room is not None
        missed: list[bytes] | None = None
        through = 0
        worth_reading = (
            message.epoch == room.epoch
            and 0 < message.offset <= room.position
            and room.position - message.offset <= self.resume_log_max_updates
            and room.peer_changes == 0
            and slot.in_flight == 0
        )
        if worth_reading:
            try:
                history = await self.store.load_since(slot.id, message.offset)
            except BackendUnavailable:
                history = None  # the diff alone answers
            if history is not None and history.snapshot is None and history.epoch == room.epoch:
                missed = [update for _, update in history.updates]
                through = history.last_offset
        if slot.room is not room or slot.unloading:
            raise RoomReset(f"room {slot.id} is being reset; reconnect")
        self.execute(slot, room.catch_up(session, message, missed, through, slot.in_flight))

    async def reset_history(self, room_id: RoomId) -> int:
        """Start a new epoch of the wedding's history (its document becomes empty): every node
        drops the room and its members reconnect; resuming clients are told to reset.

        The room is unloaded first, without the compaction an unload does (that would write the
        old document back), and nobody joins it here until the store has the new epoch."""
        resetting = self._resetting[room_id] = asyncio.Event()
        try:
            slot = self._rooms.get(room_id) or self._unloading.get(room_id)
            if slot is not None:
                self._drop(slot, RoomReset(f"the history of {room_id} was reset; reconnect"))
                await slot.closed.wait()
            epoch = await self.store.reset(room_id)
        finally:
            del self._resetting[room_id]
            resetting.set()
        notice = codec.encode(CatchUp(epoch, 0, CATCH_UP_RESET, EMPTY_UPDATE))
        self.bus.publish_nowait(room_id, notice)
        log.warning("history_reset", room=room_id, epoch=epoch)
        return epoch

    def _drop(self, slot: RoomSlot, error: RoomReset) -> None:
        """The wedding's history was reset: unload the room now, without the compaction an
        unload does (it would write the old document back), and close its members: they
        reconnect to the new epoch."""
        slot.appends_since_snapshot = 0
        slot.compacting = True
        slot.unloading = True
        slot.changed.set()
        if slot.room is not None:
            for member in list(slot.room.members.values()):
                if member in self._outlets:
                    self._outlets[member].close_nowait(error)

    # -- room tasks -----------------------------------------------------------------------------

    async def _run_room(self, slot: RoomSlot) -> None:
        previous = self._unloading.get(slot.id)
        if previous is not None:
            await previous.closed.wait()  # its last appends are durable before we load
        try:
            async with self.bus.subscribe(slot.id) as peer_messages:
                room = await self._load(slot)
                async with asyncio.TaskGroup() as tg:
                    consumer = tg.create_task(self._consume_peers(slot, room, peer_messages))
                    await self._wait_idle(slot, room)
                    consumer.cancel()
        finally:
            await self._unload(slot)

    async def _load(self, slot: RoomSlot) -> Room:
        started = time.perf_counter()
        self._loads += 1
        try:
            history = await self.store.load(slot.id)
            room = Room(
                slot.id,
                history.blobs(),
                limits=self.limits,
                epoch=history.epoch,
                position=history.last_offset,
            )
        except Exception as exc:
            error = BackendUnavailable(f"room {slot.id} could not be loaded: {exc}")
            slot.loaded.set_exception(error)
            slot.loaded.exception()  # retrieved: joiners receive it through the shield
            slot.unloading = True
            raise error from exc
        slot.room = room
        slot.appends_since_snapshot = len(history.updates)
        slot.loaded.set_result(room)
        log.info(
            "room_loaded",
            room=slot.id,
            updates=len(history.updates),
            snapshot=history.snapshot is not None,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return room

    async def _wait_idle(self, slot: RoomSlot, room: Room) -> None:
        """Return (marking the slot unloading) once the room stayed empty for the idle delay."""
        while not self._stopping.is_set() and not slot.unloading:
            slot.changed.clear()
            if not room.empty:
                await slot.changed.wait()
                continue
            try:
                async with asyncio.timeout(self.room_idle_seconds):
                    await slot.changed.wait()
            except TimeoutError:
                if room.empty:
                    break
        slot.unloading = True

    async def _unload(self, slot: RoomSlot) -> None:
        slot.unloading = True
        self._flush_batch(slot)
        if self._rooms.get(slot.id) is slot:
            del self._rooms[slot.id]
        self._unloading[slot.id] = slot
        try:
            if slot.room is not None:
                await self.committer.wait_flushed(slot.id)
                if slot.appends_since_snapshot and not slot.compacting:
                    await self._compact(slot.id)
                log.info("room_unloaded", room=slot.id, updates=slot.room.updates_applied)
        finally:
            slot.closed.set()
            if self._unloading.get(slot.id) is slot:
                del self._unloading[slot.id]

    async def _consume_peers(
        self, slot: RoomSlot, room: Room, messages: AsyncIterator[BusMessage]
    ) -> None:
        async for message in messages:
            if slot.unloading:
                return
            if is_loss_marker(message):
                await self._repair(slot, room)
                continue
            try:
                self.execute(slot, room.receive_from_peer(message.payload))
            except RoomPoisoned as exc:
                self._reset_room(slot, exc, sender=None)
                return
            except RoomReset as exc:  # another node reset the wedding's history
                self._drop(slot, exc)
                return

    def _repair_soon(self, slot: RoomSlot) -> None:
        if slot.room is not None and not slot.repairing:
            slot.repairing = True
            self.tasks.create_task(self._repair(slot, slot.room), context=contextvars.Context())

    async def _repair(self, slot: RoomSlot, room: Room) -> None:
        """Bus messages were lost: merge the store's history in and send local members the rest."""
        self._repairs += 1
        try:
            history = await self.store.load(slot.id)
            if slot.unloading or room.poisoned:
                return
            self.execute(slot, room.merge_history(history.blobs()))
            log.info("room_repaired", room=slot.id, updates=len(history.updates))
        except RoomPoisoned as exc:
            self._reset_room(slot, exc, sender=None)
        except BackendUnavailable as exc:
            log.warning("room_repair_failed", room=slot.id, error=str(exc))
        finally:
            slot.repairing = False

    # -- compaction -----------------------------------------------------------------------------

    def _start_compaction(self, slot: RoomSlot, future: asyncio.Future[int | None]) -> None:
        if future.cancelled() or future.exception() is not None:
            slot.compacting = False
            return
        self.tasks.create_task(self._compact_in_background(slot), context=contextvars.Context())

    async def _compact_in_background(self, slot: RoomSlot) -> None:
        try:
            await self._compact(slot.id)
            slot.appends_since_snapshot = 0
        except GatewayError as exc:
            log.warning("compaction_failed", room=slot.id, error=str(exc))
        finally:
            slot.compacting = False

    async def _compact(self, room_id: RoomId) -> None:
        """Replace the room's durable log by one snapshot, built from the store's own content."""
        history = await self.store.load(room_id)
        if not history.updates:
            return
        snapshot = compact_updates(history.blobs())
        await self.store.compact(room_id, snapshot, history.last_offset)
        self._compactions += 1

    def readiness(self) -> dict[str, bool]:
        """The checks behind /readyz."""
        bus_stats = getattr(self.bus, "statistics", None)
        return {
            "accepting": not self._stopping.is_set(),
            "store": self.committer.healthy and not self.committer.full,
            "bus": bool(getattr(bus_stats(), "connected", True)) if bus_stats else True,
        }

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            rooms=len(self._rooms),
            connections=len(self._outlets),
            messages_received=self._messages_received,
            updates_persisted=self._updates_persisted,
            compactions=self._compactions,
            loads=self._loads,
            repairs=self._repairs,
            resets=self._resets,
            refusals=self._refusals,
            committer=self.committer.statistics(),
        )

    def room(self, room_id: RoomId) -> Room | None:
        """The loaded room, if this node has it."""
        slot = self._rooms.get(room_id)
        return slot.room if slot is not None and not slot.unloading else None

    async def read_document(
        self, room_id: RoomId, render: documents.Render[documents.T], *, heavy: bool = False
    ) -> documents.Read[documents.T]:
        """``render`` of the wedding's document, from the loaded room or else the store, without
        loading the room (gateway/documents.py); raises BackendUnavailable (retry later)."""
        return await documents.read_document(
            self.room(room_id), self.store, room_id, render, heavy=heavy
        )


def _merged(messages: list[bytes]) -> list[bytes]:
    """One sync-update message holding every update of ``messages`` (each one a sync update).

    Should pycrdt fail to merge updates it accepted before, they go out one by one instead:
    a held update is never dropped.
    """
    if len(messages) == 1:
        return messages
    updates = []
    for data in messages:
        message = codec.decode(data)
        if not isinstance(message, SyncUpdate):
            raise InvalidState(f"a {type(message).__name__} was held as a document broadcast")
        updates.append(message.update)
    try:
        merged = merge_updates(*updates)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pyo3 panics are BaseExceptions (DESIGN.md §7)
        log.warning("broadcast_merge_failed", updates=len(updates), error=repr(exc))
        return messages
    return [codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(merged)]


def _send_ack(outlet: Outlet, seq: int, future: asyncio.Future[int | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        outlet.send_nowait(codec.encode(Ack(seq)))
