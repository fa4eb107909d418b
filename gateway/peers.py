"""Peers: a room's messages from other nodes (the bus, in the relay's envelopes,
gateway/relay.py), and its repair after bus loss."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog

from gateway.core.room import Room
from gateway.errors import BackendUnavailable
from gateway.fanout import Fanout
from gateway.ports import BusMessage, Store, is_loss_marker
from gateway.relay import Kind, Relay
from gateway.slot import RoomSlot
from gateway.supervision import Spawn

log = structlog.get_logger(__name__)


class Peers:
    """Feeds bus messages to the rooms; merges the store's history in when some were lost."""

    def __init__(self, store: Store, fanout: Fanout, relay: Relay, spawn: Spawn) -> None:
        self.store = store
        self.fanout = fanout
        self.relay = relay
        self.spawn = spawn
        self.repairs = 0

    async def consume(
        self, slot: RoomSlot, room: Room, messages: AsyncIterator[BusMessage]
    ) -> None:
        """Apply the room's bus messages until it stops serving (poisoned, reset, unloading)."""
        async for message in messages:
            if not slot.serving:
                return
            if is_loss_marker(message):
                await self.repair(slot, room)
                if slot.owning:  # forwards may be among the lost: every relaying node resends
                    self.relay.publish_kind(slot.id, Kind.RESEND_ALL)
                else:  # acks may be among them
                    self.relay.resend(slot)
            else:
                self.relay.receive(slot, room, message)
            if not slot.serving:
                return

    def repair_soon(self, slot: RoomSlot) -> None:
        """RepairWanted: start one repair of the room unless one runs."""
        if slot.room is not None and not slot.repairing:
            slot.repairing = True
            repair = self.repair(slot, slot.room)
            self.spawn("repair", repair)

    async def repair(self, slot: RoomSlot, room: Room) -> None:
        """Bus messages were lost: merge the store's history in and send local members the rest."""
        self.repairs += 1
        try:
            history = await self.store.load(slot.id)
            if not slot.serving:
                return
            self.fanout.execute(slot, room.merge_history(history.blobs()))
            log.info("room_repaired", room=slot.id, updates=len(history.updates))
        except BackendUnavailable as exc:
            log.warning("room_repair_failed", room=slot.id, error=str(exc))
        finally:
            slot.repairing = False
