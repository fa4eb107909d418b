"""Node: the rooms and connections on this gateway process — wiring, lifecycle and drain.

The parts, one job each:

- ``gateway/rooms.py`` (Rooms): the registry — load once, idle unload, reset and drop;
- ``gateway/fanout.py`` (Fanout): carries out the core's effects — clients, bus, batching;
- ``gateway/durability.py`` (Durability): the committer, acks, positions, compaction, resume;
- ``gateway/peers.py`` (Peers): the bus's messages and the repair after a loss;
- ``gateway/ownership.py`` (Ownership): which node judges each room (leases, takeover);
- ``gateway/relay.py`` (Relay): updates of rooms another node owns go to it, answers come back.

The path of one update: the connection decodes the frame (``Session.receive_data``) and hands
the message to ``Node.receive``; on the room's owner ``Room.receive`` judges and applies it and
returns effects; the fan-out broadcasts and publishes, and durability submits the append,
whose durability becomes the core's ACK (``Room.durable``). On any other node the room checks
it structurally and the relay forwards it to the owner, which does the same and answers
through this node.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Any, Self

import structlog

from gateway import documents, drain
from gateway.committer import Committer, CommitterStatistics
from gateway.core.limits import Limits
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.crash_journal import CrashJournal
from gateway.durability import RESUME_LOG_MAX_UPDATES, ApplyGate, Durability
from gateway.errors import BackendUnavailable, GatewayError, Overloaded, RoomReset, ShuttingDown
from gateway.fanout import Fanout, Handlers, Outlet
from gateway.memory import Trimmer
from gateway.overload import LoopLag, Overload, ShedSettings
from gateway.ownership import Ownership
from gateway.peers import Peers
from gateway.ports import Bus, Lease, Leases, Retention, Store, WeddingDates
from gateway.relay import Relay, RelaySettings
from gateway.rooms import Rooms
from gateway.slot import RoomSlot, RoomState
from gateway.supervision import Supervisor
from gateway.telemetry import Telemetry
from gateway.types import NodeId, RoomId
from gateway.warm import Calendar, Warmer, WarmSettings, utc_today
from wedsync_protocol import codec
from wedsync_protocol.messages import STATUS_ACKS_PAUSED, Hello, Message, Status, SyncUpdate

__all__ = [
    "RESUME_LOG_MAX_UPDATES",
    "Node",
    "NodeStatistics",
    "Outlet",
    "RoomSlot",
    "RoomState",
]

log = structlog.get_logger(__name__)


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
    owned_rooms: int
    ownership_changes: int
    relayed_updates: int
    committer: CommitterStatistics


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
        drain_spread_seconds: float = 0.0,
        drain_random: random.Random | None = None,
        drain_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        journal: CrashJournal | None = None,
        broadcast_batch_ms: float = 0.0,
        resume_log_max_updates: int = RESUME_LOG_MAX_UPDATES,
        leases: Leases | None = None,
        lease_seconds: float = 3.0,
        relay: RelaySettings | None = None,
        supervisor: Supervisor | None = None,
        retention: Retention | None = None,
        malloc_trim_seconds: float = 0.0,
        warm: WarmSettings | None = None,
        shed: ShedSettings | None = None,
        today: Callable[[], date] = utc_today,
    ) -> None:
        """``leases`` None: this node owns every room (the embedded single node).
        ``supervisor``: the process's (gateway/supervision.py), shared with the bus.
        ``retention``: what compaction keeps for version history (gateway/history.py).
        ``drain_spread_seconds``: the window the drain closes clients over (gateway/drain.py);
        ``drain_random`` and ``drain_sleep`` are its randomness and its clock (tests fake them).
        ``warm``: warm weddings and the priority window (gateway/warm.py; None: neither);
        ``shed``: the overload thresholds (gateway/overload.py; None: never shed); ``today``:
        the calendar day (UTC) both go by."""
        self.supervisor = supervisor or Supervisor()
        self.node_id = node_id
        self.bus = bus
        self.store = store
        self.limits = limits
        self.drain_seconds = drain_seconds
        self.drain_spread_seconds = drain_spread_seconds
        self._drain_random = drain_random or random.Random()
        self._drain_sleep = drain_sleep
        self.drained_clients = 0
        self.journal = journal
        self.committer = Committer(
            store, max_batch=commit_batch_max, max_pending=max_pending_appends
        )
        self._stack = AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self.fanout = Fanout(batch_seconds=broadcast_batch_ms / 1000)
        self.relay_settings = relay or RelaySettings()
        self.relay = Relay(node_id, bus, self.fanout, limits, self.relay_settings)
        self.durability = Durability(
            self.committer,
            store,
            self.fanout,
            self.spawn,
            snapshot_every=snapshot_every,
            resume_log_max_updates=resume_log_max_updates,
            retention=retention,
        )
        self.peers = Peers(store, self.fanout, self.relay, self.spawn)
        self.relay.repair = self.peers.repair_soon
        self.ownership = Ownership(
            node_id=node_id,
            leases=leases,
            store=store,
            relay=self.relay,
            fanout=self.fanout,
            lease_seconds=lease_seconds,
            slots=lambda: self.rooms.every_slot(),
            lost=lambda slot, error: self.rooms.drop(slot, error),
            spawn=self.spawn,
        )
        self.rooms = Rooms(
            node_id=node_id,
            store=store,
            bus=bus,
            limits=limits,
            fanout=self.fanout,
            durability=self.durability,
            peers=self.peers,
            relay=self.relay,
            ownership=self.ownership,
            gate=ApplyGate(self.committer, journal),
            journal=journal,
            idle_seconds=room_idle_seconds,
            spawn=self.spawn,
        )
        self.durability.lease_lost = lambda slot: self.ownership.lose(slot, "an append was fenced")
        self.fanout.handlers = Handlers(
            publish=lambda slot, effect: self.relay.publish(slot, effect.data, effect.sender),
            forward=self.relay.forward,
            persist=self.durability.persist,
            read_log=self.durability.read_log,
            poisoned=self.rooms.poisoned,
            history_reset=self.rooms.history_reset,
            repair=self.peers.repair_soon,
        )
        self._messages_received = 0
        self.telemetry = Telemetry()
        self._wire_telemetry(self.telemetry)
        self.webhooks: Any = None
        """The webhook dispatcher the app started (gateway/webhooks.py), for /metrics."""
        self.committer.health_changed = self._acks_paused_changed
        self._setup_warm(warm, shed, today)
        self.trimmer = Trimmer(malloc_trim_seconds) if malloc_trim_seconds > 0 else None
        if self.trimmer is not None:
            self.rooms.on_unloaded = self.trimmer.unloaded

    def _wire_telemetry(self, telemetry: Telemetry) -> None:
        """Give every part the instruments it writes (gateway/telemetry.py, /metrics)."""
        self.fanout.telemetry = telemetry
        self.relay.telemetry = telemetry
        self.durability.ack_latency = telemetry.edit_ack
        self.rooms.timers = telemetry.phase_timers()
        commit, batch = telemetry.store_commit, telemetry.store_batch

        def committed(seconds: float, appends: int) -> None:
            commit.observe(seconds)
            batch.observe(appends)

        self.committer.committed = committed
        if hasattr(self.bus, "lag_observer"):  # the Redis bus: its envelopes carry send times
            setattr(self.bus, "lag_observer", telemetry.bus_lag.observe)  # noqa: B010

    def _setup_warm(
        self, warm: WarmSettings | None, shed: ShedSettings | None, today: Callable[[], date]
    ) -> None:
        """Warm weddings, wedding-day priority, overload shedding (gateway/warm.py, overload.py)."""
        dates = self.store if isinstance(self.store, WeddingDates) else None
        self.warm_settings = warm
        self.calendar = Calendar(dates, warm or WarmSettings(max_rooms=0), today, self.spawn)
        self.warmer: Warmer | None = None
        if warm is not None and dates is not None:
            self.warmer = Warmer(
                node_id=self.node_id,
                calendar=self.calendar,
                warm=self.rooms.warm,
                unpin=self.rooms.unpin,
                settings=warm,
            )
            self.rooms.on_loaded = self.calendar.noted
            self.rooms.on_closed = self.calendar.forget
            self.durability.date_changed = self.calendar.noted
        self.loop_lag = LoopLag(self.telemetry.loop_lag.observe)
        self.overload: Overload | None = None
        if shed is not None:  # the node's one loop-lag probe (it feeds the telemetry too)
            self.overload = Overload(
                shed,
                lambda: self.committer.statistics().pending,
                lambda: self.loop_lag.seconds,
            )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        keep = self.supervisor.keep
        self._committer_task = self._tasks.create_task(
            keep("committer", self.committer.run, essential=True)
        )
        self._ownership_task = self._tasks.create_task(
            keep("ownership", self.ownership.run, essential=True)
        )
        self._loop_lag_task = self._tasks.create_task(  # metrics, and the overload signal
            keep("loop_lag", self.loop_lag.run, essential=False)
        )
        self._warm_tasks: list[asyncio.Task[None]] = []
        if self.warmer is not None:
            self._warm_tasks.append(
                self._tasks.create_task(keep("warmer", self.warmer.run, essential=False))
            )
        self._trimmer_task: asyncio.Task[None] | None = None
        if self.trimmer is not None:
            self._trimmer_task = self._tasks.create_task(
                keep("trimmer", self.trimmer.run, essential=False)
            )
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
            self._ownership_task.cancel()
            self._loop_lag_task.cancel()
            for task in self._warm_tasks:
                task.cancel()
            if self._trimmer_task is not None:
                self._trimmer_task.cancel()
            for task in self.rooms.room_tasks:
                task.cancel()
            await self._stack.aclose()

    async def drain(self) -> None:
        """Stop: refuse new clients, acknowledge what is durable, tell clients (DRAIN, then 1012)
        spread over ``drain_spread_seconds`` (gateway/drain.py) — served until their turn, their
        acknowledged edits durable before their close — then unload the rooms."""
        rooms = self.rooms
        rooms.stopping.set()
        for slot in rooms.slots.values():
            slot.changed.set()
        await self._flush_for_drain()
        clients = self.fanout.clients()
        groups = drain.schedule(clients, self.drain_spread_seconds, self._drain_random)
        log.info("drain_started", clients=len(clients), spread_seconds=self.drain_spread_seconds)
        closing = ShuttingDown(f"node {self.node_id} is shutting down")
        elapsed = 0.0
        for group in groups:
            if group.at > elapsed:
                await self._drain_sleep(group.at - elapsed)
                elapsed = group.at
                await self._flush_for_drain()  # what the group sent meanwhile is acked first
            for slot in list(rooms.slots.values()):
                self.fanout.flush_batch(slot)  # queued before the DRAIN and the close
            self.fanout.drain(closing, group.clients)
            self.drained_clients += len(group.clients)
        self.fanout.drain(closing)  # any client that joined while its room was loading
        rooms.members_closed.set()
        for slot in rooms.slots.values():
            slot.changed.set()
        log.info("drain_clients_closed", clients=self.drained_clients)
        if rooms.room_tasks:
            _, pending = await asyncio.wait(rooms.room_tasks, timeout=self.drain_seconds)
            if pending:
                log.warning("drain_incomplete", rooms=len(pending))

    async def _flush_for_drain(self) -> None:
        """Wait (at most ``drain_seconds``) until every append submitted is durable: its ACK is
        then queued before the DRAIN and the close."""
        try:
            async with asyncio.timeout(self.drain_seconds):
                await self.durability.wait_flushed(RoomId(""))
        except (TimeoutError, GatewayError):
            log.warning("drain_flush_incomplete", pending=self.committer.statistics().pending)

    @property
    def tasks(self) -> asyncio.TaskGroup:
        if self._tasks is None:
            raise RuntimeError("Node is used outside its async context")
        return self._tasks

    def spawn(self, name: str, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run one job of the node (a room, a compaction, a repair, a takeover): its failure
        is logged and counted by the supervisor, never raised into the node's task group."""
        contained = self.supervisor.contain(name, job)
        return self.tasks.create_task(contained, context=contextvars.Context())

    # -- clients --------------------------------------------------------------------------------

    async def join(self, room_id: RoomId, session: Session, outlet: Outlet) -> RoomSlot:
        """Add a client to a room (see ``Rooms.join``); pass the slot to ``receive``/``leave``.

        Raises Overloaded (1013) while the node is behind and the wedding is not within the
        priority window (gateway/overload.py): members already in are never closed for it."""
        overload = self.overload
        if overload is not None:
            reason = overload.reason()
            if reason is not None and not self.calendar.is_priority(
                room_id, self.rooms.slots.get(room_id)
            ):
                overload.shed[reason] += 1
                raise Overloaded(f"node {self.node_id} is overloaded ({reason}); retry later")
        return await self.rooms.join(room_id, session, outlet)

    def leave(self, slot: RoomSlot, session: Session) -> None:
        """Remove a client; the room unloads after ``room_idle_seconds`` without members."""
        self.rooms.leave(slot, session)

    def receive(
        self, slot: RoomSlot, session: Session, message: Message
    ) -> Coroutine[Any, Any, None] | None:
        """Handle one decoded message (anything but AUTH) from a member.

        Raises GatewayError to close the client. Returns a store read to await before the
        client's next message (a RESUME, proto/spec.md §4.6), else None."""
        self._messages_received += 1
        if not self.ownership.may_judge(slot) or self.relay.held(slot, session):
            return self._held(slot, session, message)
        return self._handle(slot, session, message)

    def _handle(
        self, slot: RoomSlot, session: Session, message: Message
    ) -> Coroutine[Any, Any, None] | None:
        room = slot.room
        if slot.state is not RoomState.SERVING or room is None:
            raise RoomReset(f"room {slot.id} is being reset; reconnect")
        pending = self.fanout.execute(slot, room.receive(session, message))
        if type(message) is SyncUpdate and room.judging:
            # received → judged, applied and its broadcast queued (proto/spec.md §3)
            self.telemetry.edit_broadcast.observe(time.monotonic() - session.last_receive)
        if type(message) is Hello and self.acks_paused and session.wants_acks:
            self.fanout.tell(codec.encode(Status(STATUS_ACKS_PAUSED)), lambda s: s is session)
        return pending

    @property
    def acks_paused(self) -> bool:
        """This node's store is failing: updates are applied and shared, not made durable."""
        return not self.committer.healthy

    def _acks_paused_changed(self, healthy: bool) -> None:
        """Tell every client that asked for acks that they pause, or resume (spec §4.7)."""
        status = codec.encode(Status(0 if healthy else STATUS_ACKS_PAUSED))
        self.fanout.tell(status, lambda session: session.wants_acks)
        log.warning("acks_resumed" if healthy else "acks_paused", clients=self.fanout.connections)

    async def _held(self, slot: RoomSlot, session: Session, message: Message) -> None:
        """Handle ``message`` once the room can take it, reading nothing else of the client
        meanwhile (backpressure): this node owns the room but could not renew its lease yet,
        or the client has ``max_outstanding`` updates waiting for the owner's answer. Raises
        BackendUnavailable (4002, reconnect) after the relay timeout."""
        timeout = self.relay_settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                while slot.serving:
                    if not self.ownership.may_judge(slot):
                        event = slot.renewed
                    elif self.relay.held(slot, session):
                        event = slot.acked
                    else:
                        break
                    event.clear()
                    await event.wait()
        except TimeoutError:
            raise BackendUnavailable(
                f"wedding {slot.id} has had no judge for {timeout:g} s; reconnect"
            ) from None
        pending = self._handle(slot, session, message)
        if pending is not None:
            await pending

    async def reset_history(self, room_id: RoomId) -> int:
        """Start a new epoch of the wedding's history (see ``Rooms.reset_history``)."""
        return await self.rooms.reset_history(room_id)

    async def owner_of(self, room_id: RoomId) -> Lease:
        """The wedding's lease: which node judges it. Without leases this node owns them all."""
        leases = self.ownership.leases
        if leases is None:
            return Lease(room_id, self.node_id, 0)
        return await leases.holder(room_id)

    def room(self, room_id: RoomId) -> Room | None:
        """The loaded room, if this node has it."""
        return self.rooms.room(room_id)

    # -- health ---------------------------------------------------------------------------------

    def readiness(self) -> dict[str, bool]:
        """The checks behind /readyz (``degraded`` says what a failing one costs)."""
        return {
            "accepting": not self.rooms.stopping.is_set(),
            "store": not self._store_trouble(),
            "bus": not self._bus_trouble(),
        }

    def degraded(self) -> dict[str, str]:
        """For each failing dependency, what its clients notice, in words (/readyz)."""
        found = {}
        store = self._store_trouble()
        if store:
            found["store"] = store
        bus = self._bus_trouble()
        if bus:
            found["bus"] = bus
        return found

    def _store_trouble(self) -> str:
        committer = self.committer
        if not committer.healthy:
            return "acks paused: appends to the store fail and are retried"
        if committer.full:
            return f"acks paused: {committer.max_pending} appends wait; writers are refused (4002)"
        if not self.ownership.reachable:
            return "leases cannot be renewed: edits wait for a judge, then 4002"
        return ""

    def _bus_trouble(self) -> str:
        statistics = getattr(self.bus, "statistics", None)
        if statistics is None:
            return ""
        state = statistics()
        if not getattr(state, "connected", True):
            return "cross-node delivery stopped: the bus is unreachable (reconnecting)"
        if getattr(state, "stalled", False):
            return "cross-node delivery delayed: the bus does not answer"
        return ""

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            rooms=len(self.rooms.slots),
            connections=self.fanout.connections,
            messages_received=self._messages_received,
            updates_persisted=self.durability.updates_persisted,
            compactions=self.durability.compactions,
            loads=self.rooms.loads,
            repairs=self.peers.repairs,
            resets=self.rooms.resets,
            refusals=self.fanout.refusals,
            owned_rooms=self.ownership.owned(),
            ownership_changes=self.ownership.changes,
            relayed_updates=self.relay.forwards,
            committer=self.committer.statistics(),
        )

    async def read_document(
        self, room_id: RoomId, render: documents.Render[documents.T], *, heavy: bool = False
    ) -> documents.Read[documents.T]:
        """``render`` of the wedding's document, from the loaded room or else the store, without
        loading the room (gateway/documents.py); raises BackendUnavailable (retry later)."""
        return await documents.read_document(
            self.room(room_id), self.store, room_id, render, heavy=heavy
        )
