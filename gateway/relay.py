"""Relay: a room's messages between the node that owns it and the nodes that relay to it.

Exactly one node judges a wedding, its owner (gateway/ownership.py, DESIGN.md §2). Every node
accepts clients for every wedding; a node that does not own the room checks its clients'
updates structurally and forwards them to the owner (``Forward``), which judges, applies,
persists and publishes the result, and answers each forwarded update through the relaying node:
an ACK once durable, REJECTs, or a close. Every node writes the owner's published updates to its
own members. Everything travels on the room's bus channel, in envelopes (msgpack arrays):

    MESSAGE  fence sender_node sender_client data   a protocol message for every node's members
    FORWARD  owner client seq first catch_up subject role vendor_id rejects update via
    REPLY    node client data                       one message for one relayed client
    CLOSE    node client code reason                close one relayed client
    LEFT     client                                 a relayed client left: drop its proxy
    OWNER    node fence state_vector                this node owns the room from now on; each
                                                    lease interval, with its document's state
    RELEASED node fence                             this node gave the room up
    RESEND   node client from                       resend that client's forwards from ``from``
    RESEND_ALL                                      the owner missed messages: resend all
    HEARTBEAT                                       a relaying node still has clients here

Every envelope ends with the id of the node that published it (a bus's own publisher id need
not be the node's).

Delivery (the Bus port: at most once, ordered per room and publisher, a loss marker after a
gap) gives the relay these guarantees, which tests/adapters/contracts.py checks on each bus:

- **Ordered per sender.** A client's forwards reach the owner in ``seq`` order; the owner judges
  ``seq`` only right after ``seq - 1`` (``Proxy.expected``) and asks for a resend from the
  first one missing (RESEND) when one arrives beyond it, so an ACK, which is cumulative, never
  covers an update the owner did not judge.
- **At least once until acknowledged.** The relaying node keeps each forwarded update until
  its ACK (``RoomSlot.outstanding``) and sends them all again, in order, when the owner changes
  (OWNER), when either side saw a loss marker (then the owner says RESEND_ALL), and when the
  oldest waited ``resend_seconds``. A duplicate is harmless: a CRDT update applied twice
  changes nothing, and the owner answers it with the ACK it already owes.
- **Bounded.** A client with ``max_outstanding`` unacknowledged forwards is not read until the
  owner answers; one whose oldest forward waited ``relay_timeout_seconds`` is closed with 4002
  (reconnect): its client resends what is not acknowledged, to whichever node it reaches.
- **Replicas converge.** A relaying node whose document still lacks part of what the owner's
  previous OWNER heartbeat said it held (a whole interval ago: every update in it was published
  before that heartbeat, on the same ordered channel, and stored meanwhile) lost a message the
  bus could not flag — say, one the owner published while this node resubscribed, stored only
  after this node's repair read the log — and repairs from the store again (``behind``).
- **Only the owner's updates count.** A MESSAGE carrying a document update names the fence of
  the owner that judged it; one with a fence older than the newest the node has seen (a paused
  owner that woke up after losing its lease) is dropped.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog

from gateway.core.effects import Forward, Persist
from gateway.core.limits import Limits
from gateway.core.policy import Grant, Role
from gateway.core.room import Room
from gateway.core.session import Session
from gateway.errors import BackendUnavailable, GatewayError, InvalidState
from gateway.fanout import Fanout
from gateway.ports import Bus, BusMessage
from gateway.slot import Forwarded, Proxy, RoomSlot
from gateway.telemetry import Telemetry
from gateway.types import NodeId, RoomId
from wedsync_protocol import codec
from wedsync_protocol.codec import decode_state_vector
from wedsync_protocol.messages import Ack, Feature

log = structlog.get_logger(__name__)

SYNC_UPDATE_PREFIX = codec.SYNC_UPDATE_PREFIX


class Kind(enum.IntEnum):
    MESSAGE = 0
    FORWARD = 1
    REPLY = 2
    CLOSE = 3
    LEFT = 4
    OWNER = 5
    RELEASED = 6
    RESEND = 7
    RESEND_ALL = 8
    HEARTBEAT = 9


def message_envelope(
    data: bytes,
    fence: int | None = None,
    sender: tuple[str | None, int] = (None, 0),
    node: str = "",
) -> bytes:
    """The MESSAGE envelope of protocol message ``data`` (``fence``: of the judging owner;
    ``sender``: the node and session id of the client it came from, which has it), published
    by ``node``."""
    envelope: bytes = msgpack.packb([Kind.MESSAGE, fence, sender[0], sender[1], data, node])
    return envelope


class ClosedByOwner(GatewayError):
    """The room's owner closed a client of this node with ``close_code`` (its reason)."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.retryable = 4000 <= close_code < 4500 or close_code == 1012


@dataclass(frozen=True, slots=True)
class RelaySettings:
    resend_seconds: float = 2.0
    """A forwarded update not acknowledged after this long is sent again."""
    timeout_seconds: float = 10.0
    """A client whose forwarded update waited this long for the owner is closed with 4002."""
    max_outstanding: int = 256
    """Unacknowledged forwarded updates per client; beyond, its next message waits."""


class OwnerEvents:
    """What the relay tells the room's ownership about (gateway/ownership.py wires these)."""

    def __init__(
        self,
        *,
        owner_seen: Callable[[RoomSlot, NodeId, int], None],
        released: Callable[[RoomSlot], None],
    ) -> None:
        self.owner_seen = owner_seen
        """A node with this fence owns the room (an OWNER, or a document update it judged)."""
        self.released = released
        """The owner gave the room up: a node with clients in it may take it."""


class Relay:
    """Both sides of the relay for every room of this node."""

    def __init__(
        self,
        node_id: NodeId,
        bus: Bus,
        fanout: Fanout,
        limits: Limits,
        settings: RelaySettings,
    ) -> None:
        self.node_id = node_id
        self.bus = bus
        self.fanout = fanout
        self.limits = limits
        self.settings = settings
        self.events: OwnerEvents | None = None
        self.repair: Callable[[RoomSlot], None] = lambda slot: None
        """Rebuild the room from the store (peers.py): this node missed the owner's updates."""
        self._proxy_of: dict[Session, Proxy] = {}
        """Every proxy of every room this node owns, by its session."""
        self.forwards = self.resends = self.behind = 0
        self.telemetry = Telemetry()
        """The node's (it replaces this one): relayed updates' round trips to the owner."""

    # -- what every node publishes --------------------------------------------------------------

    def publish(self, slot: RoomSlot, data: bytes, sender: Session | None = None) -> None:
        """Publish a protocol message for the other nodes' members; a document update carries
        the fence of this node's lease (it judged it)."""
        envelope = message_envelope(data, slot.fence, self._client_of(slot, sender), self.node_id)
        self.bus.publish_nowait(slot.id, envelope)

    def _client_of(self, slot: RoomSlot, session: Session | None) -> tuple[str | None, int]:
        """Which node's client ``session`` is: a proxy stands for another node's client."""
        if session is None:
            return None, 0
        proxy = self._proxy_of.get(session)
        if proxy is not None:
            return proxy.origin, proxy.client
        return self.node_id, session.id

    def publish_to(self, room_id: RoomId, data: bytes) -> None:
        """Publish a protocol message of no room this node has loaded (a reset notice)."""
        self.bus.publish_nowait(room_id, message_envelope(data, node=self.node_id))

    def publish_kind(self, room_id: RoomId, kind: Kind) -> None:
        """Publish an envelope with no arguments (RESEND_ALL, HEARTBEAT)."""
        self._send(room_id, [kind])

    def announce(self, slot: RoomSlot) -> None:
        """OWNER: this node judges the room from now on (relaying nodes resend to it), and
        what its document holds (relaying nodes that lack part of it repair)."""
        state = slot.room.doc.get_state() if slot.room is not None else b""
        self._send(slot.id, [Kind.OWNER, self.node_id, slot.fence, state])

    def released(self, room_id: RoomId, fence: int) -> None:
        self._send(room_id, [Kind.RELEASED, self.node_id, fence])

    def _send(self, room_id: RoomId, envelope: list[Any]) -> None:
        self.bus.publish_nowait(room_id, msgpack.packb([*envelope, self.node_id]))

    # -- the relaying side ----------------------------------------------------------------------

    def forward(self, slot: RoomSlot, effect: Forward) -> None:
        """Send a client's update to the owner; keep it until the owner acknowledges it."""
        loop_time = asyncio.get_running_loop().time()
        pending = slot.outstanding.setdefault(effect.session, deque())
        item = Forwarded(effect.seq, effect.update, effect.catch_up, loop_time, loop_time)
        pending.append(item)
        self.forwards += 1
        self._send_forward(slot, effect.session, pending[-1], pending[0].seq)

    def _send_forward(self, slot: RoomSlot, session: Session, item: Forwarded, first: int) -> None:
        grant = session.grant
        envelope = [
            Kind.FORWARD,
            slot.owner,
            session.id,
            item.seq,
            first,
            item.catch_up,
            grant.subject,
            grant.role.value,
            grant.vendor_id,
            session.wants_rejects,
            item.update,
            grant.via,  # after the update: a node of the previous release reads the first 11
        ]
        self._send(slot.id, envelope)

    def held(self, slot: RoomSlot, session: Session) -> bool:
        """Whether the client has as many unacknowledged forwards as it may (read it later)."""
        pending = slot.outstanding.get(session)
        return pending is not None and len(pending) >= self.settings.max_outstanding

    def resend(self, slot: RoomSlot, session: Session | None = None, start: int = 0) -> None:
        """Send the unacknowledged forwards again, in order (one client's from ``start``)."""
        loop_time = asyncio.get_running_loop().time()
        clients = [session] if session is not None else list(slot.outstanding)
        for client in clients:
            pending = slot.outstanding.get(client)
            if not pending:
                continue
            for item in pending:
                if item.seq >= start:
                    item.sent_at = loop_time
                    self.resends += 1
                    self._send_forward(slot, client, item, pending[0].seq)

    def sweep(self, slot: RoomSlot) -> None:
        """The relaying node's timer: resend what waited ``resend_seconds``; close a client whose
        oldest forward waited ``timeout_seconds``; tell the owner this node still relays."""
        loop_time = asyncio.get_running_loop().time()
        settings = self.settings
        for session, pending in list(slot.outstanding.items()):
            if not pending:
                continue
            if loop_time - pending[0].forwarded_at >= settings.timeout_seconds:
                del slot.outstanding[session]
                self.fanout.close(
                    session,
                    BackendUnavailable(
                        f"the owner of wedding {slot.id} did not answer for "
                        f"{settings.timeout_seconds:g} s; reconnect"
                    ),
                )
            elif loop_time - pending[0].sent_at >= settings.resend_seconds:
                self.resend(slot, session)
        if slot.room is not None and slot.room.members:
            self.publish_kind(slot.id, Kind.HEARTBEAT)

    def left(self, slot: RoomSlot, session: Session) -> None:
        """A local client left: its unacknowledged forwards go (its client resends them when it
        reconnects), and the owner drops its proxy."""
        slot.outstanding.pop(session, None)
        if not slot.owning and session.seq:  # it forwarded: the owner has a proxy for it
            self._send(slot.id, [Kind.LEFT, session.id])

    def judge_own(self, slot: RoomSlot, room: Room) -> None:
        """This node became the owner: judge its clients' unacknowledged forwards itself."""
        outstanding, slot.outstanding = slot.outstanding, {}
        for session, pending in outstanding.items():
            if session not in self.fanout.outlets:
                continue
            for item in pending:
                try:
                    effects = room.judge(session, item.seq, item.update, item.catch_up)
                except GatewayError as exc:
                    self.fanout.close(session, exc)
                    break
                self.fanout.execute(slot, effects)
        slot.acked.set()

    # -- incoming envelopes ---------------------------------------------------------------------

    def receive(self, slot: RoomSlot, room: Room, message: BusMessage) -> None:
        """One envelope from another node."""
        envelope = msgpack.unpackb(message.payload)
        kind, origin = envelope[0], NodeId(envelope[-1])
        now = asyncio.get_running_loop().time()
        if slot.owning:
            slot.heard[origin] = now
        elif origin == slot.owner:
            slot.owner_heard = now
        match kind:
            case Kind.MESSAGE:
                self._on_message(slot, room, origin, envelope)
            case Kind.FORWARD:
                if slot.owning and envelope[1] == self.node_id:
                    self._on_forward(slot, room, origin, envelope)
            case Kind.REPLY:
                if envelope[1] == self.node_id:
                    self._on_reply(slot, envelope[2], envelope[3])
            case Kind.CLOSE:
                if envelope[1] == self.node_id:
                    session = self._local(slot, envelope[2])
                    if session is not None:
                        self.fanout.close(session, ClosedByOwner(envelope[3], envelope[4]))
            case Kind.LEFT:
                self._drop_proxy(slot, room, (origin, envelope[1]))
            case Kind.OWNER:
                self._events.owner_seen(slot, envelope[1], envelope[2])
                if len(envelope) > 4 and not slot.owning and envelope[1] == slot.owner:
                    self._check_behind(slot, room, envelope[3])
            case Kind.RELEASED:
                if slot.owner == envelope[1]:
                    self._events.released(slot)
            case Kind.RESEND:
                if envelope[1] == self.node_id:
                    session = self._local(slot, envelope[2])
                    if session is not None:
                        self.resend(slot, session, envelope[3])
            case Kind.RESEND_ALL:
                self.resend(slot)
            case Kind.HEARTBEAT:
                pass
            case _:
                raise InvalidState(f"a peer published an envelope of kind {kind}")

    @property
    def _events(self) -> OwnerEvents:
        if self.events is None:
            raise RuntimeError("Relay used before ownership wired its events")
        return self.events

    def _local(self, slot: RoomSlot, client: int) -> Session | None:
        room = slot.room
        return room.members.get(client) if room is not None else None

    def _on_message(
        self, slot: RoomSlot, room: Room, publisher: NodeId, envelope: list[Any]
    ) -> None:
        _, fence, sender_node, sender_client, data = envelope[:5]
        if fence is not None and data.startswith(SYNC_UPDATE_PREFIX):
            if fence < slot.known_fence:  # judged by an owner that lost the room since
                log.info("stale_owner_update_dropped", room=slot.id, fence=fence, node=publisher)
                return
            if fence > slot.known_fence:
                self._events.owner_seen(slot, publisher, fence)
                if not slot.serving:
                    return
        sender = self._local(slot, sender_client) if sender_node == self.node_id else None
        self.fanout.execute(slot, room.receive_from_peer(data, sender))

    # -- the owning side ------------------------------------------------------------------------

    def _on_forward(self, slot: RoomSlot, room: Room, origin: NodeId, envelope: list[Any]) -> None:
        _, _, client, seq, first, catch_up, subject, role, vendor_id, rejects, update = envelope[
            :11
        ]
        key = (origin, client)
        proxy = slot.proxies.get(key)
        if proxy is None:
            proxy = slot.proxies[key] = self._proxy(slot, origin, client, first)
            self._proxy_of[proxy.session] = proxy
            via = envelope[11] if len(envelope) > 12 else None  # the last is the publisher
            grant = Grant(subject=subject, role=Role(role), vendor_id=vendor_id, via=via)
            proxy.session.grant = grant
            proxy.session.features = Feature.ACKS | (Feature.REJECTS if rejects else Feature(0))
        proxy.session.last_receive = asyncio.get_running_loop().time()
        if seq > proxy.expected:  # one went missing on the way: judge nothing out of order
            self._send(slot.id, [Kind.RESEND, origin, client, proxy.expected])
            return
        if seq < proxy.expected:  # a resend of one judged already: the ACK it is owed
            self.fanout.execute(slot, [Persist(None, proxy.session, proxy.expected - 1)])
            return
        proxy.expected = seq + 1
        slot.changed.set()  # a relayed client counts as activity: the owner stays loaded
        try:
            effects = room.judge(proxy.session, seq, update, catch_up)
        except GatewayError as exc:
            self.fanout.close(proxy.session, exc)
            self._drop_proxy(slot, room, key)
            return
        self.fanout.execute(slot, effects)

    def _proxy(self, slot: RoomSlot, origin: NodeId, client: int, first: int) -> Proxy:
        session = Session(max_message_bytes=self.limits.max_message_bytes)
        session.went_live()
        self.fanout.connect(session, _ProxyOutlet(self, slot.id, origin, client), proxy=True)
        return Proxy(session, origin, client, first)

    def _drop_proxy(self, slot: RoomSlot, room: Room, key: tuple[NodeId, int]) -> None:
        proxy = slot.proxies.pop(key, None)
        if proxy is not None:
            self._proxy_of.pop(proxy.session, None)
            room.release_claims(proxy.session)
            self.fanout.disconnect(proxy.session)
            slot.changed.set()  # the owner may be idle now

    def unloaded(self, slot: RoomSlot) -> None:
        """The room left this node: its proxies go with it."""
        for proxy in slot.proxies.values():
            self._proxy_of.pop(proxy.session, None)
            self.fanout.disconnect(proxy.session)
        slot.proxies.clear()

    def forget_silent(self, slot: RoomSlot, room: Room, older_than: float) -> None:
        """On the owner: drop the proxies of nodes not heard from since ``older_than`` (loop
        time; a relaying node with clients sends a HEARTBEAT each lease interval)."""
        for key, proxy in list(slot.proxies.items()):
            if slot.heard.get(proxy.origin, 0.0) < older_than:
                self._drop_proxy(slot, room, key)

    def _check_behind(self, slot: RoomSlot, room: Room, state: bytes) -> None:
        """Repair if this node still lacks what the owner held one heartbeat ago."""
        previous, slot.owner_state = slot.owner_state, state
        if not previous or slot.repairing:
            return
        mine = decode_state_vector(room.doc.get_state())
        if any(
            mine.get(client, 0) < clock for client, clock in decode_state_vector(previous).items()
        ):
            self.behind += 1
            log.warning("room_behind_owner", room=slot.id, owner=slot.owner)
            self.repair(slot)

    def _on_reply(self, slot: RoomSlot, client: int, data: bytes) -> None:
        session = self._local(slot, client)
        if session is None:
            return
        message = codec.decode_server_message(data)
        if isinstance(message, Ack):
            pending = slot.outstanding.get(session)
            if pending and pending[0].seq <= message.seq:
                self._answered(pending, message.seq, session.wants_acks)
            slot.acked.set()
            if not session.wants_acks or message.seq <= session.acked:
                return  # the owner acknowledged a resend again: the client heard it once
            session.acked = message.seq
        else:
            self.fanout.flush_batch(slot)  # a REJECT never overtakes the undo it explains
        outlet = self.fanout.outlets.get(session)
        if outlet is not None:
            outlet.send_nowait(data)

    def _answered(self, pending: deque[Forwarded], seq: int, acks: bool) -> None:
        """The owner acknowledged the client's forwards up to ``seq``: time each one (the
        client's ACK too, if it asked for acks: it was forwarded when it was received)."""
        now = asyncio.get_running_loop().time()
        relay_ack, edit_ack = self.telemetry.relay_ack, self.telemetry.edit_ack
        while pending and pending[0].seq <= seq:
            waited = now - pending.popleft().forwarded_at
            relay_ack.observe(waited)
            if acks:
                edit_ack.observe(waited)


class _ProxyOutlet:
    """On the owner: what the room writes to a client of another node goes to that node."""

    __slots__ = ("client", "node", "relay", "room_id")

    def __init__(self, relay: Relay, room_id: RoomId, node: NodeId, client: int) -> None:
        self.relay = relay
        self.room_id = room_id
        self.node = node
        self.client = client

    def send_nowait(self, data: bytes) -> None:
        self.relay._send(self.room_id, [Kind.REPLY, self.node, self.client, data])

    def close_nowait(self, error: GatewayError) -> None:
        envelope = [Kind.CLOSE, self.node, self.client, error.close_code, str(error)]
        self.relay._send(self.room_id, envelope)
