"""The gateway's own writes to a wedding (restore, undo, ``PATCH .../core``), made as a client's.

A write joins the wedding's room on this node as an in-process client (a ``Session`` with the
requester's grant, ``via`` naming the kind of write, and an outlet that keeps what the room
sends it), asks for ACKs and REJECTs (HELLO), and sends one update made on a copy of the room's
Doc: so it takes exactly the path of any client's update (proto/spec.md, DESIGN.md §5). On the
owner the room judges, applies, broadcasts, publishes and persists it; on any other node the
relay forwards it to the owner, one judge per wedding (DESIGN.md §2), and the owner's ACK or
REJECTs come back through this node. Every member, stock clients included, gets the result as
an ordinary update: nobody resets. The write returns once the ACK says it is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pycrdt import Doc

from gateway.core.policy import Grant
from gateway.core.session import Session
from gateway.errors import BackendUnavailable, GatewayError
from gateway.node import Node
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    EMPTY_UPDATE,
    EXTENSION_VERSION,
    Ack,
    Feature,
    Hello,
    Reject,
    SyncUpdate,
)

log = structlog.get_logger(__name__)

Edit = Callable[[Doc[Any]], None]
"""Changes a copy of the room's Doc (in its own transactions); never awaits."""


@dataclass(slots=True)
class Written:
    """What the owner answered: durable (``acknowledged``), with the refused parts."""

    changed: bool
    """False: the edit changed nothing, so nothing was sent."""
    rejects: list[Reject] = field(default_factory=list)
    view: Any = None
    """What ``render`` made of the room's Doc once the write was durable."""


class _Outlet:
    """What the room sends the in-process client, kept until the write's answer is in."""

    __slots__ = ("changed", "error", "messages")

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.error: GatewayError | None = None
        self.changed = asyncio.Event()

    def send_nowait(self, data: bytes) -> None:
        self.messages.append(data)
        self.changed.set()

    def close_nowait(self, error: GatewayError) -> None:
        if self.error is None:
            self.error = error
        self.changed.set()


async def write(
    node: Node,
    room_id: RoomId,
    grant: Grant,
    edit: Edit,
    *,
    timeout: float,
    render: Callable[[Doc[Any]], Any] | None = None,
) -> Written:
    """Make ``edit`` on a copy of the wedding's Doc and send what it changed as ``grant``'s
    update; return once it is durable (ACK), with any REJECTs. Raises BackendUnavailable when
    no ACK comes within ``timeout`` seconds, and the GatewayError the room closed the client
    with (a refused update, a store that is too far behind)."""
    session = Session(max_message_bytes=node.limits.max_message_bytes, now=time.monotonic())
    session.grant = grant
    outlet = _Outlet()
    slot = await node.join(room_id, session, outlet)
    try:
        await _send(node, slot, session, Hello(EXTENSION_VERSION, Feature.ACKS | Feature.REJECTS))
        room = slot.room
        if room is None:
            raise BackendUnavailable(f"wedding {room_id} is being reloaded; retry")
        copy: Doc[Any] = Doc()
        copy.apply_update(room.doc.get_update())  # no await since: the copy is of this moment
        before = copy.get_state()
        edit(copy)
        update = copy.get_update(before)
        if update == EMPTY_UPDATE:
            return Written(False, view=render(room.doc) if render else None)
        session.last_receive = time.monotonic()
        await _send(node, slot, session, SyncUpdate(update))
        rejects = await _wait_ack(outlet, session.seq, timeout)
        room = slot.room
        view = render(room.doc) if render and room is not None else None
        return Written(True, rejects, view)
    finally:
        node.leave(slot, session)


async def _send(node: Node, slot: Any, session: Session, message: Any) -> None:
    pending = node.receive(slot, session, message)
    if pending is not None:
        await pending


async def _wait_ack(outlet: _Outlet, seq: int, timeout: float) -> list[Reject]:
    rejects: list[Reject] = []
    read = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                for data in outlet.messages[read:]:
                    message = codec.decode_server_message(data)
                    if isinstance(message, Reject) and message.seq == seq:
                        rejects.append(message)
                    elif isinstance(message, Ack) and message.seq >= seq:
                        return rejects
                read = len(outlet.messages)
                if outlet.error is not None:
                    raise outlet.error
                outlet.changed.clear()
                await outlet.changed.wait()
    except TimeoutError:
        raise BackendUnavailable(f"the update was not acknowledged within {timeout:g} s") from None
