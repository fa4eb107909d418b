"""Ownership: which node judges each room — this node's leases, kept renewed, and the owners of
the rooms it relays.

The rule (DESIGN.md §2): exactly one node judges a wedding at a time, its owner; a refusal
judged on a stale view would undo edits accepted elsewhere. The owner holds the room's lease
(``Leases``, in the store that holds the truth) with a fencing token; every append carries the
token and the store refuses an older one in the appending transaction. So:

- A room is claimed when a node loads it, before it reads the history: the owner's document is
  built from a store no older owner can write to any more (taking the lease waits for appends
  in flight under the old fence, and refuses them afterwards).
- The owner renews its leases every ``lease_seconds / 3`` (one statement for all) and judges
  only while its lease is certainly its own: until ``RENEW_SAFETY * lease_seconds`` after
  it *sent* the last successful renewal (the store's expiry is counted from when it received
  it). A node that was paused, or cannot reach the store, stops judging before anyone may take
  its rooms over: its clients' messages wait (bounded by the relay timeout, then 4002).
- A renewal that finds the lease taken, a refused append (fenced) or an OWNER of a newer fence
  means the room was lost: the node drops it without compacting; its members reconnect (4003)
  and the room is loaded again as a relay.
- The owner announces itself on the room's channel each interval (OWNER, a heartbeat), even
  while it cannot renew. A node that relays a room with members in it checks each interval
  whether the lease is free (released on an owner's unload or drain, or expired after its holder
  died) and its owner has not been heard for ``lease_seconds``, and then takes it:
  it merges the stored history into its document, stores what it holds beyond it (published
  by the old owner, not committed before it died), judges its own clients' unacknowledged
  forwards and announces itself (OWNER); the other nodes resend theirs. Members stay connected.

The embedded single node has no leases: it owns every room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from gateway.core.effects import Persist
from gateway.errors import BackendUnavailable, GatewayError, RoomReset
from gateway.fanout import Fanout
from gateway.ports import Leases, Store
from gateway.relay import OwnerEvents, Relay
from gateway.slot import RoomSlot
from gateway.supervision import Spawn
from gateway.types import NodeId

log = structlog.get_logger(__name__)

RENEW_SAFETY = 0.8
"""Share of the lease this node counts as its own after sending a renewal (clock-rate drift and
the renewal's own delay come out of the rest)."""


class Ownership:
    """This node's side of the one-judge rule, for every room it has loaded."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        leases: Leases | None,
        store: Store,
        relay: Relay,
        fanout: Fanout,
        lease_seconds: float,
        slots: Callable[[], Iterable[RoomSlot]],
        lost: Callable[[RoomSlot, RoomReset], None],
        spawn: Spawn,
    ) -> None:
        self.node_id = node_id
        self.leases = leases
        self.store = store
        self.relay = relay
        self.fanout = fanout
        self.lease_seconds = lease_seconds
        self.slots = slots
        self._lost = lost
        self.spawn = spawn
        self.changes = 0
        """Rooms this node took or lost."""
        self._failed = False
        self.reachable = True
        """False from a lease query that failed until the next interval whose queries all
        succeed (a relaying node appends nothing, so this is how it learns; /readyz)."""
        relay.events = OwnerEvents(owner_seen=self.owner_seen, released=self.released)

    @property
    def interval(self) -> float:
        return self.lease_seconds / 3

    def owned(self) -> int:
        return sum(1 for slot in self.slots() if slot.serving and slot.owning)

    # -- claiming and releasing -----------------------------------------------------------------

    async def claim(self, slot: RoomSlot) -> None:
        """Before the room's history is read: take its lease, or learn who holds it. Raises
        BackendUnavailable when the store cannot be asked (the load fails; joins get 4002)."""
        if self.leases is None:
            return
        started = asyncio.get_running_loop().time()
        lease = await self.leases.acquire(slot.id, self.node_id, self.lease_seconds)
        slot.known_fence = max(slot.known_fence, lease.fence)
        if lease.acquired:
            self._took(slot, lease.fence, started)
        else:
            slot.owner = lease.holder

    def judges(self, slot: RoomSlot) -> bool:
        """Whether this node judges the room once it is loaded (the room's ``judging``)."""
        return self.leases is None or slot.fence is not None

    def may_judge(self, slot: RoomSlot) -> bool:
        """False while this node owns the room but cannot be sure its lease is still its own:
        its members' messages wait (``Node.receive``)."""
        return slot.fence is None or asyncio.get_running_loop().time() < slot.valid_until

    def _took(self, slot: RoomSlot, fence: int, started: float) -> None:
        slot.fence = slot.known_fence = fence
        slot.owner = self.node_id
        slot.valid_until = started + RENEW_SAFETY * self.lease_seconds
        self.changes += 1
        log.info("room_owned", room=slot.id, node=self.node_id, fence=fence)

    async def release(self, slot: RoomSlot) -> None:
        """The room unloads (idle, drain): give its lease up and tell the relaying nodes."""
        fence, slot.fence = slot.fence, None
        if slot.room is not None:
            slot.room.judging = False
        if self.leases is None or fence is None:
            return
        try:
            await self.leases.release(slot.id, self.node_id, fence)
        except BackendUnavailable as exc:  # it expires on its own
            log.warning("lease_release_failed", room=slot.id, error=str(exc))
        self.relay.released(slot.id, fence)
        self.changes += 1
        log.info("room_released", room=slot.id, node=self.node_id, fence=fence)

    def lose(self, slot: RoomSlot, why: str) -> None:
        """Another node owns the room now: stop judging, drop the room (members reconnect)."""
        fence, slot.fence = slot.fence, None
        if fence is None:
            return
        if slot.room is not None:
            slot.room.judging = False
        slot.renewed.set()  # wake held messages: they find the room gone
        self.changes += 1
        log.warning("room_ownership_lost", room=slot.id, node=self.node_id, fence=fence, why=why)
        self._lost(slot, RoomReset(f"wedding {slot.id} is judged by another node now; reconnect"))

    # -- what the relay learns ------------------------------------------------------------------

    def owner_seen(self, slot: RoomSlot, node: NodeId, fence: int) -> None:
        """A node with ``fence`` owns the room (its OWNER, or an update it judged)."""
        known = fence == slot.known_fence and slot.owner == node
        if fence < slot.known_fence or node == self.node_id or known:
            return
        slot.known_fence = fence
        if slot.fence is not None and fence > slot.fence:
            self.lose(slot, f"node {node} holds a newer lease ({fence})")
            return
        slot.owner = node
        self.relay.resend(slot)  # a new owner (or one reloaded) judges what was not acked

    def released(self, slot: RoomSlot) -> None:
        """The owner gave the room up: take it now if clients here need a judge."""
        slot.owner = None
        if slot.room is not None and slot.room.members and not slot.owning:
            self.spawn("takeover", self.take_over(slot))

    # -- the timer ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Each interval: renew this node's leases, take over rooms whose owner is gone, let
        the relay resend and time out. Until cancelled: leases are renewed while the node
        drains, so its last appends are not fenced."""
        if self.leases is None:
            return
        while True:
            await asyncio.sleep(self.interval)  # a heartbeat: the lease is a matter of time
            self._failed = False
            try:
                await self.tick()
            except GatewayError as exc:
                log.warning("lease_tick_failed", error=str(exc))
                self._failed = True
            self.reachable = not self._failed

    async def tick(self) -> None:
        assert self.leases is not None
        loop = asyncio.get_running_loop()
        every = list(self.slots())
        owned = [s for s in every if s.fence is not None]  # unloading ones too (drain)
        slots = [s for s in every if s.serving and s.room is not None]
        if owned:
            started = loop.time()
            pairs = [(s.id, s.fence) for s in owned if s.fence is not None]
            for slot in owned:  # a heartbeat: an owner that is heard is not replaced
                self.relay.announce(slot)
            renewed = await self.leases.renew(pairs, self.node_id, self.lease_seconds)
            for slot in owned:
                if slot.fence is None:
                    continue
                if slot.id in renewed:
                    slot.valid_until = started + RENEW_SAFETY * self.lease_seconds
                    slot.renewed.set()
                else:
                    self.lose(slot, "its lease was taken over")
        silent_since = loop.time() - 3 * self.interval
        relayed = []
        for slot in slots:
            room = slot.room
            assert room is not None
            if slot.owning:
                self.relay.forget_silent(slot, room, silent_since)
            else:
                self.relay.sweep(slot)
                if room.members:
                    relayed.append(slot)
        if relayed:
            await asyncio.gather(*(self.take_over(slot) for slot in relayed))

    async def take_over(self, slot: RoomSlot) -> None:
        """Take the room's lease if it is free, then judge the room here (``promote``)."""
        assert self.leases is not None
        if slot.owning or not slot.serving:
            return
        loop = asyncio.get_running_loop()
        try:
            lease = await self.leases.holder(slot.id)
            if lease.holder is not None:
                slot.owner = lease.holder
                return
            if slot.owner is not None and loop.time() - slot.owner_heard < self.lease_seconds:
                return  # its owner is alive: a lease lapsed in a store outage is renewed by it
            started = asyncio.get_running_loop().time()
            lease = await self.leases.acquire(slot.id, self.node_id, self.lease_seconds)
        except BackendUnavailable as exc:
            log.warning("lease_takeover_failed", room=slot.id, error=str(exc))
            self._failed = True
            return
        slot.known_fence = max(slot.known_fence, lease.fence)
        if not lease.acquired:
            slot.owner = lease.holder
            return
        self._took(slot, lease.fence, started)
        await self.promote(slot)

    async def promote(self, slot: RoomSlot) -> None:
        """This node took the lease of a room it relayed: make its document the judge's."""
        room = slot.room
        assert room is not None
        try:
            history = await self.store.load(slot.id)
        except BackendUnavailable as exc:
            log.warning("room_promotion_failed", room=slot.id, error=str(exc))
            await self.release(slot)
            return
        if slot.room is not room or not slot.serving or slot.fence is None:
            return
        if history.epoch != room.epoch:
            self.lose(slot, "its history was reset")
            return
        blobs = history.blobs()
        self.fanout.execute(slot, room.merge_history(blobs))
        unstored = room.unstored(blobs)
        room.judging = True
        room.position, room.position_final = history.last_offset, False
        slot.appends_since_snapshot = len(history.updates)
        if unstored is not None:  # the old owner published it and died before committing it
            self.fanout.execute(slot, [Persist(unstored, None, 0)])
        self.relay.judge_own(slot, room)
        self.relay.announce(slot)
        log.info("room_promoted", room=slot.id, node=self.node_id, fence=slot.fence)
