"""Writing to one client's WebSocket.

Two writers with one interface. ``AsgiWriter`` sends one ASGI event per message and works under
any ASGI server. ``RawFrameWriter`` is used under uvicorn's ``websockets-sansio`` protocol when
no extension (permessage-deflate) was negotiated: server frames are unmasked, so the frame of a
broadcast is the same bytes for every member. It is encoded once per broadcast and written
straight to each member's transport, several queued frames in one write (DESIGN.md §10: encode a
broadcast once, keep Python out of per-byte work). Closing always goes through ASGI, so the
close handshake stays uvicorn's.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any, Protocol

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

_BINARY_FIN = 0x82


def encode_frame(data: bytes) -> bytes:
    """One unmasked, final, binary WebSocket frame carrying ``data`` (RFC 6455 §5.2)."""
    n = len(data)
    if n < 126:
        return bytes((_BINARY_FIN, n)) + data
    if n < 1 << 16:
        return struct.pack("!BBH", _BINARY_FIN, 126, n) + data
    return struct.pack("!BBQ", _BINARY_FIN, 127, n) + data


class Writer(Protocol):
    direct: bool
    """True if ``write_nowait`` can usually write without waiting (no writer wake-up needed)."""

    def prepare(self, data: bytes) -> Any:
        """What to queue for ``data`` (shared between members when ``data`` is shared)."""
        ...

    async def write(self, queued: deque[Any]) -> int:
        """Write and remove every queued item; return how many. Raises OSError if gone."""
        ...

    def write_nowait(self, queued: deque[Any]) -> int | None:
        """Write every queued item now if possible; None if the caller must ``await write``."""
        ...

    async def close(self, code: int, reason: str) -> None: ...

    def abandon(self) -> None:
        """The peer does not read: abort the connection if it still buffers data after
        ``CLOSE_GRACE_SECONDS`` (a close frame queued behind that data would never go out)."""
        ...

    async def ready(self) -> None:
        """Return once the connection's transport takes writes again (below its high-water
        mark): what was written before has gone to the kernel."""
        ...

    def buffered(self) -> int:
        """Bytes written to the connection's transport and not yet taken by the kernel."""
        ...


class AsgiWriter:
    """One ``websocket.send`` event per message."""

    __slots__ = ("_send", "_transport")
    direct = False

    def __init__(self, send: Send, transport: Any = None) -> None:
        self._send = send
        self._transport = transport
        """uvicorn's transport, when known: its buffer counts toward the client's outbox."""

    def buffered(self) -> int:
        transport = self._transport
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    def prepare(self, data: bytes) -> Any:
        return _shared(data, _asgi_event)

    async def write(self, queued: deque[Any]) -> int:
        count = 0
        while queued:
            await self._send(queued.popleft())
            count += 1
        return count

    def write_nowait(self, queued: deque[Any]) -> int | None:
        return None  # an ASGI send is a coroutine

    async def ready(self) -> None:
        return  # each ASGI send waits for the transport itself (uvicorn)

    def abandon(self) -> None:
        _abort_if_stuck(self._transport)

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
        _abort_if_stuck(self._transport)


class RawFrameWriter:
    """Pre-encoded frames written to uvicorn's transport, honouring its flow control."""

    __slots__ = ("_protocol", "_send")
    direct = True

    def __init__(self, send: Send, protocol: Any) -> None:
        self._send = send
        self._protocol = protocol

    def prepare(self, data: bytes) -> Any:
        return _shared(data, encode_frame)

    async def write(self, queued: deque[Any]) -> int:
        if not self._protocol.writable.is_set():
            await self._protocol.writable.wait()  # the kernel buffer is full: backpressure
        return self._write(queued)

    def write_nowait(self, queued: deque[Any]) -> int | None:
        return self._write(queued) if self._protocol.writable.is_set() else None

    async def ready(self) -> None:
        if not self._protocol.writable.is_set():
            await self._protocol.writable.wait()

    def abandon(self) -> None:
        _abort_if_stuck(self._protocol.transport)

    def buffered(self) -> int:
        return int(self._protocol.transport.get_write_buffer_size())

    def _write(self, queued: deque[Any]) -> int:
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        count = len(queued)
        if count:
            payload = queued.popleft() if count == 1 else b"".join(queued)
            queued.clear()
            protocol.transport.write(payload)  # every frame queued this tick: one write
        return count

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
        _abort_if_stuck(self._protocol.transport)


CLOSE_GRACE_SECONDS = 2.0
"""A closed connection whose socket still buffers data this long after the close is aborted:
its peer does not read (the close frame waits behind that data), and a graceful close would
wait for it forever."""


def _abort_if_stuck(transport: Any) -> None:
    if transport is not None and transport.get_write_buffer_size():
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_GRACE_SECONDS, _abort_if_still_buffered, transport)


def _abort_if_still_buffered(transport: Any) -> None:
    if transport.get_write_buffer_size():
        transport.abort()


def writer_for(send: Send) -> Writer:
    """The fastest writer that is correct for this connection."""
    protocol: Any = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return AsgiWriter(send)
    if not protocol.conn.extensions:
        return RawFrameWriter(send, protocol)
    return AsgiWriter(send, protocol.transport)


def _asgi_event(data: bytes) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": data}


_cache: dict[Any, tuple[bytes, Any]] = {}


def _shared(data: bytes, build: Any) -> Any:
    """``build(data)``, reused while the same bytes object is handed out again (a broadcast)."""
    last = _cache.get(build)
    if last is None or last[0] is not data:
        last = _cache[build] = (data, build(data))
    return last[1]
