"""ConnectionDriver: one client's WebSocket. Reads in the ASGI task; writes from a bounded outbox.

This is the one place where errors become close frames (proto/spec.md §6).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from typing import Any
from urllib.parse import parse_qs

import structlog
from starlette.types import Receive, Scope, Send

from gateway.adapters.uvicorn_ws import forget_handshake
from gateway.adapters.websocket import Writer, writer_for
from gateway.core.backlog import Backlog
from gateway.core.policy import Grant
from gateway.core.session import Session
from gateway.errors import (
    Forbidden,
    GatewayError,
    HandshakeTimeout,
    InvalidState,
    ProtocolError,
    ShuttingDown,
    SlowClient,
    Unauthorized,
    WireProtocolError,
    as_gateway_error,
)
from gateway.gatekeeper import Gatekeeper, Watch
from gateway.node import Node, RoomSlot
from gateway.telemetry import platform_of
from gateway.types import RoomId, parse_room_id
from wedsync_protocol import codec
from wedsync_protocol.messages import AUTH_PERMISSION_DENIED, AUTH_TOKEN, Auth, Message

log = structlog.get_logger(__name__)

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008  # sent before the upgrade: the server answers HTTP 403


class ConnectionDriver:
    """Drives one accepted WebSocket. Implements the node's Outlet."""

    __slots__ = (
        "_backlog",
        "_backlog_timer",
        "_error",
        "_finished",
        "_flush_scheduled",
        "_flushes",
        "_loop",
        "_out",
        "_queued_bytes",
        "_tasks",
        "_wake",
        "_writer",
        "_writer_task",
        "collapse",
        "drain_timeout",
        "outbox_bytes",
        "queue_limit",
        "sent",
    )

    def __init__(
        self,
        writer: Writer,
        *,
        queue_limit: int,
        outbox_bytes: int = 1 << 62,
        drain_timeout: float = 30.0,
        collapse: bool = True,
    ) -> None:
        """``collapse`` False: a full outbox closes the client (4001) instead of collapsing
        what follows into a Backlog, which reads y-websocket messages (``/mux`` frames are not)."""
        self._writer = writer
        self.collapse = collapse
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._flushes = _tick_flush(self._loop)
        self.queue_limit = queue_limit
        self.outbox_bytes = outbox_bytes
        """Bytes waiting for the client — queued here and in the transport — before it falls
        behind: what follows is collapsed into a Backlog (gateway/core/backlog.py), itself
        bounded by the same numbers; a client that stopped reading holds no more than this."""
        self.drain_timeout = drain_timeout
        """Seconds a client may stay behind (its Backlog not yet handed over) before it is
        closed as slow (4001)."""
        self._backlog: Backlog | None = None
        self._backlog_timer: asyncio.TimerHandle | None = None
        self._out: deque[Any] = deque()
        self._queued_bytes = 0
        self._wake: asyncio.Event | None = None  # made with the writer task, if one is needed
        self._tasks: asyncio.TaskGroup | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._error: GatewayError | None = None
        self._finished = False  # the peer is gone: write nothing more
        self.sent = 0

    def send_nowait(self, data: bytes) -> None:
        if self._error is not None or self._finished:
            return
        if self._backlog is None:
            waiting = self._queued_bytes + self._writer.buffered() + len(data)
            if len(self._out) < self.queue_limit and waiting <= self.outbox_bytes:
                self._queued_bytes += len(data)
                self._out.append(self._writer.prepare(data))
                if not self._writer.direct:
                    self._kick()
                elif not self._flush_scheduled:  # one write per client per loop tick
                    self._flush_scheduled = True
                    self._flushes.add(self)
                return
            self._fall_behind()
            if self._backlog is None:  # not collapsing: closed as slow
                return
        assert self._backlog is not None
        try:
            self._backlog.add(data)
        except SlowClient as exc:
            self.close_nowait(exc)

    def _fall_behind(self) -> None:
        """The outbox is full: collapse what follows until the client has read it."""
        if not self.collapse:
            self.close_nowait(
                SlowClient(
                    f"outbox full: {len(self._out)} messages, {self._queued_bytes} bytes"
                    " wait for the client"
                )
            )
            return
        self._backlog = Backlog(max_bytes=self.outbox_bytes, max_messages=self.queue_limit)
        self._backlog_timer = self._loop.call_later(self.drain_timeout, self._not_draining)
        self._kick()  # the writer task hands the backlog over once the outbox is written

    def _not_draining(self) -> None:
        if self._backlog is not None:
            seconds = f"{self.drain_timeout:g}"
            self.close_nowait(SlowClient(f"behind for {seconds} s: it does not read"))

    def _catch_up(self) -> None:
        """The client read what was queued: queue the backlog's collapsed messages instead."""
        backlog, self._backlog = self._backlog, None
        self._drop_backlog_timer()
        assert backlog is not None
        frames = backlog.frames()
        log.info("client_caught_up", collapsed=backlog.collapsed, into=len(frames))
        for data in frames:
            self._queued_bytes += len(data)
            self._out.append(self._writer.prepare(data))

    def _drop_backlog_timer(self) -> None:
        if self._backlog_timer is not None:
            self._backlog_timer.cancel()
            self._backlog_timer = None

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._finished or self._error is not None or not self._out:
            return
        try:
            written = self._writer.write_nowait(self._out)
        except OSError:
            self.finish_nowait()
            return
        if written is None:
            self._kick()  # backpressure: the writer task waits until writable
        else:
            self.sent += written
            self._queued_bytes = 0  # all of it is the transport's now

    def close_nowait(self, error: GatewayError) -> None:
        if self._error is not None:
            return
        self._error = error
        if not _delivers_first(error):
            self._out.clear()
            self._queued_bytes = 0
            self._backlog = None
            self._drop_backlog_timer()
            self._writer.abandon()  # a socket that still will not take its close is aborted
        self._kick()

    def finish_nowait(self) -> None:
        """The peer disconnected: stop writing."""
        self._finished = True
        self._backlog = None
        self._drop_backlog_timer()
        if self._wake is not None:
            self._wake.set()  # the writer task returns

    def start(self, tasks: asyncio.TaskGroup) -> None:
        """Give the driver the connection's task group, which will own its writer task."""
        self._tasks = tasks

    def _kick(self) -> None:
        """Wake the writer task, starting it on first need: a client whose frames are written
        directly (RawFrameWriter) has none until backpressure or a close needs one."""
        if self._wake is None:
            self._wake = asyncio.Event()  # ~1 KB an idle client with direct writes never needs
        self._wake.set()
        if self._writer_task is None and self._tasks is not None:
            self._writer_task = self._tasks.create_task(self.write_loop(self._wake))

    async def write_loop(self, wake: asyncio.Event) -> None:
        """Write queued messages in order; send the close frame once an error is set."""
        writer, out = self._writer, self._out
        try:
            while True:
                await wake.wait()
                wake.clear()
                while True:
                    while out and not self._finished:
                        self.sent += await writer.write(out)
                        if not out:
                            self._queued_bytes = 0
                    if self._finished or self._backlog is None:
                        break
                    await writer.ready()  # the socket took what was queued: catch up
                    if self._backlog is not None and not self._finished:
                        self._catch_up()
                if self._finished:
                    return
                if self._error is not None:
                    reason = str(self._error)[:120]  # a close reason is at most 123 bytes
                    await writer.close(self._error.close_code, reason)
                    return
        except OSError:
            return  # the peer went away while we wrote

    @property
    def error(self) -> GatewayError | None:
        return self._error

    @property
    def behind(self) -> bool:
        """The client does not read as fast as it is sent to: what follows is collapsed."""
        return self._backlog is not None


class _TickFlush:
    """The drivers with frames to write at the end of this loop tick, all flushed by one
    callback: a broadcast to N members schedules one callback, not N."""

    __slots__ = ("_drivers", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._drivers: list[ConnectionDriver] = []
        self._scheduled = False

    def add(self, driver: ConnectionDriver) -> None:
        self._drivers.append(driver)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        drivers, self._drivers = self._drivers, []
        for driver in drivers:
            try:
                driver._flush()
            except Exception:  # one connection's failure must not keep the others' frames
                log.exception("client_flush_failed")
                driver.finish_nowait()


_tick_flushes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TickFlush] = (
    weakref.WeakKeyDictionary()
)


def _tick_flush(loop: asyncio.AbstractEventLoop) -> _TickFlush:
    """The loop's _TickFlush (one per event loop: tests run one loop after another)."""
    flush = _tick_flushes.get(loop)
    if flush is None:
        flush = _tick_flushes[loop] = _TickFlush(loop)
    return flush


def _delivers_first(error: GatewayError) -> bool:
    """Whether what waits for the client is still written before the close: a draining node
    still delivers queued acks first, and a refused token its permission-denied message."""
    return isinstance(error, ShuttingDown | Unauthorized | Forbidden)


class WebSocketEndpoint:
    """ASGI endpoint for ``/ws/{wedding_id}`` (proto/spec.md §1)."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        client_queue_limit: int,
        client_outbox_bytes: int = 1 << 62,
        client_drain_timeout: float = 30.0,
        handshake_timeout_seconds: float = 15.0,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.client_queue_limit = client_queue_limit
        self.client_outbox_bytes = client_outbox_bytes
        self.client_drain_timeout = client_drain_timeout
        self.handshake_timeout_seconds = handshake_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node: Node = scope["state"]["node"]
        gatekeeper: Gatekeeper = scope["state"]["gatekeeper"]
        room_id = parse_room_id(scope["path_params"]["wedding_id"])
        await receive()  # websocket.connect
        if room_id is None:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        await send({"type": "websocket.accept"})
        driver = ConnectionDriver(
            writer_for(send),
            queue_limit=self.client_queue_limit,
            outbox_bytes=self.client_outbox_bytes,
            drain_timeout=self.client_drain_timeout,
        )
        session = Session(
            max_message_bytes=self.max_message_bytes, limits=node.limits, now=time.monotonic()
        )
        started = time.monotonic()
        structlog.contextvars.bind_contextvars(room=room_id, client=session.id)
        log.info("client_opened", node=node.node_id)
        counts: dict[str, Any] = {"received": 0, "by": "client", "reason": "", "paced": 0.0}
        auth = _Auth(gatekeeper, room_id, session, driver)
        async with asyncio.TaskGroup() as tg:
            driver.start(tg)
            try:
                code = await self._read_loop(
                    node, auth, session, driver, receive, send, counts, scope
                )
            finally:
                auth.end()
        error = driver.error
        closed_with = error.close_code if error else code
        node.telemetry.closed(closed_with)
        log.info(
            "client_closed",
            code=closed_with,
            by="gateway" if error else counts["by"],  # 1011 by the gateway is a bug (spec §6)
            reason=str(error) if error else counts["reason"],
            seconds=round(time.monotonic() - started, 3),
            received=counts["received"],
            sent=driver.sent,
            paced_seconds=round(counts["paced"], 3),
        )

    async def _read_loop(
        self,
        node: Node,
        auth: _Auth,
        session: Session,
        driver: ConnectionDriver,
        receive: Receive,
        send: Send,
        counts: dict[str, Any],
        scope: Scope,
    ) -> int:
        """Feed the client's messages to the node until it disconnects; return its close code."""
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout_seconds
        try:
            token = auth.gatekeeper.token_in(scope)  # ProtocolError (4500) on a repeated ?token=
            if token is None and not auth.gatekeeper.development:
                # the token comes in the first message (y-protocols auth, proto/spec.md §2.4)
                event = await _receive_before(receive, deadline, "no auth message")
                if event["type"] == "websocket.disconnect":
                    driver.finish_nowait()
                    return int(event.get("code", NORMAL_CLOSURE))
                counts["received"] += 1
                token = auth.token_from(_decoded(session, event.get("bytes")))
            auth.admit(token)
            slot: RoomSlot = await node.join(auth.room, session, driver)
            forget_handshake(send, scope)  # headers: the token above was their last use
        except GatewayError as exc:
            auth.deny(exc)
            return exc.close_code
        platform = declared_platform(scope)
        node.telemetry.joined(platform)
        try:
            while True:
                if session.live:
                    event = await receive()
                else:
                    event = await _receive_before(receive, deadline)
                if event["type"] == "websocket.disconnect":
                    driver.finish_nowait()
                    counts["by"] = event.get("by", "client")  # "gateway": a keepalive timeout
                    counts["reason"] = event.get("reason") or ""
                    return int(event.get("code", NORMAL_CLOSURE))
                data = event.get("bytes")
                if data is None:
                    raise ProtocolError("text frames are not part of the protocol")
                counts["received"] += 1
                # the one decode of a frame (size and rate limits first)
                message = session.receive_data(data, time.monotonic())
                if isinstance(message, Auth):
                    auth.refresh(auth.token_from(message))
                else:
                    reading = node.receive(slot, session, message)
                    if reading is not None:
                        await reading  # a RESUME reads the store's log (proto/spec.md §4.6)
                if driver.error is not None:
                    return driver.error.close_code
                pause = session.pause(time.monotonic())  # RateLimited if sustained
                if pause:
                    # Over its rate: read nothing more for now. uvicorn stops reading the socket
                    # while a message waits for us, so the client's sends block (backpressure).
                    counts["paced"] += pause
                    await asyncio.sleep(pause)
        except Exception as exc:
            return close_for(driver, exc, "client_failed")
        finally:
            node.leave(slot, session)
            node.telemetry.left(platform)


def close_for(driver: ConnectionDriver, exc: Exception, event: str) -> int:
    """Close a connection for what its read loop raised; return the close code. A gateway
    error and a protocol violation are the client's; anything else is a gateway bug, logged as
    ``event`` with its traceback (call this from the ``except`` block) and closed with 1011."""
    if isinstance(exc, GatewayError):
        error: GatewayError = exc
    elif isinstance(exc, WireProtocolError):
        error = as_gateway_error(exc)
    else:
        log.exception(event)
        error = InvalidState(f"internal error: {type(exc).__name__}")
    driver.close_nowait(error)
    return error.close_code


def declared_platform(scope: Scope) -> str:
    """The client's ``?platform=`` (proto/spec.md §1) as a metrics label: one of
    telemetry.PLATFORMS, else "unknown" (also when absent or repeated)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("platform", [])
    return platform_of(values[0] if len(values) == 1 else None)


async def _receive_before(receive: Receive, deadline: float, what: str = "no sync step 1") -> Any:
    """Receive the next event, or raise HandshakeTimeout once ``deadline`` (loop time) passes."""
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        raise HandshakeTimeout(f"{what} before the handshake deadline") from None


def _decoded(session: Session, data: bytes | None) -> Message:
    """The frame's message, decoded once under the session's size and rate limits."""
    if data is None:
        raise ProtocolError("text frames are not part of the protocol")
    return session.receive_data(data, time.monotonic())


class _Auth:
    """The connection's grant: admitted once, refreshed by later auth messages, watched for
    expiry and revocation by the gatekeeper until the connection ends."""

    __slots__ = ("_watch", "driver", "gatekeeper", "room", "session")

    def __init__(
        self, gatekeeper: Gatekeeper, room: RoomId, session: Session, driver: ConnectionDriver
    ) -> None:
        self.gatekeeper = gatekeeper
        self.room = room
        self.session = session
        self.driver = driver
        self._watch: Watch | None = None

    def token_from(self, message: Message) -> str:
        """The token of an auth message; else Unauthorized."""
        if not isinstance(message, Auth):
            raise Unauthorized("authenticate first: pass ?token= or send an auth message")
        if message.auth_type != AUTH_TOKEN:
            raise Unauthorized(f"an auth message of type {AUTH_TOKEN} (token) is expected")
        return message.text

    def admit(self, token: str | None) -> None:
        self._set(self.gatekeeper.grant(token, self.room))

    def refresh(self, token: str) -> None:
        """A new token mid-session: its grant (a new role, a later expiry) applies at once."""
        grant = self.gatekeeper.grant(token, self.room)
        if grant.subject != self.session.grant.subject:
            raise Unauthorized("a refreshed token must name the same subject")
        self._set(grant)
        log.info("token_refreshed", role=grant.role.value)

    def _set(self, grant: Grant) -> None:
        self.session.grant = grant
        self._watch = self.gatekeeper.watch(grant, self.driver.close_nowait, self._watch)

    def deny(self, error: GatewayError) -> None:
        """Tell a stock client why (y-protocols permission denied), then close."""
        if isinstance(error, Unauthorized | Forbidden):
            denied = Auth(AUTH_PERMISSION_DENIED, str(error)[:500])
            self.driver.send_nowait(codec.encode(denied))
        self.driver.close_nowait(error)

    def end(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
