"""A TCP proxy for tests: put it between the gateway and a service, then cut the service off.

``stop()`` closes the listener and aborts every piped connection (both sides see the connection
drop, as when the service crashes); until ``start()`` listens again on the same port, new
connections are refused. ``stall()`` keeps every connection open and pipes nothing (the service
was stopped with SIGSTOP) until ``resume()``. Runs on the test's event loop; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class _Side(asyncio.Protocol):
    """One end of a piped connection; what it receives is written to its peer."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # received before the upstream connection exists

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._transports.add(transport)
        if self.proxy.stalled:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the peer

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.proxy._transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:  # our peer is faster than our socket: slow it down
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.proxy.stalled:
            return
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Downstream(_Side):
    """The side a client (a gateway node) connected to; opens the upstream connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._connect_upstream())
        self.proxy._connecting.add(task)
        task.add_done_callback(self.proxy._connecting.discard)

    async def _connect_upstream(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: _Side(self.proxy), self.proxy.target_host, self.proxy.target_port
            )
        except OSError:
            self.transport.abort()
            return
        if self.transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None
        for side, peer in ((self, upstream), (upstream, self)):
            for data in side.early:
                peer.transport.write(data)  # type: ignore[union-attr]
            side.early.clear()


class TcpProxy:
    """Listens on 127.0.0.1:``port`` (a free one by default) and pipes to the target."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self.connections_accepted = 0
        self.stalled = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        """Stop piping, connections kept open (a service stopped with SIGSTOP): nothing is
        read from either side until ``resume``."""
        self.stalled = True
        for transport in self._transports:
            transport.pause_reading()

    def resume(self) -> None:
        self.stalled = False
        for transport in self._transports:
            transport.resume_reading()

    async def stop(self) -> None:
        """Stop listening and abort every piped connection, both sides."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        for transport in list(self._transports):
            transport.abort()
        await server.wait_closed()

    def _accept(self) -> _Downstream:
        self.connections_accepted += 1
        return _Downstream(self)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
