"""Fanout: carries out the core's effects for a room — writes to clients, batching.

Effects that belong to another part go to the handler the node wired in (``Handlers``):
Publish and Forward to the relay, Persist and ReadLog to durability, Poisoned and HistoryReset
to the room registry, RepairWanted to peers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

import structlog

from gateway.core.effects import (
    Broadcast,
    Close,
    Effect,
    Forward,
    HistoryReset,
    Persist,
    Poisoned,
    PositionMoved,
    Publish,
    ReadLog,
    Refused,
    RepairWanted,
    Send,
)
from gateway.core.outgoing import drain, merge_broadcasts
from gateway.core.session import Session
from gateway.errors import GatewayError, InvalidState
from gateway.slot import PendingBroadcast, RoomSlot
from gateway.telemetry import Telemetry

log = structlog.get_logger(__name__)


class Outlet(Protocol):
    """How the node reaches one client connection (implemented by gateway.connection)."""

    def send_nowait(self, data: bytes) -> None:
        """Queue one message; on overflow the outlet closes itself with SlowClient."""
        ...

    def close_nowait(self, error: GatewayError) -> None:
        """Close the connection with the error's close code once queued data is handled."""
        ...


@dataclass(slots=True)
class Handlers:
    """The other parts' handlers of the effects the fan-out does not carry out itself."""

    publish: Callable[[RoomSlot, Publish], None]
    forward: Callable[[RoomSlot, Forward], None]
    persist: Callable[[RoomSlot, Persist], None]
    read_log: Callable[[RoomSlot, ReadLog], Coroutine[Any, Any, None]]
    poisoned: Callable[[RoomSlot, Poisoned], None]
    history_reset: Callable[[RoomSlot, HistoryReset], None]
    repair: Callable[[RoomSlot], None]


class Fanout:
    """Writes effects out: one outlet per connected client, held broadcasts."""

    def __init__(self, *, batch_seconds: float) -> None:
        self.batch_seconds = batch_seconds
        """Seconds a room's document broadcasts are held to be merged into one write; 0: none."""
        self.outlets: dict[Session, Outlet] = {}
        """Every member of a room on this node (added by ``connect`` at join), and every proxy:
        a client of another node whose updates this node judges (gateway/relay.py)."""
        self.proxies: set[Session] = set()
        self.handlers: Handlers | None = None
        self.refusals = 0
        self.telemetry = Telemetry()
        """The node's (it replaces this one): refusals by class."""

    def connect(self, session: Session, outlet: Outlet, *, proxy: bool = False) -> None:
        self.outlets[session] = outlet
        if proxy:
            self.proxies.add(session)

    def disconnect(self, session: Session) -> None:
        self.outlets.pop(session, None)
        self.proxies.discard(session)

    @property
    def connections(self) -> int:
        """Clients connected to this node (proxies are other nodes' clients)."""
        return len(self.outlets) - len(self.proxies)

    def tell(self, data: bytes, wanted: Callable[[Session], bool]) -> None:
        """Send ``data`` to every client of this node (not the proxies) that ``wanted``."""
        for session, outlet in list(self.outlets.items()):
            if session not in self.proxies and wanted(session):
                outlet.send_nowait(data)

    def close(self, session: Session, error: GatewayError) -> None:
        """Close one client, if it is still connected."""
        outlet = self.outlets.get(session)
        if outlet is not None:
            outlet.close_nowait(error)

    def clients(self) -> list[Session]:
        """Every client connected to this node (not the proxies)."""
        return [s for s in self.outlets if s not in self.proxies]

    def drain(self, error: GatewayError, clients: list[Session] | None = None) -> None:
        """Tell ``clients`` (default: every connected client) the node is shutting down
        (DRAIN), then close them; one that left meanwhile is skipped. Other nodes' clients
        stay connected to them: their rooms' next owner judges them."""
        if clients is None:
            clients = self.clients()
        else:
            clients = [s for s in clients if s in self.outlets and s not in self.proxies]
        for effect in drain(clients, error):
            match effect:
                case Send(session, data):
                    self.outlets[session].send_nowait(data)
                case Close(session, closing):
                    self.outlets[session].close_nowait(closing)
                case _:
                    raise InvalidState(f"drain asked for a {type(effect).__name__}")

    def execute(self, slot: RoomSlot, effects: list[Effect]) -> Coroutine[Any, Any, None] | None:
        """Carry out the core's effects for one room, in order.

        Returns the store read a ReadLog needs (only ``Room.receive`` of a RESUME asks for
        one): the caller must await it before it reads the client's next message.
        """
        pending = None
        for effect in effects:
            match effect:
                case Send(session, data):
                    outlet = self.outlets.get(session)
                    if outlet is not None:  # an ACK may come after the client left
                        outlet.send_nowait(data)
                case Broadcast(data, exclude, live_only, awareness, update):
                    if update is not None and self.batch_seconds:
                        self._hold(slot, data, update, exclude)
                    else:
                        self._broadcast(slot, data, exclude, live_only, awareness)
                case Publish():
                    self._handlers.publish(slot, effect)
                case Forward():
                    self._handlers.forward(slot, effect)
                case Persist():
                    self._handlers.persist(slot, effect)
                case Close(session, error):
                    self.close(session, error)
                case PositionMoved():
                    if not slot.announcing:
                        slot.announcing = True  # one POSITION per room per loop tick
                        asyncio.get_running_loop().call_soon(self.announce, slot)
                case Refused(session, count, refusals):
                    self.telemetry.refused(refusals)
                    self._refused(slot, session, count)
                case ReadLog():
                    pending = self._handlers.read_log(slot, effect)
                case Poisoned():
                    self._handlers.poisoned(slot, effect)
                case HistoryReset():
                    self._handlers.history_reset(slot, effect)
                case RepairWanted():
                    self._handlers.repair(slot)
                case _:
                    assert_never(effect)
        return pending

    @property
    def _handlers(self) -> Handlers:
        if self.handlers is None:
            raise RuntimeError("Fanout used before the node wired its handlers")
        return self.handlers

    def _broadcast(
        self, slot: RoomSlot, data: bytes, exclude: Session | None, live_only: bool, awareness: bool
    ) -> None:
        assert slot.room is not None
        outlets = self.outlets
        for member in slot.room.members.values():
            if member is not exclude and (member.live or not live_only):
                if awareness and not member.receives_awareness:
                    continue
                outlets[member].send_nowait(data)

    def _refused(self, slot: RoomSlot, session: Session, count: int) -> None:
        self.refusals += count
        grant = session.grant
        log.info(
            "changes_refused",
            room=slot.id,
            count=count,
            subject=grant.subject,
            role=grant.role.value,
        )
        self.flush_batch(slot)  # the REJECTs that follow must not overtake the undo

    def announce(self, slot: RoomSlot) -> None:
        """Tell the room's LIVE resuming members the position their documents now cover."""
        slot.announcing = False
        room = slot.room
        if room is None or not slot.serving:
            return
        if slot.batch is not None:
            slot.batch.announce = True  # after the held updates (see _hold)
            return
        data = room.position_message()
        for member in room.members.values():
            if member.live and member.resumes and member in self.outlets:
                self.outlets[member].send_nowait(data)

    # -- batched document broadcasts (broadcast_batch_ms) ----------------------------------------
    #
    # A room's sync updates wait up to ``batch_seconds`` from the first one, then go out merged,
    # as one message, to every LIVE member. Everything else is written at once and may overtake
    # them, which is safe because: an ACK promises durability, not delivery; a sync step 2 or
    # CATCH_UP is computed from the Doc, which already holds the held updates (a member that
    # turns LIVE meanwhile receives them twice, and CRDT updates are idempotent); awareness is
    # presence, not document. Two messages must not overtake them: a REJECT (its undo is among
    # the held updates: the Refused before it flushes the batch), and a POSITION (it says the
    # client's document holds every stored update up to an offset) waits for the write.
    # Publishing to the bus and persisting are never held.

    def _hold(self, slot: RoomSlot, data: bytes, update: bytes, sender: Session | None) -> None:
        batch = slot.batch
        if batch is None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.batch_seconds, self.flush_batch, slot)
            batch = slot.batch = PendingBroadcast(timer, sender)
        elif batch.sender is not sender:
            batch.sender = None  # several senders: everyone gets the merge (one message)
        batch.messages.append(data)
        batch.updates.append(update)

    def flush_batch(self, slot: RoomSlot) -> None:
        """Write the room's held document updates now, merged; then a POSITION that waited."""
        batch = slot.batch
        if batch is None:
            return
        slot.batch = None
        batch.timer.cancel()
        if slot.room is None:
            return
        messages = batch.messages
        if len(messages) > 1:
            merged = merge_broadcasts(batch.updates)
            if merged is None:
                log.warning("broadcast_merge_failed", updates=len(messages))
            else:
                messages = [merged]
        for data in messages:
            self._broadcast(slot, data, batch.sender, True, False)
        if batch.announce:
            self.announce(slot)
