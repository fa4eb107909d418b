"""Interfaces the node depends on. Adapters implement them structurally (gateway/adapters/)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, runtime_checkable

from gateway.core.policy import Author
from gateway.types import NodeId, RoomId

__all__ = [
    "FENCED",
    "LOSS_SEQ",
    "Append",
    "AuditEntry",
    "Author",
    "Bus",
    "BusMessage",
    "Cursors",
    "History",
    "Lease",
    "Leases",
    "Retention",
    "Revocations",
    "Store",
    "Versions",
    "WebhookEndpoint",
    "Webhooks",
    "WeddingDates",
    "is_loss_marker",
    "loss_marker",
]


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

    The relay to a room's owner (gateway/relay.py) rides on this and gives, on every Bus:
    a client's updates reach the owner in the client's order and are judged only in that order
    (a gap asks for a resend); each is resent until the owner acknowledges it (after a loss
    marker on either side, an owner change, or the resend delay), so a loss costs a resend,
    never an update; a duplicate is harmless (applying a CRDT update twice changes nothing);
    a client whose oldest update waits longer than the relay timeout is closed with 4002 (its
    client resends). tests/adapters/contracts.py checks the order and the loss markers on each
    Bus; tests/test_relay.py the resends.
    """

    def publish_nowait(self, room: RoomId, payload: bytes) -> None:
        """Queue ``payload`` for the room's subscribers on other nodes. Never blocks."""
        ...

    def subscribe(self, room: RoomId) -> AbstractAsyncContextManager[AsyncIterator[BusMessage]]:
        """Receive the room's messages from other nodes while the context is open."""
        ...


@dataclass(frozen=True, slots=True)
class Append:
    """One update to append to a room's log, with who wrote it and what it changed."""

    room: RoomId
    update: bytes
    author: Author | None = None
    """None: the gateway's own update (a repair), recorded without an author."""
    fields: tuple[str, ...] = ()
    """What the update changed, as ``core.venue``, ``timeline[dinner].notes``, ``timeline[dinner]``
    (an entry added or deleted); empty when the room could not tell (held pending)."""
    fence: int | None = None
    """The fencing token of the writer's lease on the room (``Leases``): the store refuses the
    append, in the appending transaction, unless the room's lease still carries this token.
    None: not fenced (the embedded single node, which owns every room; tools and tests)."""


FENCED = None
"""What ``Store.append`` returns, in place of an offset, for an append it refused because its
``fence`` is no longer the room's (another node took the lease over): nothing of it is stored."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One appended update, as ``gateway audit`` lists it. Kept when compaction drops the row."""

    offset: int
    at: float
    """When it was committed (Unix seconds, the store's clock)."""
    subject: str | None
    role: str | None
    fields: tuple[str, ...]
    via: str | None = None
    """How the gateway made the update for its author (``restore``, ``undo``, ``patch``);
    None for a client's own edit."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What compaction keeps so that any state of the last ``seconds`` can be rebuilt."""

    seconds: float
    """The history window: every state committed since ``now - seconds`` stays readable."""
    checkpoint_seconds: float
    """A compaction's snapshot is kept as a checkpoint (a point to rebuild from) only when the
    newest kept checkpoint is older than this: fewer snapshots, a longer replay."""


@dataclass(frozen=True, slots=True)
class History:
    """What the store holds for a room: the newest snapshot, then every update after it."""

    room: RoomId
    snapshot: bytes | None = None
    snapshot_offset: int = 0
    updates: list[tuple[int, bytes]] = field(default_factory=list)
    """(offset, update) pairs with offset > snapshot_offset, in offset order."""
    epoch: int = 1
    """The room's history generation: ``Store.reset`` starts a new one (offsets keep growing)."""

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
    offsets increase by one per room in append order. An append whose ``fence`` is stale is
    refused in the same transaction (``FENCED`` in its place; the rest of the batch commits).
    ``compact`` atomically records a snapshot covering offsets up to ``through`` and deletes the
    log rows it covers; it never deletes a row the snapshot does not cover. ``load`` returns the
    newest snapshot and every later update.
    """

    async def load(self, room: RoomId) -> History: ...

    async def append(self, batch: Sequence[Append]) -> list[int | None]:
        """Each append's offset, or ``FENCED`` (None) for one refused by its stale fence."""
        ...

    async def compact(
        self, room: RoomId, snapshot: bytes, through: int, *, retention: Retention | None = None
    ) -> None:
        """``retention`` None: delete every log row the snapshot covers. Otherwise keep the
        snapshot as a checkpoint too (``Retention.checkpoint_seconds``) and delete only the rows
        and checkpoints older than the newest checkpoint at or before the window's start (the
        state at ``now - retention.seconds``): every later state can still be rebuilt."""
        ...

    async def audit(self, room: RoomId, *, limit: int = 1000) -> list[AuditEntry]:
        """The room's newest ``limit`` audit entries, oldest first."""
        ...

    async def load_since(self, room: RoomId, offset: int) -> History:
        """What a client whose state covers offsets up to ``offset`` lacks: the updates after it
        (``snapshot`` None, ``snapshot_offset`` = ``offset``), or, when compaction covered some
        of them, the snapshot and every update after it (as ``load``). Read in one transaction;
        an offset at or beyond the room's last one gives no updates. The store does not know
        the epoch ``offset`` belongs to: the caller compares it with ``History.epoch``."""
        ...

    async def reset(self, room: RoomId) -> int:
        """Drop the room's history (snapshot and log; audit rows stay) and start a new epoch;
        returns it. Offsets keep growing across epochs."""
        ...


@runtime_checkable
class Versions(Protocol):
    """Past states of a room and who made each one (version history, restore, change feed).

    Rebuilding the state at an offset needs a checkpoint (or the snapshot) at or before it and
    every log row after that checkpoint: compaction with a ``Retention`` keeps them for the
    window (``Store.compact``); ``load_at`` says None once they are gone.
    """

    async def load_at(
        self, room: RoomId, offset: int, through: int | None = None
    ) -> History | None:
        """The newest checkpoint at or before ``offset`` (``snapshot``, ``snapshot_offset``;
        None and 0 before any) and every update after it up to ``through`` (default
        ``offset``); None when the store no longer holds what rebuilding ``offset`` needs, or
        ``offset`` belongs to an epoch before the room's last reset."""
        ...

    async def audit_range(
        self,
        room: RoomId,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """Audit entries with ``after < offset < before``, at most ``limit``, in offset order
        (``newest_first``: from the newest down)."""
        ...

    async def offset_at(self, room: RoomId, at: float) -> int:
        """The last offset committed at or before ``at`` (Unix seconds; 0 when none)."""
        ...

    async def rooms_changed_since(self, at: float) -> set[RoomId]:
        """The rooms with an update committed at or after ``at`` (Unix seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A receiver of change batches (gateway/webhooks.py)."""

    id: str
    url: str
    secret: str
    """The HMAC-SHA256 key of its signatures (kept in the store: the gateway must sign)."""
    created_at: float = 0.0
    """When it was registered (Unix seconds): a wedding it has no cursor for is delivered from
    the first change committed after this."""
    dead_since: float | None = None
    """Set when deliveries failed for longer than the dead-letter time: nothing is sent to it
    until an admin re-registers it (``PUT /v1/webhooks/{id}``)."""


@runtime_checkable
class Webhooks(Protocol):
    """Registered webhook endpoints, and which node delivers to each (one at a time)."""

    async def register(self, endpoint: WebhookEndpoint) -> None:
        """Insert or replace it (its cursors stay; ``dead_since`` is cleared)."""
        ...

    async def endpoints(self) -> list[WebhookEndpoint]: ...

    async def remove(self, endpoint_id: str) -> bool:
        """Drop it and its cursors; False when there was none."""
        ...

    async def claim(self, endpoint_id: str, node: NodeId, ttl: float) -> bool:
        """Take or renew the delivery of ``endpoint_id`` for ``ttl`` seconds, unless another node
        holds it: deliveries to one endpoint come from one node, so each wedding's are in order."""
        ...

    async def mark_dead(self, endpoint_id: str) -> None: ...


@runtime_checkable
class Cursors(Protocol):
    """Per endpoint and wedding, the last offset delivered (acknowledged by the receiver)."""

    async def cursors(self, endpoint_id: str) -> dict[RoomId, int]: ...

    async def advance(self, endpoint_id: str, room: RoomId, offset: int) -> None:
        """Record ``offset`` as delivered; a cursor never moves back."""
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    """Who judges a room (DESIGN.md §2: exactly one node at a time, its owner)."""

    room: RoomId
    holder: NodeId | None
    """The node holding the lease, None when nobody does (released, or never taken)."""
    fence: int
    """The fencing token: it grows by one each time the lease is taken, never otherwise."""
    acquired: bool = False
    """``acquire`` took it for the calling node (then ``holder`` is that node)."""


class Leases(Protocol):
    """Room ownership: a lease per room with a fencing token that only ever grows.

    Held by one node at a time until it expires ``ttl`` seconds (the store's clock) after its
    last renewal, or is released. ``Store.append`` refuses appends carrying an older fence in
    the same transaction, and taking a lease waits for appends in flight under the old fence,
    so a new owner that loads the room after ``acquire`` sees every append the old owner can
    ever make. Every call raises BackendUnavailable when the store is unreachable.
    """

    async def acquire(self, room: RoomId, node: NodeId, ttl: float) -> Lease:
        """Take the lease if nobody holds it, it expired, or ``node`` held it before (a restart
        with the same node id): the fence grows by one. Otherwise return the holder's lease
        (``acquired`` False). Never call it for a lease the caller holds now."""
        ...

    async def renew(
        self, leases: Sequence[tuple[RoomId, int]], node: NodeId, ttl: float
    ) -> set[RoomId]:
        """Extend the leases ``node`` holds with these fences by ``ttl`` seconds from now; return
        the rooms renewed. A room missing from the answer was taken over (its fence moved on):
        the caller no longer owns it. One round trip for the whole list."""
        ...

    async def release(self, room: RoomId, node: NodeId, fence: int) -> None:
        """Give the lease up (nobody holds it; the fence stays), if ``node`` still holds it
        with ``fence``; otherwise do nothing."""
        ...

    async def holder(self, room: RoomId) -> Lease:
        """The room's lease as stored (``holder`` None when free or expired)."""
        ...


class Revocations(Protocol):
    """Revoked token ids (``jti``), shared by every node until each token would expire anyway.

    ``is_revoked`` reads a local copy (no I/O, called on every connect); ``revoke`` records one
    and tells every node, which calls each ``on_revoked`` callback with the token id.
    """

    def is_revoked(self, token_id: str) -> bool: ...

    async def revoke(self, token_id: str, expires_at: float) -> None: ...

    def on_revoked(self, callback: Callable[[str], None]) -> None: ...


@runtime_checkable
class WeddingDates(Protocol):
    """An index of each wedding's ``core.wedding_date`` (proto/schema.md), kept by the node that
    judges the wedding, so that a node can find the weddings of the coming days without loading
    documents (gateway/warm.py). Best effort: a date is written when a room loads and when an
    edit changes it; an index row may lag the document by one write, never the other way."""

    async def set_wedding_date(self, room: RoomId, day: date | None) -> None:
        """Record the wedding's date (None: it has none; the row goes)."""
        ...

    async def weddings_between(
        self, first: date, last: date, *, limit: int, free_or_held_by: NodeId | None = None
    ) -> list[tuple[RoomId, date]]:
        """Weddings dated ``first``..``last`` (inclusive), soonest first, at most ``limit``.
        ``free_or_held_by``: only those whose lease is free or held by that node."""
        ...
