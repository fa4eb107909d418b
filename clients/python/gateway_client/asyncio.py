"""Asyncio client for WedSync Gateway: connect, sync, typed edits, durable acks, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlencode

from pycrdt import Array, Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway_client.backoff import backoff
from gateway_client.sansio import ClientProtocol
from wedsync_protocol.close_codes import needs_new_token, reconnects
from wedsync_protocol.messages import Reject

POLICY_VIOLATION = 1008
"""What a client refused before the upgrade (HTTP 4xx) reports as its close code."""
CLOSE_TIMEOUT = 2.0
"""Seconds a closing client waits for the server's answer to its close frame."""


class GatewayClosed(Exception):
    """The server closed the connection with a code that means 'do not reconnect'."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server closed the connection with {code}: {reason}")
        self.code = code
        self.reason = reason


class GatewayClient:
    """One wedding document kept in sync with the gateway over a WebSocket.

    Use as an async context manager. Edits are local first; ``wait_durable()`` returns once the
    server has made them durable. The client reconnects with backoff and resends edits the
    server has not acknowledged.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        wedding_id: str,
        *,
        doc: Doc[Any] | None = None,
        acks: bool = True,
        reconnect: bool = True,
        delays: Iterator[float] | None = None,
        token: str | None = None,
        resume: bool = True,
        platform: str = "integration",
    ) -> None:
        """``platform``: declared on the URL (``?platform=``, proto/spec.md §1) for the
        operators' metrics: ``web``, ``pwa``, ``ios``, ``android`` or ``integration``."""
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        self.urls = [f"{base.rstrip('/')}/{wedding_id}" for base in bases]
        self.url = self.urls[0]
        """The URL of the current (or next) connection; reconnects rotate through ``urls``."""
        self._query = f"?{urlencode({'platform': platform})}" if platform else ""
        """Added to the URL when connecting: the declared platform (proto/spec.md §1)."""
        self.protocol = ClientProtocol(
            doc if doc is not None else Doc(), acks=acks, token=token, resume=resume
        )
        self.reconnect = reconnect
        self._delays = delays
        self._changed = asyncio.Event()
        self._online = asyncio.Event()
        self._online.set()
        self._ws: ClientConnection | None = None
        self._closed: GatewayClosed | None = None
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._pending_sends: list[bytes] = []
        self._wake_writer = asyncio.Event()
        self.connections = 0
        self.attempts = 0
        self.last_close: tuple[int, str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tasks.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._online.clear()  # leaving, not failing: close with 1000 (normal closure)
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(OSError):  # the connection was already going
                await ws.close()
        if self._task is not None:
            self._task.cancel()
        await self._stack.aclose()

    async def go_offline(self) -> None:
        """Drop the connection and stay offline (edits keep working locally)."""
        self._online.clear()
        if self._ws is not None:
            await self._ws.close()
        await self._wait(lambda: self._ws is None)

    @property
    def doc(self) -> Doc[Any]:
        """The wedding document (a new one after the server reset the wedding's history)."""
        return self.protocol.doc

    def go_online(self) -> None:
        """Reconnect after ``go_offline``."""
        self._online.set()

    def refresh_token(self, token: str) -> None:
        """Use ``token`` from now on: sent at once when connected (its role applies at once)
        and on every later connection."""
        messages = self.protocol.refresh_token(token)
        if messages and self._ws is not None:
            self._pending_sends.extend(messages)
            self._wake_writer.set()

    @property
    def rejected(self) -> list[Reject]:
        """REJECT messages received: changes the server refused and undid (proto §4.4)."""
        return self.protocol.rejected

    @property
    def acks_paused(self) -> bool:
        """The node said it cannot make edits durable now (STATUS, proto §4.7): edits are
        shared with everyone at once, and acknowledged once its store recovers."""
        return self.protocol.acks_paused

    async def wait_acks_paused(self, paused: bool = True) -> None:
        """Wait until the node says acks are paused (or, ``paused=False``, resumed)."""
        await self._wait(lambda: self.protocol.acks_paused is paused)

    async def wait_rejected(self, count: int = 1) -> list[Reject]:
        """Wait until ``count`` REJECT messages have arrived in all; returns them all."""
        await self._wait(lambda: len(self.protocol.rejected) >= count)
        return self.protocol.rejected

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_synced(self) -> None:
        """Wait until the initial sync with the server (this connection) has completed."""
        await self._wait(lambda: self.protocol.synced)

    async def wait_durable(self, version: int | None = None) -> None:
        """Wait until local edits up to ``version`` (default: all so far) are durable."""
        target = self.protocol.local_version if version is None else version
        await self._wait(lambda: self.protocol.durable_version >= target)

    async def _wait(self, condition: Any) -> None:
        while not condition():
            if self._closed is not None:
                raise self._closed
            self._changed.clear()
            await self._changed.wait()

    # -- typed edits (proto/schema.md) -------------------------------------------------------------

    @property
    def core_map(self) -> Map[Any]:
        return cast(Map[Any], self.doc.get("core", type=Map))

    @property
    def timeline_array(self) -> Array[Any]:
        return cast(Array[Any], self.doc.get("timeline", type=Array))

    def set_core(self, **fields: Any) -> int:
        """Set core fields in one transaction; returns the local version to wait for."""
        with self.doc.transaction():
            core = self.core_map
            for key, value in fields.items():
                core[key] = value
        self._flush()
        return self.protocol.local_version

    def create_wedding(
        self, partner_a: str, partner_b: str, status: str = "planning", **fields: Any
    ) -> int:
        """Set the required core fields (and any others) in one update: a wedding's first
        update must set them all (proto/schema.md). Returns the local version to wait for."""
        return self.set_core(partner_a=partner_a, partner_b=partner_b, status=status, **fields)

    def add_timeline_entry(self, **fields: Any) -> str:
        """Append a timeline entry; returns its id."""
        entry_id = str(fields.pop("id", None) or uuid.uuid4().hex[:12])
        with self.doc.transaction():
            self.timeline_array.append(Map({"id": entry_id, **fields}))
        self._flush()
        return entry_id

    def update_timeline_entry(self, entry_id: str, **fields: Any) -> None:
        with self.doc.transaction():
            entry = self._entry(entry_id)
            for key, value in fields.items():
                entry[key] = value
        self._flush()

    def remove_timeline_entry(self, entry_id: str) -> None:
        with self.doc.transaction():
            timeline = self.timeline_array
            for index, entry in enumerate(timeline):
                if entry.get("id") == entry_id:
                    del timeline[index]
                    break
            else:
                raise KeyError(entry_id)
        self._flush()

    def _entry(self, entry_id: str) -> Map[Any]:
        for entry in self.timeline_array:
            if entry.get("id") == entry_id:
                return entry  # type: ignore[no-any-return]
        raise KeyError(entry_id)

    def core(self) -> dict[str, Any]:
        return self.core_map.to_py() or {}

    def timeline(self) -> list[dict[str, Any]]:
        return self.timeline_array.to_py() or []

    # -- I/O ---------------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Queue the messages of local edits for the writer (dropped while offline: the
        protocol resends unacknowledged edits on reconnect)."""
        messages = self.protocol.data_to_send()
        if messages and self._ws is not None:
            self._pending_sends.extend(messages)
            self._wake_writer.set()

    async def _run(self) -> None:
        delays = self._delays or backoff()
        while True:
            await self._online.wait()
            try:
                self.url = self.urls[self.attempts % len(self.urls)]
                self.attempts += 1
                async with connect(
                    self.url + self._query,
                    max_size=None,
                    compression=None,
                    close_timeout=CLOSE_TIMEOUT,
                ) as ws:
                    delays = self._delays or backoff()
                    await self._serve(ws)
                self._connection_lost(ws.close_code or 1006, ws.close_reason or "")
            except* ConnectionClosed as group:
                rcvd = _first(group, ConnectionClosed).rcvd
                self._connection_lost(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "")
            except* OSError as group:
                self._connection_lost(1006, str(_first(group, OSError)))
            except* InvalidHandshake as group:  # e.g. a node that closed during the upgrade
                refused = _first(group, InvalidHandshake)
                status = refused.response.status_code if isinstance(refused, InvalidStatus) else 0
                if 400 <= status < 500 and status != 429:  # refused for good (403: bad id)
                    self._closed = GatewayClosed(POLICY_VIOLATION, str(refused))
                self._connection_lost(1006, str(refused))
            if self._closed is None and not self.reconnect:
                code, reason = self.last_close or (1006, "")
                self._closed = GatewayClosed(code, reason or "connection lost; reconnect is off")
            if self._closed is not None:
                self._notify()
                return
            if self._online.is_set():
                await asyncio.sleep(next(delays))  # reconnect backoff, by design a delay

    def _connection_lost(self, code: int, reason: str) -> None:
        self._ws = None
        self.last_close = (code, reason)
        self.protocol.connection_lost()
        # proto/spec.md §6; after 4401 the same token fails again: ``refresh_token`` first
        if not reconnects(code) or needs_new_token(code):
            self._closed = GatewayClosed(code, reason)
        self._notify()

    async def _serve(self, ws: ClientConnection) -> None:
        self.connections += 1
        self._pending_sends = list(self.protocol.connection_made())
        self._wake_writer.set()
        self._ws = ws
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._write(ws))
            try:
                async for data in ws:
                    if isinstance(data, str):
                        continue
                    replies = self.protocol.receive_data(data)
                    self._pending_sends.extend(replies)
                    if replies:
                        self._wake_writer.set()
                    self._notify()
            finally:
                writer.cancel()

    async def _write(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                while self._pending_sends:
                    batch, self._pending_sends = self._pending_sends, []
                    for message in batch:
                        await ws.send(message)
        except ConnectionClosed:
            return  # the reader sees the same close and reports it

    def _notify(self) -> None:
        self._changed.set()


E = TypeVar("E", bound=BaseException)


def _first(group: BaseExceptionGroup[E], kind: type[E]) -> E:
    """The first exception of ``kind`` in a (possibly nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            return _first(cast(BaseExceptionGroup[E], exc), kind)
    raise LookupError(kind)
