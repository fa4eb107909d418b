"""A TCP proxy the fault suite owns: put it between a gateway node and a service, then cut it.

``partition()`` aborts every piped connection (both sides see a reset) and refuses new ones;
with ``blackhole=True`` it keeps them open but forwards nothing and opens nothing upstream, as
a dropped network path does. ``heal()`` pipes again. ``drop()`` aborts the current connections
once and keeps listening (a reconnect storm). Runs on the suite's event loop; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class _Side(asyncio.Protocol):
    """One end of a piped connection; what it receives goes to its peer."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # received before the peer exists

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        if self.proxy.blackholed:
            return  # the path drops packets
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the peer

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.proxy.transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:  # the peer sends faster than this socket drains
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Downstream(_Side):
    """The side a gateway node (or a client) connected to; opens the upstream connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.proxy.blackholed:
            return  # accepted by the kernel, never answered
        task = asyncio.get_running_loop().create_task(self._connect_upstream())
        self.proxy.connecting.add(task)
        task.add_done_callback(self.proxy.connecting.discard)

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
        assert upstream.transport is not None
        if self.transport.is_closing():
            upstream.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        for side, peer in ((self, upstream), (upstream, self)):
            assert peer.transport is not None
            for data in side.early:
                peer.transport.write(data)
            side.early.clear()


class TcpProxy:
    """Listens on 127.0.0.1:``port`` (a free one by default) and pipes to the target."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self.blackholed = False
        self.transports: set[asyncio.Transport] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Downstream(self),
            "127.0.0.1",
            self.port,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def drop(self) -> int:
        """Abort every piped connection, both sides; keep listening. Returns how many."""
        for task in list(self.connecting):
            task.cancel()
        await asyncio.gather(*self.connecting, return_exceptions=True)
        transports = list(self.transports)
        for transport in transports:
            transport.abort()
        return len(transports)

    async def partition(self, *, blackhole: bool = False) -> None:
        """Cut the path: refuse (abort, stop listening) or, with ``blackhole``, go silent."""
        if blackhole:
            self.blackholed = True
            return
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop()
        if server is not None:
            await server.wait_closed()

    async def heal(self) -> None:
        """Pipe again. Connections held open by a blackhole are aborted (their bytes are gone)."""
        if self.blackholed:
            self.blackholed = False
            await self.drop()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.partition()
