"""Interfaces the node depends on. Adapters implement them structurally (gateway/adapters/)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from gateway.types import NodeId, RoomId


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One message published by a peer. ``seq`` counts the publisher's messages for the room."""

    room: RoomId
    origin: NodeId
    seq: int
    payload: bytes


LOSS_SEQ = 0


def loss_marker(room: RoomId) -> BusMessage:
    """The message meaning "messages of ``room`` may have been lost: resync from the Store"."""
    return BusMessage(room, NodeId(""), LOSS_SEQ, b"")


def is_loss_marker(message: BusMessage) -> bool:
    return message.seq == LOSS_SEQ


class Bus(Protocol):
    """Fan-out of room messages between nodes.

    At most once, ordered per room and publisher, never echoed to the publishing node. When a
    subscriber may have missed messages (a sequence gap, a dropped connection, an overflowing
    queue) its iterator yields a loss marker (``is_loss_marker``) before the next message: the
    node then repairs the room from the Store, which holds every accepted update.
    """

    def publish_nowait(self, room: RoomId, payload: bytes) -> None:
        """Queue ``payload`` for the room's subscribers on other nodes. Never blocks."""
        ...

    def subscribe(self, room: RoomId) -> AbstractAsyncContextManager[AsyncIterator[BusMessage]]:
        """Receive the room's messages from other nodes while the context is open."""
        ...


@dataclass(frozen=True, slots=True)
class Append:
    """One update to append to a room's log."""

    room: RoomId
    update: bytes


@dataclass(frozen=True, slots=True)
class History:
    """What the store holds for a room: the newest snapshot, then every update after it."""

    room: RoomId
    snapshot: bytes | None = None
    snapshot_offset: int = 0
    updates: list[tuple[int, bytes]] = field(default_factory=list)
    """(offset, update) pairs with offset > snapshot_offset, in offset order."""

    @property
    def last_offset(self) -> int:
        return self.updates[-1][0] if self.updates else self.snapshot_offset

    def blobs(self) -> list[bytes]:
        """Snapshot first, then updates: apply in this order to rebuild the document."""
        head = [self.snapshot] if self.snapshot is not None else []
        return head + [update for _, update in self.updates]


class Store(Protocol):
    """The durable log of every accepted update, compacted by snapshots.

    ``append`` returns only once the whole batch is durable (committed and synced to disk);
    offsets increase by one per room in append order. ``compact`` atomically records a snapshot
    covering offsets up to ``through`` and deletes the log rows it covers; it never deletes a row
    the snapshot does not cover. ``load`` returns the newest snapshot and every later update.
    """

    async def load(self, room: RoomId) -> History: ...

    async def append(self, batch: Sequence[Append]) -> list[int]: ...

    async def compact(self, room: RoomId, snapshot: bytes, through: int) -> None: ...
