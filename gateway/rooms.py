"""Rooms: the registry of this node's rooms — load once, serve, unload when idle, reset, drop.

A room's failure is the room's: a load that fails fails that room's joins (BackendUnavailable,
4002) and the next join loads it again; a room task that fails closes its members (4003) and
unloads, and a later join loads the room again. Neither reaches the node's task group (each
room task is a job of the supervisor, gateway/supervision.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.core.effects import HistoryReset, Poisoned
from gateway.core.journal import ApplyJournal
from gateway.core.limits import Limits
from gateway.core.outgoing import reset_notice
from gateway.core.room import PhaseTimers, Room
from gateway.core.session import Session
from gateway.crash_journal import CrashJournal
from gateway.durability import Durability
from gateway.errors import BackendUnavailable, GatewayError, RoomReset, ShuttingDown
from gateway.fanout import Fanout, Outlet
from gateway.ownership import Ownership
from gateway.peers import Peers
from gateway.ports import Bus, Store
from gateway.relay import Relay
from gateway.slot import RoomSlot, RoomState
from gateway.supervision import Spawn
from gateway.types import NodeId, RoomId

log = structlog.get_logger(__name__)


class Rooms:
    """Owns every RoomSlot of the node and the task that runs each one."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        store: Store,
        bus: Bus,
        limits: Limits,
        fanout: Fanout,
        durability: Durability,
        peers: Peers,
        relay: Relay,
        ownership: Ownership,
        gate: ApplyJournal,
        journal: CrashJournal | None,
        idle_seconds: float,
        spawn: Spawn,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.bus = bus
        self.limits = limits
        self.fanout = fanout
        self.durability = durability
        self.peers = peers
        self.relay = relay
        self.ownership = ownership
        self.gate = gate
        self.journal = journal
        self.idle_seconds = idle_seconds
        self.spawn = spawn
        """Starts a supervised job in the node's task group: every room task is one."""
        self.stopping = asyncio.Event()
        self.members_closed = asyncio.Event()
        """Set by a drain once it has closed every client: rooms unload, members left or not."""
        self.on_unloaded: Callable[[], None] = lambda: None
        self.timers: PhaseTimers | None = None
        """Given to every room loaded: times its updates' phases (gateway/telemetry.py)."""
        """Called after each room unloads (the node's heap Trimmer)."""
        self.slots: dict[RoomId, RoomSlot] = {}
        """Rooms loading or serving (at most one per id)."""
        self._unloading: dict[RoomId, RoomSlot] = {}
        self._resetting: dict[RoomId, asyncio.Event] = {}
        self.room_tasks: set[asyncio.Task[None]] = set()
        self.loads = self.resets = 0
        self.joins_from_memory = self.joins_from_store = 0
        """Joins served by a room already loaded (or loading) here, and joins that loaded it."""
        self.on_loaded: Callable[[RoomSlot], None] = lambda slot: None
        """Called once a room is built from the store (the wedding-date index, gateway/warm.py)."""
        self.on_closed: Callable[[RoomId], None] = lambda room_id: None
        """Called once a room is unloaded (the calendar forgets what it knew of it)."""

    # -- joining and leaving --------------------------------------------------------------------

    async def join(self, room_id: RoomId, session: Session, outlet: Outlet) -> RoomSlot:
        """Add a client to a room, loading the room once however many clients join at once.

        Raises ShuttingDown while the node drains, BackendUnavailable if the room cannot be
        loaded (a later join tries again)."""
        from_store: bool | None = None  # the first look decides (the room-load hit ratio)
        while True:
            if self.stopping.is_set():
                raise ShuttingDown(f"node {self.node_id} is shutting down")
            resetting = self._resetting.get(room_id)
            if resetting is not None:
                await resetting.wait()  # load the new epoch, not the history being dropped
                continue
            slot = self.slots.get(room_id)
            if slot is None:
                slot = self._start(room_id)
                from_store = True if from_store is None else from_store
            elif from_store is None:
                from_store = False
            room = await asyncio.shield(slot.loaded)
            if slot.serving:
                break
            await slot.closed.wait()
        if from_store:
            self.joins_from_store += 1
        else:
            self.joins_from_memory += 1
        self.fanout.connect(session, outlet)
        slot.changed.set()
        self.fanout.execute(slot, room.join(session))
        return slot

    def leave(self, slot: RoomSlot, session: Session) -> None:
        """Remove a client; the room unloads after ``idle_seconds`` without members."""
        if slot.room is not None:
            self.fanout.execute(slot, slot.room.leave(session))
        self.relay.left(slot, session)
        self.fanout.disconnect(session)
        slot.changed.set()

    async def warm(self, room_id: RoomId) -> bool:
        """Load the room without a member and keep it loaded (gateway/warm.py); True once it
        serves here with this node as its judge (or the only node). A room another node owns
        is not kept."""
        if self.stopping.is_set():
            return False
        slot = self.slots.get(room_id)
        if slot is None:
            slot = self._start(room_id)
        slot.pinned = True
        try:
            await asyncio.shield(slot.loaded)
        except BackendUnavailable:
            return False
        if slot.owner not in (None, self.node_id) or not slot.serving:
            self.unpin(room_id)
            return False
        return True

    def unpin(self, room_id: RoomId) -> None:
        """The room may unload again once idle."""
        slot = self.slots.get(room_id)
        if slot is not None and slot.pinned:
            slot.pinned = False
            slot.changed.set()

    def every_slot(self) -> list[RoomSlot]:
        """Every room of the node, unloading ones included."""
        return [*self.slots.values(), *self._unloading.values()]

    def room(self, room_id: RoomId) -> Room | None:
        """The serving room, if this node has it."""
        slot = self.slots.get(room_id)
        return slot.room if slot is not None and slot.serving else None

    # -- resets ---------------------------------------------------------------------------------

    def poisoned(self, slot: RoomSlot, effect: Poisoned) -> None:
        """pycrdt failed inside the room's Doc: quarantine the input, drop the room, and let
        its members reconnect to a room rebuilt from the store (which never saw the input)."""
        self.resets += 1
        error = effect.error
        where = self.journal.quarantine(slot.id, error.update, str(error)) if self.journal else None
        log.error(
            "room_poisoned",
            room=slot.id,
            error=repr(error.__cause__),
            quarantined=str(where) if where else None,
        )
        reset = RoomReset(f"room {slot.id} was reset after a bad update; reconnect")
        self._stop_serving(slot, reset, spare=effect.sender)
        if effect.sender is not None:
            self.fanout.close(effect.sender, error)

    def history_reset(self, slot: RoomSlot, effect: HistoryReset) -> None:
        """Another node reset the wedding's history: drop the room (its members reconnect)."""
        self.drop(slot, effect.error)

    def drop(self, slot: RoomSlot, error: RoomReset) -> None:
        """Unload the room now, without the compaction an unload does (it would write the old
        document back), and close its members: they reconnect to the new epoch."""
        slot.compact_on_unload = False
        self._stop_serving(slot, error)

    def _stop_serving(
        self, slot: RoomSlot, error: GatewayError, spare: Session | None = None
    ) -> None:
        """Stop handling the room's messages, close its members (but ``spare``) with ``error``;
        the room task flushes and unloads without waiting for idle."""
        if slot.state is not RoomState.CLOSED:
            slot.state = RoomState.UNLOADING
        slot.changed.set()
        if slot.room is not None:
            for member in list(slot.room.members.values()):
                if member is not spare:
                    self.fanout.close(member, error)

    async def reset_history(self, room_id: RoomId) -> int:
        """Start a new epoch of the wedding's history (its document becomes empty): every node
        drops the room and its members reconnect; resuming clients are told to reset.

        The room is unloaded first, without the compaction an unload does, and nobody joins it
        here until the store has the new epoch."""
        resetting = self._resetting[room_id] = asyncio.Event()
        try:
            slot = self.slots.get(room_id) or self._unloading.get(room_id)
            if slot is not None:
                self.drop(slot, RoomReset(f"the history of {room_id} was reset; reconnect"))
                await slot.closed.wait()
            epoch = await self.store.reset(room_id)
        finally:
            del self._resetting[room_id]
            resetting.set()
        self.relay.publish_to(room_id, reset_notice(epoch))
        log.warning("history_reset", room=room_id, epoch=epoch)
        return epoch

    # -- room tasks -----------------------------------------------------------------------------

    def _start(self, room_id: RoomId) -> RoomSlot:
        slot = self.slots[room_id] = RoomSlot(room_id)
        task = self.spawn("room", self._run(slot))
        self.room_tasks.add(task)
        task.add_done_callback(self.room_tasks.discard)
        return slot

    async def _run(self, slot: RoomSlot) -> None:
        previous = self._unloading.get(slot.id)
        if previous is not None:
            await previous.closed.wait()  # its last appends are durable before we load
        try:
            async with self.bus.subscribe(slot.id) as peer_messages:
                room = await self._load(slot)
                if room is not None:
                    async with asyncio.TaskGroup() as tg:
                        consumer = tg.create_task(self.peers.consume(slot, room, peer_messages))
                        await self._wait_idle(slot, room)
                        consumer.cancel()
        except Exception as exc:  # the room's task root: the room fails, never the node
            log.exception("room_failed", room=slot.id)
            self._fail(slot, exc)
        finally:
            await self._unload(slot)

    def _fail(self, slot: RoomSlot, exc: Exception) -> None:
        if not slot.loaded.done():  # e.g. the bus could not subscribe: joiners learn it
            self._fail_load(slot, BackendUnavailable(f"room {slot.id} could not open: {exc}"))
        else:
            self._stop_serving(slot, RoomReset(f"room {slot.id} failed; reconnect"))

    def _fail_load(self, slot: RoomSlot, error: BackendUnavailable) -> None:
        slot.state = RoomState.UNLOADING
        if self.slots.get(slot.id) is slot:
            del self.slots[slot.id]  # the next join loads the room again
        slot.loaded.set_exception(error)
        slot.loaded.exception()  # retrieved: joiners receive it through the shield

    async def _load(self, slot: RoomSlot) -> Room | None:
        """Build the room from the store, or fail its joins with BackendUnavailable (None)."""
        started = time.perf_counter()
        self.loads += 1
        try:
            await self.ownership.claim(slot)  # before the history: no older owner appends after
            history = await self.store.load(slot.id)
            room = Room(
                slot.id,
                history.blobs(),
                limits=self.limits,
                epoch=history.epoch,
                position=history.last_offset,
                journal=self.gate,
            )
        except Exception as exc:
            log.warning("room_load_failed", room=slot.id, error=str(exc))
            self._fail_load(slot, BackendUnavailable(f"room {slot.id} could not be loaded: {exc}"))
            return None
        room.judging = self.ownership.judges(slot)
        room.timers = self.timers
        slot.room = room
        slot.appends_since_snapshot = len(history.updates)
        if slot.state is RoomState.LOADING:  # not dropped by a reset meanwhile
            slot.state = RoomState.SERVING
        slot.loaded.set_result(room)
        self.on_loaded(slot)
        log.info(
            "room_loaded",
            room=slot.id,
            updates=len(history.updates),
            snapshot=history.snapshot is not None,
            owner=slot.owner,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if slot.fence is not None:
            self.relay.announce(slot)
        return room

    async def _wait_idle(self, slot: RoomSlot, room: Room) -> None:
        """Return (the room unloading) once it stayed empty for the idle delay, or it is empty
        while the node drains (Node.drain closes members over the drain spread), or the room
        stopped serving."""
        while slot.serving:
            slot.changed.clear()
            if self.stopping.is_set():
                if room.empty or self.members_closed.is_set():  # draining (Node.drain)
                    break
                await slot.changed.wait()
                continue
            if not room.empty or slot.proxies or slot.pinned:  # proxies: others relay to it
                await slot.changed.wait()
                continue
            try:
                async with asyncio.timeout(self.idle_seconds):
                    await slot.changed.wait()
            except TimeoutError:
                if room.empty and not slot.proxies:
                    break
        if slot.state is not RoomState.CLOSED:
            slot.state = RoomState.UNLOADING

    async def _unload(self, slot: RoomSlot) -> None:
        if slot.state is not RoomState.CLOSED:
            slot.state = RoomState.UNLOADING
        self.fanout.flush_batch(slot)
        if self.slots.get(slot.id) is slot:
            del self.slots[slot.id]
        self._unloading[slot.id] = slot
        try:
            if slot.room is not None:
                await self.durability.flush_and_compact(slot)
                log.info("room_unloaded", room=slot.id, updates=slot.room.updates_applied)
        except GatewayError as exc:
            log.warning("room_unload_compaction_failed", room=slot.id, error=str(exc))
        finally:
            try:
                self.relay.unloaded(slot)
                await self.ownership.release(slot)
            finally:  # whatever failed, the next load of the room must not wait for this one
                slot.state = RoomState.CLOSED
                slot.closed.set()
                if self._unloading.get(slot.id) is slot:
                    del self._unloading[slot.id]
                if slot.id not in self.slots:
                    self.on_closed(slot.id)
                self.on_unloaded()
