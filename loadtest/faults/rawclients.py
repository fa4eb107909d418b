"""Clients that do not read: the WebSocket upgrade and sync step 1 on a raw socket, then silence.

A non-reader never calls ``recv`` again (its receive buffer is made small, so the server's
writes back up at once); a slow reader reads ``SLOW_READ_BYTES`` every ``SLOW_READ_SECONDS``.
Whether the gateway closed one is read from the gateway's side (psutil: its socket to this
client is no longer ESTABLISHED), since the client itself does not read.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from pycrdt import Doc
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.uri import parse_uri

from wedsync_protocol import codec
from wedsync_protocol.messages import SyncStep1, SyncStep2, SyncUpdate

RECEIVE_BUFFER_BYTES = 4096
SLOW_READ_BYTES = 512
SLOW_READ_SECONDS = 0.2
HANDSHAKE_TIMEOUT = 10.0


@dataclass
class RawClient:
    """One raw WebSocket client of ``url`` (``ws://127.0.0.1:PORT/ws/<room>``)."""

    url: str
    sock: socket.socket | None = None
    local_port: int = 0
    protocol: ClientProtocol | None = None

    async def open(self) -> None:
        """Upgrade, read the 101, send sync step 1 (proto/spec.md §3); then stop reading."""
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.url)
        protocol = self.protocol = ClientProtocol(uri)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.setblocking(False)
        self.sock = sock
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await loop.sock_connect(sock, (uri.host, uri.port))
            self.local_port = sock.getsockname()[1]
            protocol.send_request(protocol.connect())
            await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
            while not any(isinstance(e, Response) for e in protocol.events_received()):
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectionError("closed during the WebSocket handshake")
                protocol.receive_data(data)
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        protocol.send_binary(codec.encode(SyncStep1(Doc().get_state())))
        await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))

    async def read_slowly(self) -> None:
        """Read a little, now and then, until the server closes the connection."""
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                if not await loop.sock_recv(self.sock, SLOW_READ_BYTES):
                    return
            except OSError:
                return
            await asyncio.sleep(SLOW_READ_SECONDS)  # the slowness is the point

    async def read_into(self, doc: Doc[Any], done: Callable[[Doc[Any]], bool]) -> list[Frame]:
        """Start reading at last: apply every document update received to ``doc`` until
        ``done(doc)``; return the other frames received (a close frame among them)."""
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        assert self.protocol is not None
        others: list[Frame] = []
        while not done(doc):
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionError(f"closed by the server; frames other than updates: {others}")
            self.protocol.receive_data(data)
            for frame in self.protocol.events_received():
                assert isinstance(frame, Frame)
                message = codec.decode_server_message(bytes(frame.data)) if frame.data else None
                if isinstance(message, SyncUpdate | SyncStep2):
                    doc.apply_update(message.update)
                else:
                    others.append(frame)
        return others

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def still_open(pid: int, clients: list[RawClient]) -> list[RawClient]:
    """The clients whose connection the gateway process ``pid`` still holds ESTABLISHED."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []
    established = {
        c.raddr.port for c in connections if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }
    return [c for c in clients if c.local_port in established]
