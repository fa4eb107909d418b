"""What the core asks its driver to do; the node's parts execute these (gateway/fanout.py).

The core encodes every message it asks to write: a driver never builds protocol bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.enforcer import Refusal
from gateway.core.policy import Author
from gateway.core.session import Session
from gateway.errors import GatewayError, RoomPoisoned, RoomReset
from wedsync_protocol.messages import Resume


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (one encoded message) to one client."""

    session: Session
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Write the same ``data`` to every member of the room (LIVE members only, if ``live_only``)."""

    data: bytes
    exclude: Session | None
    live_only: bool = True
    awareness: bool = False
    """Presence: skipped for members whose role receives none (proto/spec.md §7)."""
    update: bytes | None = None
    """The Yjs update a document broadcast carries (``data`` is its SYNC_UPDATE). A driver that
    holds document broadcasts to write them merged merges these (``merge_broadcasts``)."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Hand ``data`` (one encoded message) to the bus for the room's members on other nodes."""

    data: bytes
    sender: Session | None = None
    """The client whose update ``data`` is and who has it already: the node that relayed it
    does not write it back to that client (gateway/relay.py)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """This node does not judge the room (it is not its owner, DESIGN.md §2): send the client's
    update, checked structurally only, to the owner, which judges, applies, persists and
    publishes it, and answers ``session``'s ``seq`` with an ACK (or REJECTs) through this node.
    ``catch_up``: it came as a sync step 2."""

    session: Session
    seq: int
    update: bytes
    catch_up: bool


@dataclass(frozen=True, slots=True)
class Persist:
    """Append ``update`` to the durable log. Once it is durable the driver must call
    ``Room.durable(session, seq, offset)`` and carry out what it returns (the ACK, §4.2).

    ``update`` is None for a message that changed nothing: it is acknowledged once everything
    submitted before it is durable (acks are cumulative and in order, proto/spec.md §4.2).
    """

    update: bytes | None
    session: Session | None
    seq: int
    author: Author | None = None
    fields: tuple[str, ...] = ()
    """What the update changed (the audit), as ``core.venue`` or ``timeline[dinner].notes``."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close one client's connection with the error's close code."""

    session: Session
    error: GatewayError


@dataclass(frozen=True, slots=True)
class ReadLog:
    """A RESUME (proto/spec.md §4.6): read the store's log after ``resume.offset`` when that can
    make the answer smaller, then call ``Room.catch_up`` and carry out what it returns. The
    client's next message waits for the answer."""

    session: Session
    resume: Resume


@dataclass(frozen=True, slots=True)
class PositionMoved:
    """The room's ``position`` advanced: write ``Room.position_message()`` to its LIVE members
    that resume, once for this loop tick's acks, and never before a held document broadcast
    (a POSITION says the client's document holds every stored update up to it)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """``count`` changes of ``session``'s update were refused and undone (proto/spec.md §7).

    Count and log them. Any REJECT sends that follow must not overtake the room's document
    broadcasts so far: the undo is among them."""

    session: Session
    count: int
    refusals: tuple[Refusal, ...] = ()
    """What was refused (counted by class in the node's metrics)."""


@dataclass(frozen=True, slots=True)
class Poisoned:
    """pycrdt failed inside the room's Doc (DESIGN.md §7): quarantine ``error.update``, close
    ``sender`` (if a client) with ``error``, close the other members with RoomReset, and drop
    the room; it is rebuilt from the store, which never saw the input."""

    error: RoomPoisoned
    sender: Session | None


@dataclass(frozen=True, slots=True)
class RepairWanted:
    """An update referred to something this room lacks: this node may have missed a peer's
    update, which the store has. Merge the store's history in (``Room.merge_history``)."""


@dataclass(frozen=True, slots=True)
class HistoryReset:
    """Another node reset the wedding's history: drop the room without compacting it (that would
    write the old document back) and close its members with ``error``."""

    error: RoomReset


Effect = (
    Send
    | Broadcast
    | Publish
    | Forward
    | Persist
    | Close
    | ReadLog
    | PositionMoved
    | Refused
    | Poisoned
    | RepairWanted
    | HistoryReset
)
