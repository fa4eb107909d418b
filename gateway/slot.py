"""RoomSlot: one room on this node, as the node's parts share it, and its RoomState."""

from __future__ import annotations

import asyncio
import enum

from gateway.core.room import Room
from gateway.core.session import Session
from gateway.types import RoomId


class RoomState(enum.Enum):
    """LOADING → SERVING → UNLOADING → CLOSED (a failed load goes from LOADING to CLOSED)."""

    LOADING = "loading"  # its history is being read; joiners wait for ``loaded``
    SERVING = "serving"  # members' messages are handled
    UNLOADING = "unloading"  # idle, reset or dropped: no new member; flushed, maybe compacted
    CLOSED = "closed"  # gone; a later join loads the room again


class PendingBroadcast:
    """A room's document broadcasts held for one merged write (``broadcast_batch_ms``)."""

    __slots__ = ("announce", "messages", "sender", "timer", "updates")

    def __init__(self, timer: asyncio.TimerHandle, sender: Session | None) -> None:
        self.timer = timer
        self.messages: list[bytes] = []
        """Encoded sync updates, in the order the room applied them."""
        self.updates: list[bytes] = []
        """The Yjs update of each of ``messages`` (merged at the flush, never decoded)."""
        self.sender: Session | None = sender
        """The one client every held update came from (it has them all), else None."""
        self.announce = False
        """A POSITION waits for this write: it promises the client's document holds these."""


class RoomSlot:
    """A room on this node, from its first joiner until it is unloaded.

    Each field has one writer: the registry (gateway/rooms.py) the lifecycle, the fan-out
    (gateway/fanout.py) ``batch`` and ``announcing``, durability (gateway/durability.py) the
    log counters, peers (gateway/peers.py) ``repairing``.
    """

    __slots__ = (
        "announcing",
        "appends_since_snapshot",
        "batch",
        "changed",
        "closed",
        "compact_on_unload",
        "compacting",
        "id",
        "in_flight",
        "loaded",
        "repairing",
        "room",
        "state",
    )

    def __init__(self, room_id: RoomId) -> None:
        self.id = room_id
        self.state = RoomState.LOADING
        self.loaded: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self.room: Room | None = None
        self.changed = asyncio.Event()  # set on every join and leave, and to stop serving
        self.closed = asyncio.Event()  # set once unloaded and flushed
        self.compact_on_unload = True
        """False once the wedding's history was reset: compacting would write it back."""
        # durability
        self.appends_since_snapshot = 0
        self.compacting = False
        self.in_flight = 0
        """Appends of this room submitted and not yet durable."""
        # fan-out
        self.batch: PendingBroadcast | None = None
        self.announcing = False
        """A POSITION is scheduled for this loop tick."""
        # peers
        self.repairing = False

    @property
    def serving(self) -> bool:
        return self.state is RoomState.SERVING

    def __repr__(self) -> str:
        return f"<RoomSlot {self.id} {self.state.value}>"
