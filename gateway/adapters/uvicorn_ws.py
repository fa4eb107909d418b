"""uvicorn's sans-I/O WebSocket protocol, made to let go of a peer that stopped reading.

Two changes, both about memory held for a client that no longer reads:

- the kernel's send buffer of each WebSocket is capped (``send_buffer_bytes``; Linux doubles
  the value asked for, and without a cap autotuning grew it to ~2.8 MB per stalled client);
- a peer that does not answer a keepalive ping within ``ws_ping_timeout`` is closed with 4001
  and, if its socket still holds data it will never read, aborted: uvicorn's own timeout closes
  with 1011 (which proto/spec.md §6 keeps for a gateway bug) and then waits for the buffer to
  drain, which from a peer that does not read never happens. The application hears of it as a
  ``websocket.disconnect`` whose ``by`` is ``"gateway"``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import MutableMapping
from typing import Any

import structlog
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = structlog.get_logger(__name__)

KEEPALIVE_CLOSE_CODE = 4001  # slow client: reconnect (proto/spec.md §6)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """Configure through ``protocol_class``."""

    send_buffer_bytes = 0
    """SO_SNDBUF asked for each WebSocket; 0 keeps the kernel's autotuning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's asyncio.Queue and asyncio.Event hold five deques, ~4 KB of every idle
        # connection: the same operations on lists made when needed
        self.queue: Any = _EventQueue()
        self.writable: Any = _Flag()
        self.writable.set()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self.send_buffer_bytes and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
            except OSError as exc:  # not a TCP socket (tests over a pipe): keep the default
                log.debug("send_buffer_not_set", error=str(exc))

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        reason = f"no answer to a keepalive ping within {self.ping_timeout:g} s"
        disconnect: Any = {  # "by": the application's log blames the gateway, not the peer
            "type": "websocket.disconnect",
            "code": KEEPALIVE_CLOSE_CODE,
            "reason": reason,
            "by": "gateway",
        }
        self.queue.put_nowait(disconnect)
        self.conn.fail(KEEPALIVE_CLOSE_CODE, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # it does not read: what waits for it would never drain
        else:
            self.transport.close()


def protocol_class(*, send_buffer_bytes: int) -> type[GatewayWebSocketProtocol]:
    """The protocol uvicorn should run (``uvicorn.Config(ws=...)``) with these settings."""
    return type(
        "ConfiguredGatewayWebSocketProtocol",
        (GatewayWebSocketProtocol,),
        {"send_buffer_bytes": send_buffer_bytes},
    )


def forget_handshake(send: Any, scope: MutableMapping[str, Any]) -> None:
    """The client is admitted: drop what only the upgrade needed. uvicorn keeps the upgrade's
    request and response (their headers: a browser sends a dozen) and the scope's header list
    for as long as the connection lives — kilobytes of every idle connection."""
    scope["headers"] = []
    protocol = getattr(send, "__self__", None)
    if isinstance(protocol, WebSocketsSansIOProtocol) and protocol.handshake_complete:
        done: Any = protocol  # read again only on the paths before the handshake completes
        done.request = done.response = None
        protocol.scope["headers"] = []


class _EventQueue:
    """The ASGI events of one connection: what uvicorn uses of asyncio.Queue (put_nowait, get,
    empty), for one reader (the application's ``receive``)."""

    __slots__ = ("_items", "_reader")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._reader: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:  # an item is never lost to a cancelled reader: it stays here
            reader = self._reader = asyncio.get_running_loop().create_future()
            try:
                await reader
            finally:
                self._reader = None
        return self._items.pop(0)


class _Flag:
    """asyncio.Event's operations (set, clear, is_set, wait), its waiters listed only while
    there are some (uvicorn's ``writable``: clear while the transport's buffer is full)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True
