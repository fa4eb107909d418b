"""RoomSlot: one room on this node, as the node's parts share it, and its RoomState."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass

from gateway.core.room import Room
from gateway.core.session import Session
from gateway.types import NodeId, RoomId


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


@dataclass(slots=True)
class Forwarded:
    """One client update this node relayed to the room's owner and that is not durable yet."""

    seq: int
    update: bytes
    catch_up: bool
    forwarded_at: float
    """Loop time of its first send."""
    sent_at: float
    """Loop time of its last (re)send."""


@dataclass(slots=True)
class Proxy:
    """On the owner: a client of another node whose updates the owner judges (gateway/relay.py)."""

    session: Session
    """Stands for the client in the room's guard and durability; never a member."""
    origin: NodeId
    client: int
    """The client's session id on its node."""
    expected: int
    """The next sequence number to judge: a forward beyond it means one was lost."""


class RoomSlot:
    """A room on this node, from its first joiner until it is unloaded.

    Each field has one writer: the registry (gateway/rooms.py) the lifecycle, the fan-out
    (gateway/fanout.py) ``batch`` and ``announcing``, durability (gateway/durability.py) the
    log counters, peers (gateway/peers.py) ``repairing``.
    """

    __slots__ = (
        "acked",
        "announcing",
        "appends_since_snapshot",
        "batch",
        "changed",
        "closed",
        "compact_on_unload",
        "compacting",
        "fence",
        "heard",
        "id",
        "in_flight",
        "known_fence",
        "loaded",
        "outstanding",
        "owner",
        "owner_heard",
        "owner_state",
        "pinned",
        "proxies",
        "renewed",
        "repairing",
        "room",
        "state",
        "valid_until",
    )

    def __init__(self, room_id: RoomId) -> None:
        self.id = room_id
        self.state = RoomState.LOADING
        self.loaded: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self.room: Room | None = None
        self.changed = asyncio.Event()  # set on every join and leave, and to stop serving
        self.closed = asyncio.Event()  # set once unloaded and flushed
        self.compact_on_unload = True
        self.pinned = False
        """Kept loaded without members: a wedding of the coming days (gateway/warm.py)."""
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
        # ownership (gateway/ownership.py): who judges the room
        self.owner: NodeId | None = None
        """The node known to hold the room's lease (this node's id when it owns the room)."""
        self.fence: int | None = None
        """This node's fencing token while it owns the room (None: it does not, or no leases)."""
        self.owner_heard = 0.0
        """Loop time the owner was last heard from on the bus (its OWNER heartbeat, each lease
        interval): while it is heard, nobody takes its room over, even if its lease lapsed."""
        self.owner_state = b""
        """The state vector of the owner's last OWNER heartbeat (gateway/relay.py)."""
        self.known_fence = 0
        """The highest fence seen for the room: messages of an older owner are ignored."""
        self.valid_until = float("inf")
        """Loop time until which this node's lease is certainly still its own."""
        self.renewed = asyncio.Event()
        """Set when the lease was renewed (or lost): wakes messages held for the lease."""
        # relay (gateway/relay.py)
        self.outstanding: dict[Session, deque[Forwarded]] = {}
        """Per local client: its updates forwarded to the owner and not acknowledged yet."""
        self.acked = asyncio.Event()
        """Set when the owner acknowledged forwarded updates: wakes clients held for it."""
        self.proxies: dict[tuple[NodeId, int], Proxy] = {}
        """On the owner: the clients of other nodes it judges updates for."""
        self.heard: dict[NodeId, float] = {}
        """On the owner: loop time each relaying node was last heard from in this room."""

    @property
    def serving(self) -> bool:
        return self.state is RoomState.SERVING

    @property
    def owning(self) -> bool:
        """This node judges the room (it holds the lease, or there are no leases)."""
        return self.room is not None and self.room.judging

    def __repr__(self) -> str:
        return f"<RoomSlot {self.id} {self.state.value}>"
