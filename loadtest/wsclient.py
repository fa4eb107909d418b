"""A lean WebSocket client: websockets' sans-I/O ClientProtocol on an asyncio Protocol.

The load generator must cost less per message than the server it measures, so frames are
handled in ``data_received`` callbacks (no task switch or future per message) and payloads
go straight to a handler. permessage-deflate (RFC 7692) is offered only when asked for
(``deflate=True``, the kit's ``--deflate``), with websockets' default client offer
(``client_max_window_bits``, as browsers send it): compression is a measured choice (DESIGN.md
§10), and a server that does not negotiate it sends plain frames. Byte counts are taken at the
TCP level, so they are what crossed the wire, after compression.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class Handler(Protocol):
    """What a WsConnection reports to its owner."""

    def message_received(self, data: bytes) -> None: ...

    def connection_lost(self, code: int | None, expected: bool) -> None: ...


class WsConnection(asyncio.Protocol):
    """One client WebSocket. Counts the bytes it moves at the TCP level."""

    def __init__(self, url: str, handler: Handler, *, deflate: bool = False) -> None:
        extensions = enable_client_permessage_deflate(None) if deflate else None
        self.protocol = ClientProtocol(
            parse_uri(url), extensions=extensions, max_size=MAX_MESSAGE_BYTES
        )
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.bytes_in = 0
        self.bytes_out = 0
        self.closing = False
        self._request = self.protocol.connect()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.protocol.send_request(self._request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.protocol.receive_data(data)
        self._dispatch()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._dispatch()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
            return
        self.handler.connection_lost(self.protocol.close_code, self.closing)

    @property
    def deflate(self) -> bool:
        """Whether the server accepted permessage-deflate on this connection."""
        return bool(self.protocol.extensions)

    # -- sending ----------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_binary(data)
        self._flush()

    def close(self) -> None:
        """Start a clean close (1000); connection_lost follows."""
        self.closing = True
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- internals ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    self.handler.message_received(bytes(event.data))
            elif isinstance(event, Response) and not self.opened.done():
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.bytes_out += len(chunk)
                transport.write(chunk)
            elif not transport.is_closing():
                transport.write_eof() if transport.can_write_eof() else transport.close()
        if self.protocol.close_expected() and not transport.is_closing():
            transport.close()


async def open_connection(
    url: str, handler: Handler, *, timeout: float, deflate: bool = False
) -> WsConnection:
    """Connect and complete the opening handshake; raises OSError or websockets errors."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    connection: WsConnection | None = None

    def factory() -> WsConnection:
        nonlocal connection
        connection = WsConnection(url, handler, deflate=deflate)
        return connection

    make: Callable[[], WsConnection] = factory
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(make, uri.host, uri.port)
            assert connection is not None
            await connection.opened
    except BaseException:
        if connection is not None:
            connection.abort()
        raise
    return connection
