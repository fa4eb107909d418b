"""``/mux``: many weddings over one WebSocket, in the framing of ``@hocuspocus/provider`` 4.x.

Each document on the socket is one member of its room exactly as a ``/ws`` client is: its own
``Session`` (grant, features, sequence numbers, client-id claims) joined through ``Node.join``,
its messages judged by ``Node.receive`` — the guard, ownership and relay, role and schema
enforcement with compensation, durability and audit are those of ``/ws``, not a copy. The
document is the session's Outlet (``MuxDocument``): it prefixes what the room sends with the
document's name and turns the extension messages into what the provider understands (an ACK
becomes one sync-status per acknowledged message, proto/spec.md §10.4).

What is per socket: one reader, one bounded outbox (``ConnectionDriver``, not collapsing: a
full outbox closes the socket with 4001), one message and byte budget (paced, then 4429), the
document limit. What is per document: the token and grant (a refusal, an expiry or a
revocation closes that document only, with a permission-denied message), and a short queue of
messages that wait while the document joins its room or reads the store, so that one document
loading does not hold up the others.

Every other error closes the socket with its close code, as it closes a ``/ws`` client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.types import Receive, Scope, Send

from gateway.adapters.uvicorn_ws import forget_handshake
from gateway.adapters.websocket import writer_for
from gateway.connection import NORMAL_CLOSURE, ConnectionDriver, close_for, declared_platform
from gateway.core.limits import TokenBucket
from gateway.core.session import Session
from gateway.errors import (
    Forbidden,
    GatewayError,
    HandshakeTimeout,
    InvalidState,
    MessageTooBig,
    Overloaded,
    ProtocolError,
    RateLimited,
    Unauthorized,
    WireProtocolError,
    as_gateway_error,
)
from gateway.gatekeeper import Gatekeeper, Watch
from gateway.node import Node, RoomSlot
from gateway.types import RoomId, parse_room_id
from wedsync_protocol import codec, mux
from wedsync_protocol.messages import (
    ALL_FEATURES,
    Feature,
    Hello,
    Message,
    MessageType,
    Reject,
    Resume,
)

log = structlog.get_logger(__name__)

YIELD_SECONDS = 0.002
"""A socket's reader gives the event loop a turn at least this often while frames keep coming:
one socket's burst (50 weddings opened at once) holds the loop up for about this long, not for
the whole burst."""
SERVER_FEATURES = Feature.ACKS | Feature.REJECTS
"""What every document's session asks the room for, whatever the client said: ACKs become the
provider's sync-status messages and REJECTs their ``applied: false`` (§10.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MuxLimits:
    """The per-socket bounds of ``/mux`` (GATEWAY_MUX_*, README 'Configuration')."""

    max_documents: int = 100
    messages_per_second: float = 1000.0
    message_burst: int = 2000
    bytes_per_second: float = 8 << 20
    byte_burst: int = 16 << 20
    rate_pacing_seconds: float = 10.0
    rate_window_seconds: float = 60.0
    outbox_messages: int = 4096
    outbox_bytes: int = 16 << 20
    document_queue: int = 64
    ping_seconds: float = 10.0


class SocketBudget:
    """One message and byte rate for the whole socket, paced like a ``/ws`` client's
    (``Session.pause``): over the rate, reading stops for the debt; held back more than
    ``rate_pacing_seconds`` per window, RateLimited (4429)."""

    __slots__ = ("_owed", "bytes", "messages", "pacing")

    def __init__(self, limits: MuxLimits, now: float) -> None:
        self.messages = TokenBucket(limits.messages_per_second, limits.message_burst, now=now)
        self.bytes = TokenBucket(limits.bytes_per_second, limits.byte_burst, now=now)
        self.pacing = TokenBucket(
            limits.rate_pacing_seconds / limits.rate_window_seconds,
            limits.rate_pacing_seconds,
            now=now,
        )
        self._owed = 0.0

    def spend(self, size: int, now: float) -> None:
        self._owed = max(self.messages.owe(1, now), self.bytes.owe(size, now))

    def pause(self, now: float) -> float:
        owed, self._owed = self._owed, 0.0
        if not owed:
            return 0.0
        if not self.pacing.take(owed, now):
            raise RateLimited(
                f"over {self.messages.rate:g} messages/s or {self.bytes.rate:g} bytes/s on this"
                f" socket for too long: held back more than {self.pacing.burst:g} s"
            )
        return owed


_framed: tuple[bytes, bytes, bytes] = (b"", b"", b"")
"""The last message framed for a document (data, prefix, prefix + data): a broadcast reaches
every ``/mux`` member of a room as the same bytes, so the writer encodes its frame once
(gateway/adapters/websocket.py ``_shared``), as for ``/ws`` members."""


def _framed_set(value: tuple[bytes, bytes, bytes]) -> None:
    global _framed
    _framed = value


class MuxDocument:
    """One document of a ``/mux`` socket: the Outlet of its session in its room."""

    __slots__ = (
        "acked",
        "client_features",
        "closed",
        "hello",
        "idle",
        "name",
        "prefix",
        "queue",
        "refused",
        "room",
        "session",
        "slot",
        "socket",
        "task",
        "watch",
    )

    def __init__(self, socket: MuxSocket, name: str, room: RoomId, session: Session) -> None:
        self.socket = socket
        self.name = name
        self.room = room
        self.prefix = mux.prefix(name)
        self.session = session
        self.slot: RoomSlot | None = None
        self.watch: Watch | None = None
        self.queue: deque[mux.MuxMessage] | None = None
        """Messages waiting while the document joins or reads the store (``task`` runs); made
        when first needed, as ``idle`` and ``refused`` (a few hundred bytes each, per document)."""
        self.idle: asyncio.Event | None = None
        """Set when the queue has room again (the reader waits on it when it was full)."""
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.hello = False
        """The client said HELLO for this document: it is sent the extension messages it asked
        for, wrapped in stateless messages (§10.5)."""
        self.client_features = Feature(0)
        self.acked = 0
        """The sync messages answered with a sync-status so far."""
        self.refused: set[int] | None = None
        """Sequence numbers with a REJECT: their sync-status says ``applied: false``."""

    # -- Outlet ------------------------------------------------------------------------------

    def send_nowait(self, data: bytes) -> None:
        """What the room sends to this member, in the document's framing."""
        if self.closed:
            return
        driver = self.socket.driver
        kind = data[0]
        if kind < MessageType.HELLO:  # sync, awareness: the body is the same on /mux
            framed = _framed
            if framed[0] is not data or framed[1] != self.prefix:
                framed = (data, self.prefix, self.prefix + data)
                _framed_set(framed)
            driver.send_nowait(framed[2])  # one bytes object for every /mux member: one frame
            return
        message = codec.decode_server_message(data)
        if kind == MessageType.ACK:
            seq = getattr(message, "seq", 0)
            refused = self.refused
            for n in range(self.acked + 1, seq + 1):
                applied = not refused or n not in refused
                if not applied:
                    assert refused is not None
                    refused.discard(n)
                driver.send_nowait(mux.encode_sync_status(self.name, applied))
            self.acked = max(self.acked, seq)
            if Feature.ACKS in self.client_features:
                self._send_extension(data)
        elif kind == MessageType.REJECT:
            assert isinstance(message, Reject)
            if message.seq > self.acked:
                if self.refused is None:
                    self.refused = set()
                self.refused.add(message.seq)
            if Feature.REJECTS in self.client_features:
                self._send_extension(data)
        elif kind == MessageType.HELLO:
            assert isinstance(message, Hello)
            accepted = Hello(message.version, message.features & self.client_features)
            self._send_extension(codec.encode(accepted))
        elif kind in (MessageType.DRAIN, MessageType.STATUS):
            if Feature.ACKS in self.client_features:  # as on /ws (spec §4)
                self._send_extension(data)
        else:  # CATCH_UP, POSITION: only to a client that asked for RESUME
            self._send_extension(data)

    def _send_extension(self, data: bytes) -> None:
        if self.hello:
            payload = mux.wrap_extension(data)
            self.socket.driver.send_nowait(mux.encode_stateless(self.name, payload))

    def close_nowait(self, error: GatewayError) -> None:
        """A grant that ends (expiry, revocation) closes this document; anything else the room
        closes a member for closes the socket, as on ``/ws``."""
        if per_document(error):
            self.socket.close_document(self, error)
        else:
            self.socket.driver.close_nowait(error)


def per_document(error: GatewayError) -> bool:
    """Whether ``error`` closes one document, not the socket: a token's verdict, or a node too
    busy to open another wedding (1013: the documents already open stay, as on ``/ws``)."""
    return isinstance(error, Unauthorized | Forbidden | Overloaded)


class MuxSocket:
    """One ``/mux`` WebSocket: its documents, budget and outbox."""

    def __init__(
        self,
        endpoint: MuxEndpoint,
        node: Node,
        gatekeeper: Gatekeeper,
        driver: ConnectionDriver,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self.endpoint = endpoint
        self.limits = endpoint.limits
        self.node = node
        self.gatekeeper = gatekeeper
        self.driver = driver
        self.tasks = tasks
        self.documents: dict[str, MuxDocument] = {}
        self.subject: str | None = None
        """The user of the socket: the subject of the first document's token. A token of
        another subject is refused (one socket carries one user)."""
        self.opened = self.refused = self.ignored = 0
        self.budget = SocketBudget(self.limits, time.monotonic())

    # -- documents ---------------------------------------------------------------------------

    def open_document(self, name: str, token: str) -> None:
        """The first token for ``name``: admit it (or refuse it, for this document only) and
        join its room in the document's task."""
        room = parse_room_id(name)
        if room is None:
            self.deny(name, "not a wedding id: document names match ^[A-Za-z0-9_-]{1,64}$")
            return
        if len(self.documents) >= self.limits.max_documents:
            self.deny(
                name,
                f"this socket has {len(self.documents)} documents open, the limit"
                " (GATEWAY_MUX_MAX_DOCUMENTS); close one first",
            )
            return
        try:
            grant = self.gatekeeper.grant(token or None, room)
        except (Unauthorized, Forbidden) as exc:
            self.deny(name, str(exc))
            return
        if self.subject is None:
            self.subject = grant.subject
        elif grant.subject != self.subject:
            self.deny(name, f"this socket carries user {self.subject!r}; open another socket")
            return
        session = Session(max_message_bytes=self.endpoint.max_message_bytes, now=time.monotonic())
        session.grant = grant
        session.accept(SERVER_FEATURES)
        document = self.documents[name] = MuxDocument(self, name, room, session)
        document.watch = self.gatekeeper.watch(grant, document.close_nowait)
        self.opened += 1
        scope = mux.SCOPE_READ_WRITE if grant.rights.writes else mux.SCOPE_READONLY
        self.driver.send_nowait(mux.encode_authenticated(name, scope))
        log.info("mux_document_opened", room=room, subject=grant.subject, role=grant.role.value)
        self._start(document, self._join(document))

    async def _join(self, document: MuxDocument) -> None:
        # closed while it loads: ``_run`` leaves once it has joined
        document.slot = await self.node.join(document.room, document.session, document)

    def refresh(self, document: MuxDocument, token: str) -> None:
        """A new token for an open document: its grant applies at once (a role change) or the
        document closes (a token that does not cover it, or names another user)."""
        grant = self.gatekeeper.grant(token or None, document.room)  # raises: this doc closes
        if grant.subject != document.session.grant.subject:
            raise Unauthorized("a refreshed token must name the same subject")
        document.session.grant = grant
        document.watch = self.gatekeeper.watch(grant, document.close_nowait, document.watch)
        scope = mux.SCOPE_READ_WRITE if grant.rights.writes else mux.SCOPE_READONLY
        self.driver.send_nowait(mux.encode_authenticated(document.name, scope))
        log.info("mux_token_refreshed", room=document.room, role=grant.role.value)

    def deny(self, name: str, reason: str) -> None:
        self.refused += 1
        log.info("mux_document_refused", document=name[:80], reason=reason)
        self.driver.send_nowait(mux.encode_permission_denied(name, reason[:500]))

    def close_document(
        self, document: MuxDocument, error: GatewayError | None, *, tell: bool = True
    ) -> None:
        """Close one document: the others stay open. ``error`` None: the client closed it."""
        if document.closed:
            return
        document.closed = True
        if self.documents.get(document.name) is document:
            del self.documents[document.name]
        if document.queue:
            document.queue.clear()
        if document.idle is not None:
            document.idle.set()  # a reader waiting for room in its queue reads on
        if document.watch is not None:
            document.watch.cancel()
            document.watch = None
        if error is not None and tell:
            reason = str(error)[:500]
            self.driver.send_nowait(mux.encode_permission_denied(document.name, reason))
            # the close's reason starts with the §6 code: an SDK reconnects the document by it
            closing = f"{error.close_code} {reason}"
            self.driver.send_nowait(mux.encode_close(document.name, closing))
        if document.task is None and document.slot is not None:
            # not from inside the fan-out's loop over the room's effects: at the next tick
            slot = document.slot
            asyncio.get_running_loop().call_soon(self.node.leave, slot, document.session)
        log.info(
            "mux_document_closed",
            room=document.room,
            by="gateway" if error else "client",
            reason=str(error) if error else "",
        )

    def close_all(self) -> None:
        """The socket ended: every document leaves its room."""
        for document in list(self.documents.values()):
            self.close_document(document, None, tell=False)  # leaves its room
            if document.task is not None:
                document.task.cancel()  # its end leaves the room

    # -- messages ----------------------------------------------------------------------------

    async def dispatch(self, frame: mux.MuxFrame) -> None:
        """Route one client message to its document; waits only when that document's queue is
        full (then the socket is read no further until it has room: backpressure)."""
        name, message = frame.document, frame.message
        document = self.documents.get(name)
        if document is None:
            if isinstance(message, mux.MuxToken):
                self.open_document(name, message.token)
            else:
                self.ignored += 1  # a document never opened, refused or closed: dropped
            return
        if document.task is None:
            self._handle_now(document, message)
            return
        queue = document.queue
        if queue is None:
            queue = document.queue = deque()
        while len(queue) >= self.limits.document_queue and not document.closed:
            if document.idle is None:
                document.idle = asyncio.Event()
            document.idle.clear()
            await document.idle.wait()
        if document.closed:
            return
        if document.task is None:  # the queue ran dry while we waited: nothing is before it
            self._handle_now(document, message)
        else:
            queue.append(message)

    def _handle_now(self, document: MuxDocument, message: mux.MuxMessage) -> None:
        try:
            pending = self._handle(document, message)
        except GatewayError as exc:
            self._failed(document, exc)
            return
        if pending is not None:
            self._start(document, pending)

    def _handle(self, document: MuxDocument, message: mux.MuxMessage) -> Any:
        """Hand one message to the node; returns what to await before the document's next."""
        if isinstance(message, mux.MuxToken):
            self.refresh(document, message.token)
            return None
        if isinstance(message, mux.CloseDocument):
            self.close_document(document, None)
            return None
        if isinstance(message, mux.Stateless):
            inner = self._extension(document, message.payload)
            if inner is None:
                return None  # an application's stateless message: no hook handles it
            message = inner
        slot = document.slot
        if slot is None or document.closed:
            raise InvalidState(f"a message reached document {document.name!r} before its room")
        document.session.last_receive = time.monotonic()
        return self.node.receive(slot, document.session, message)

    def _extension(self, document: MuxDocument, payload: str) -> Message | None:
        data = mux.unwrap_extension(payload)
        if data is None:
            return None
        message = codec.decode(data)
        if isinstance(message, Hello):
            document.hello = True
            document.client_features = message.features & ALL_FEATURES
            return Hello(message.version, message.features | SERVER_FEATURES)
        if isinstance(message, Resume):
            return message
        raise ProtocolError(f"{type(message).__name__} is not an extension a client sends on /mux")

    def _start(self, document: MuxDocument, first: Any) -> None:
        document.task = self.tasks.create_task(self._run(document, first))

    async def _run(self, document: MuxDocument, first: Any) -> None:
        """Await ``first``, then handle what queued meanwhile, in order; then the document is
        handled inline again."""
        try:
            await first
            while document.queue and not document.closed:
                message = document.queue.popleft()
                if document.idle is not None:
                    document.idle.set()
                pending = self._handle(document, message)
                if pending is not None:
                    await pending
        except GatewayError as exc:
            self._failed(document, exc)
        except WireProtocolError as exc:
            self.driver.close_nowait(as_gateway_error(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("mux_document_failed", room=document.room)
            self.driver.close_nowait(InvalidState(f"internal error: {type(exc).__name__}"))
        finally:
            document.task = None
            if document.idle is not None:
                document.idle.set()
            if document.closed and document.slot is not None:
                self.node.leave(document.slot, document.session)
                document.slot = None

    def _failed(self, document: MuxDocument, error: GatewayError) -> None:
        if per_document(error):
            self.close_document(document, error)
        else:
            self.driver.close_nowait(error)


@dataclass(frozen=True, slots=True)
class MuxStatistics:
    """What ``/metrics`` shows of ``/mux`` (gateway/metrics.py)."""

    sockets: int
    documents: int
    documents_refused: int
    messages_ignored: int


class MuxEndpoint:
    """ASGI endpoint for ``/mux`` (proto/spec.md §10)."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        limits: MuxLimits,
        client_drain_timeout: float = 30.0,
        handshake_timeout_seconds: float = 15.0,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.limits = limits
        self.client_drain_timeout = client_drain_timeout
        self.handshake_timeout_seconds = handshake_timeout_seconds
        self.sockets: set[MuxSocket] = set()
        self.refused = self.ignored = 0
        """Totals of the sockets that closed (``statistics`` adds the open ones')."""

    def statistics(self) -> MuxStatistics:
        return MuxStatistics(
            sockets=len(self.sockets),
            documents=sum(len(s.documents) for s in self.sockets),
            documents_refused=self.refused + sum(s.refused for s in self.sockets),
            messages_ignored=self.ignored + sum(s.ignored for s in self.sockets),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node: Node = scope["state"]["node"]
        gatekeeper: Gatekeeper = scope["state"]["gatekeeper"]
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        driver = ConnectionDriver(
            writer_for(send),
            queue_limit=self.limits.outbox_messages,
            outbox_bytes=self.limits.outbox_bytes,
            drain_timeout=self.client_drain_timeout,
            collapse=False,
        )
        started = time.monotonic()
        log.info("mux_opened", node=node.node_id)
        counts: dict[str, Any] = {"received": 0, "by": "client", "code": NORMAL_CLOSURE}
        socket: MuxSocket | None = None
        platform = declared_platform(scope)  # one socket counts once (gateway/telemetry.py)
        node.telemetry.joined(platform)
        try:
            async with asyncio.TaskGroup() as tg:
                driver.start(tg)
                socket = MuxSocket(self, node, gatekeeper, driver, tg)
                self.sockets.add(socket)
                pinger = tg.create_task(self._ping(driver))
                try:
                    counts["code"] = await self._read_loop(socket, receive, send, scope, counts)
                finally:
                    pinger.cancel()
                    socket.close_all()
                    self.sockets.discard(socket)
                    self.refused += socket.refused
                    self.ignored += socket.ignored
        finally:
            node.telemetry.left(platform)
        error = driver.error
        node.telemetry.closed(error.close_code if error else counts["code"])
        log.info(
            "mux_closed",
            code=error.close_code if error else counts["code"],
            by="gateway" if error else counts["by"],
            reason=str(error) if error else "",
            seconds=round(time.monotonic() - started, 3),
            received=counts["received"],
            sent=driver.sent,
            documents=socket.opened,
            refused=socket.refused,
            ignored=socket.ignored,
        )

    async def _ping(self, driver: ConnectionDriver) -> None:
        """The provider drops a socket that received nothing for 30 s (its
        ``messageReconnectTimeout``); WebSocket pings do not reach it: send its ping."""
        while True:
            await asyncio.sleep(self.limits.ping_seconds)
            driver.send_nowait(mux.PING)

    async def _read_loop(
        self,
        socket: MuxSocket,
        receive: Receive,
        send: Send,
        scope: Scope,
        counts: dict[str, Any],
    ) -> int:
        driver = socket.driver
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout_seconds
        admitted = False
        last_yield = time.monotonic()
        try:
            while True:
                if admitted:
                    event = await receive()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            event = await receive()
                    except TimeoutError:
                        raise HandshakeTimeout("no document opened before the deadline") from None
                if event["type"] == "websocket.disconnect":
                    driver.finish_nowait()
                    counts["by"] = event.get("by", "client")
                    return int(event.get("code", NORMAL_CLOSURE))
                data = event.get("bytes")
                if data is None:
                    raise ProtocolError("text frames are not part of the protocol")
                counts["received"] += 1
                if len(data) > self.max_message_bytes:
                    raise MessageTooBig(
                        f"message of {len(data)} bytes exceeds the limit of"
                        f" {self.max_message_bytes}"
                    )
                now = time.monotonic()
                socket.budget.spend(len(data), now)
                frame = mux.decode_client(data)
                if isinstance(frame, mux.MuxFrame):
                    await socket.dispatch(frame)
                    if not admitted and socket.documents:
                        admitted = True
                        forget_handshake(send, scope)
                if driver.error is not None:
                    return driver.error.close_code
                now = time.monotonic()
                pause = socket.budget.pause(now)
                if pause:
                    await asyncio.sleep(pause)
                    last_yield = time.monotonic()
                elif now - last_yield > YIELD_SECONDS:
                    # A provider that reconnects sends its token, step 1 and awareness for every
                    # wedding in one burst, which uvicorn hands over without suspending: let the
                    # loop run the other clients' work (and its lag probe, gateway/overload.py)
                    await asyncio.sleep(0)
                    last_yield = time.monotonic()
        except Exception as exc:
            return close_for(driver, exc, "mux_failed")
