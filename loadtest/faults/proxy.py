"""A TCP proxy the fault suite owns: put it between a gateway node and a service, then cut it.

``partition()`` aborts every piped connection (both sides see a reset) and refuses new ones;
with ``blackhole=True`` it keeps them open but forwards nothing and opens nothing upstream, as
a dropped network path does. ``heal()`` pipes again. ``drop()`` aborts the current connections
once and keeps listening (a reconnect storm). Every proxy runs on one event loop in a thread of
its own (``_proxy_loop``); the methods may be awaited from any loop. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


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
        assert self.transport is not None
        if self.proxy.refusing:  # accepted as the proxy stopped listening: cut it too
            self.transport.abort()
            return
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
        self.refusing = False
        self.transports: set[asyncio.Transport] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        await _on_proxy_loop(self._start())

    async def _start(self) -> None:
        self.refusing = False
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(self._accept(listener))

    async def _accept(self, listener: socket.socket) -> None:
        """Accept and pipe until cancelled. Its own loop, not ``loop.create_server``: a server
        closed while an accepted socket waits for its transport leaks that socket, open (the
        transport's creation fails on the closed server), and a partition must cut it too."""
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            if self.refusing:
                _reset(conn)
                continue
            await loop.connect_accepted_socket(lambda: _Downstream(self), conn)

    async def drop(self) -> int:
        """Abort every piped connection, both sides; keep listening. Returns how many."""
        return await _on_proxy_loop(self._drop())

    async def _drop(self) -> int:
        for task in list(self.connecting):
            task.cancel()
        await asyncio.gather(*self.connecting, return_exceptions=True)
        transports = list(self.transports)
        for transport in transports:
            transport.abort()
        return len(transports)

    async def partition(self, *, blackhole: bool = False) -> None:
        """Cut the path: refuse (abort, stop listening) or, with ``blackhole``, go silent."""
        await _on_proxy_loop(self._partition(blackhole))

    async def _partition(self, blackhole: bool) -> None:
        if blackhole:
            self.blackholed = True
            return
        self.refusing = True
        listener, self._listener = self._listener, None
        accepting, self._accepting = self._accepting, None
        if accepting is not None:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
        if listener is not None:
            listener.close()  # connections still in its backlog are reset by the kernel
        await self._drop()

    async def heal(self) -> None:
        """Pipe again. Connections held open by a blackhole are aborted (their bytes are gone)."""
        await _on_proxy_loop(self._heal())

    async def _heal(self) -> None:
        if self.blackholed:
            self.blackholed = False
            await self._drop()
        await self._start()

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


def _reset(conn: socket.socket) -> None:
    """Close an accepted socket with a reset (SO_LINGER 0), as an aborted path does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


_loop: asyncio.AbstractEventLoop | None = None


def _proxy_loop() -> asyncio.AbstractEventLoop:
    """The event loop every proxy runs on, in a thread of its own: the suite's clients keep the
    main loop busy (100 writers decoding each other's edits), and a proxy that waited behind
    them would look to the gateway like a Redis or Postgres that stalls."""
    global _loop
    if _loop is None:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="fault-proxies", daemon=True).start()
        _loop = loop
    return _loop


async def _on_proxy_loop(job: Coroutine[Any, Any, T]) -> T:
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job, _proxy_loop()))
