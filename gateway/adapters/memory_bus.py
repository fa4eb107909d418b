"""In-process Bus: the embedded default, and the bus between several Nodes in one process."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.ports import BusMessage, loss_marker
from gateway.types import NodeId, RoomId


@dataclass(frozen=True, slots=True)
class BusStatistics:
    published: int
    delivered: int
    dropped: int


class _Subscriber:
    """One subscription: a bounded queue, and whether messages were dropped since last read."""

    __slots__ = ("lost", "node_id", "queue")

    def __init__(self, node_id: NodeId, limit: int) -> None:
        self.node_id = node_id
        self.queue: asyncio.Queue[BusMessage] = asyncio.Queue(limit)
        self.lost = False


class MemoryBroker:
    """The shared medium of every MemoryBus in one process."""

    def __init__(self, *, queue_limit: int = 4096) -> None:
        self.queue_limit = queue_limit
        self.subscribers: dict[RoomId, set[_Subscriber]] = defaultdict(set)


class MemoryBus:
    """A Bus whose peers live in the same process. Overflowing subscribers lose messages.

    ``queue_limit`` bounds each of this node's subscriptions (default: the broker's); a
    subscriber that falls that far behind gets a loss marker and must resync from the Store.
    """

    def __init__(
        self, node_id: NodeId, broker: MemoryBroker | None = None, *, queue_limit: int | None = None
    ) -> None:
        self.node_id = node_id
        self.broker = broker or MemoryBroker()
        self.queue_limit = self.broker.queue_limit if queue_limit is None else queue_limit
        self._seq: dict[RoomId, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._published = self._delivered = self._dropped = 0

    def publish_nowait(self, room: RoomId, payload: bytes) -> None:
        self._published += 1
        subscribers = self.broker.subscribers.get(room)
        if not subscribers:
            return
        message = BusMessage(room, self.node_id, next(self._seq[room]), payload)
        for subscriber in subscribers:
            if subscriber.node_id == self.node_id:
                continue
            try:
                subscriber.queue.put_nowait(message)
                self._delivered += 1
            except asyncio.QueueFull:
                subscriber.lost = True  # the reader gets a loss marker first
                self._dropped += 1

    @asynccontextmanager
    async def subscribe(self, room: RoomId) -> AsyncIterator[AsyncIterator[BusMessage]]:
        subscriber = _Subscriber(self.node_id, self.queue_limit)
        self.broker.subscribers[room].add(subscriber)
        try:
            yield _drain(room, subscriber)
        finally:
            subscribers = self.broker.subscribers[room]
            subscribers.discard(subscriber)
            if not any(s.node_id == self.node_id for s in subscribers):
                self._seq.pop(room, None)  # the room left this node: one entry per room ever
            if not subscribers:
                del self.broker.subscribers[room]

    def statistics(self) -> BusStatistics:
        return BusStatistics(self._published, self._delivered, self._dropped)


async def _drain(room: RoomId, subscriber: _Subscriber) -> AsyncIterator[BusMessage]:
    while True:
        message = await subscriber.queue.get()
        if subscriber.lost:
            subscriber.lost = False
            yield loss_marker(room)
        yield message
