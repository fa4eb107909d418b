"""Redis Bus: fan-out of room messages between nodes through Redis pub/sub (DESIGN.md §2, §5).

Wire format (proto/spec.md does not cover it: only gateway nodes speak it):

- One channel per room, ``{prefix}:room:{<room>}``. The braces are a Redis Cluster hash tag,
  so with ``sharded=True`` (SPUBLISH / SSUBSCRIBE) every message of a room maps to one slot.
- Each message is a msgpack array ``[1, origin node id, seq, payload, sent]``: envelope
  version 1, ``seq`` counts the publisher's messages for the room from 1, ``sent`` is the
  publisher's wall clock (Unix seconds, a float) when it queued the message: the receiver's
  publish → receive lag (``lag_observer``, gateway_bus_lag_seconds). ``sent`` is optional:
  four-element envelopes are read as before, and ``send_time=False`` (GATEWAY_BUS_SEND_TIME)
  keeps publishing them while nodes of a release that reads only those still run.

Guarantees (gateway/ports.py ``Bus``): at most once; ordered per room and publisher (one
publisher task sends in queue order); never echoed (messages whose origin is this node are
dropped on receipt). ``publish_nowait`` never blocks: messages wait in a bounded queue that the
bus's publisher task drains, pipelining every queued message in one round trip.

**Loss marker.** Whenever messages of a room may have been lost for a subscriber, its iterator
yields ``BusMessage(room, origin=NodeId(""), seq=0, payload=b"")`` (see ``is_loss_marker``)
*before* the next message. The subscriber must then resync the room from the Store (DESIGN.md
§6). A marker is yielded after:

- a gap or a jump back in one origin's ``seq`` for the room, or an envelope this node cannot
  read (an unknown version during a rolling deploy);
- the node's pub/sub connection was lost and re-established (every subscribed room gets one,
  once its subscription is confirmed again), or a subscription that Redis dropped on its own
  (sharded slot migration) was restored;
- the subscriber's own bounded queue overflowed (``queue_limit`` messages not yet consumed);
- ``subscribe`` returned before Redis confirmed the subscription (``subscribe_timeout``): the
  marker follows the confirmation.

Markers for one subscriber coalesce: several losses before it reads yield one marker. A message
lost before the first one a node receives from an origin cannot be seen as a gap; ``subscribe``
therefore returns only once Redis has confirmed the subscription, so load the room after it.

One pub/sub connection serves every room of the node: a reader task dispatches by channel to
per-subscriber queues, answers nothing, and reconnects with backoff (then resubscribes every
room). Redis errors reach callers as ``BackendUnavailable`` only when entering the bus; later
outages degrade to loss markers and ``statistics()``, because Redis is never the only copy.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import msgpack
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from gateway.adapters.redis_common import reconnect_logger, safe_url
from gateway.errors import BackendUnavailable, ConfigError
from gateway.ports import LOSS_SEQ, BusMessage, loss_marker
from gateway.supervision import Supervisor
from gateway.types import NodeId, RoomId

log = structlog.get_logger(__name__)
_log_reconnect_failure = reconnect_logger("bus_reconnect_failed")

ENVELOPE_VERSION = 1
MAX_PIPELINE = 256  # messages per round trip from the publisher task
_FAILURES = (RedisError, OSError)


@dataclass(frozen=True, slots=True)
class BusStatistics:
    published: int  # messages written to Redis
    delivered: int  # messages put in a subscriber's queue on this node
    dropped: int  # messages lost here: outbound overflow, failed publish, subscriber overflow
    gaps: int  # seq discontinuities and unreadable envelopes seen from peers
    reconnects: int  # pub/sub connection re-established after a loss
    connected: bool
    rooms: int  # rooms with a subscription on this node
    stalled: bool = False
    """Connected, but Redis has not answered for ``stall_seconds`` (a PING on the quiet pub/sub
    connection, or a publish): cross-node delivery is delayed."""


class _State(enum.Enum):
    SUBSCRIBING = "subscribing"  # (S)SUBSCRIBE sent or due after reconnecting; no reply yet
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBING = "unsubscribing"  # (S)UNSUBSCRIBE sent; no reply yet


class _Inbox:
    """One subscriber's bounded queue; iterating it yields messages and loss markers."""

    __slots__ = ("closed", "items", "limit", "lost", "ready", "room")

    def __init__(self, room: RoomId, limit: int) -> None:
        self.room = room
        self.limit = limit
        self.items: deque[BusMessage] = deque()
        self.lost = False
        self.closed = False
        self.ready = asyncio.Event()

    def offer(self, message: BusMessage) -> bool:
        """Queue ``message``; on overflow drop it and owe the subscriber a loss marker."""
        accepted = len(self.items) < self.limit
        if accepted:
            self.items.append(message)
        else:
            self.lost = True
        self.ready.set()
        return accepted

    def mark_lost(self) -> None:
        self.lost = True
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BusMessage:
        while True:
            if self.lost:
                self.lost = False
                return loss_marker(self.room)
            if self.items:
                return self.items.popleft()
            if self.closed:
                raise BackendUnavailable(f"the bus is closed; room {self.room} gets no messages")
            self.ready.clear()
            await self.ready.wait()


@dataclass(eq=False, slots=True)
class _Channel:
    """This node's subscription to one room's channel on the shared pub/sub connection."""

    room: RoomId
    state: _State = _State.SUBSCRIBING
    inboxes: set[_Inbox] = field(default_factory=set)
    last_seq: dict[str, int] = field(default_factory=dict)  # per origin
    lossy: bool = False  # deliver a loss marker once the subscription is confirmed
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


class RedisBus:
    """A Bus over Redis pub/sub for many nodes. Enter it (``async with``) before use."""

    def __init__(
        self,
        url: str,
        *,
        node_id: NodeId,
        prefix: str = "wedsync",
        sharded: bool = False,
        queue_limit: int = 4096,
        subscribe_timeout: float = 5.0,
        command_timeout: float = 5.0,
        health_check_interval: float = 15.0,
        probe_interval: float = 1.0,
        stall_seconds: float = 2.0,
        supervisor: Supervisor | None = None,
        send_time: bool = True,
    ) -> None:
        """The pub/sub connection is probed with PING after ``probe_interval`` s without a
        message; Redis is *stalled* when a PING or a publish waits ``stall_seconds`` for its
        answer, and the connection is given up (then reopened) after ``health_check_interval``."""
        if not node_id or any(c.isspace() for c in node_id):
            raise ConfigError(f"Bus node id {node_id!r} must be non-empty, without spaces.")
        if not prefix or any(c in "{} " for c in prefix):
            raise ConfigError(f"Bus prefix {prefix!r} must be non-empty, without braces or spaces.")
        self.url = url
        self.node_id = node_id
        self.prefix = prefix
        self.sharded = sharded
        self.queue_limit = queue_limit
        self.subscribe_timeout = subscribe_timeout
        self.command_timeout = command_timeout
        self.health_check_interval = health_check_interval
        self.probe_interval = probe_interval
        self.stall_seconds = stall_seconds
        self.send_time = send_time
        self.lag_observer: Callable[[float], None] | None = None
        """Called with each peer message's publish → receive seconds (wall clocks)."""
        self._waiting_since: dict[str, float] = {}  # "reader" / "publisher": loop time
        self._publish_cmd, self._subscribe_cmd, self._unsubscribe_cmd = (
            ("SPUBLISH", "SSUBSCRIBE", "SUNSUBSCRIBE")
            if sharded
            else ("PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE")
        )
        self._redis: Redis | None = None
        self._conn: AbstractConnection | None = None
        self._connected = False  # False from a loss until the reconnect, even if the socket lingers
        self._heard_from_redis = False  # on this connection: a failure before it means back off
        self._tasks: list[asyncio.Task[None]] = []
        self._client_id: int | None = None
        self._channels: dict[bytes, _Channel] = {}
        self._seq: dict[RoomId, int] = {}
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._outbox_ready = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._closing = False
        self._stack = AsyncExitStack()
        self._published = self._delivered = self._dropped = self._gaps = self._reconnects = 0
        self.supervisor = supervisor or Supervisor()
        """Restarts the reader or publisher task if it fails (the process's, in the server)."""

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        node_id: NodeId,
        prefix: str = "wedsync",
        sharded: bool = False,
        queue_limit: int = 4096,
        stall_seconds: float = 2.0,
        supervisor: Supervisor | None = None,
        send_time: bool = True,
    ) -> Self:
        """A bus on ``url``; entering it connects (BackendUnavailable if Redis is unreachable)."""
        return cls(
            url,
            node_id=node_id,
            prefix=prefix,
            sharded=sharded,
            queue_limit=queue_limit,
            stall_seconds=stall_seconds,
            supervisor=supervisor,
            send_time=send_time,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._redis = Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 1),  # one retry on a stale pooled socket; no more
            socket_timeout=self.command_timeout,
            socket_connect_timeout=self.command_timeout,
            socket_keepalive=True,
            health_check_interval=self.health_check_interval,
        )
        try:
            await self._redis.ping()
            await self._open_subscriber()
        except _FAILURES as exc:
            await self._redis.aclose()
            raise BackendUnavailable(
                f"Redis at {safe_url(self.url)} is unreachable: {exc}"
            ) from exc
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        keep = self.supervisor.keep
        self._tasks = [
            tasks.create_task(keep("bus_reader", self._read_forever, essential=True)),
            tasks.create_task(keep("bus_publisher", self._publish_forever, essential=True)),
        ]
        log.info("bus_connected", node_id=self.node_id, client_id=self._client_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, *, flush_timeout: float = 2.0) -> None:
        """Send what is queued (for up to ``flush_timeout`` s), then close both connections."""
        if self._closing:
            return
        self._closing = True
        try:
            async with asyncio.timeout(flush_timeout):
                await self._flushed.wait()
        except TimeoutError:
            log.warning("bus_flush_incomplete", pending=len(self._outbox))
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        for channel in self._channels.values():
            for inbox in channel.inboxes:
                inbox.close()
        if self._conn is not None:
            await self._conn.disconnect(nowait=True)
        if self._redis is not None:
            await self._redis.aclose()

    # -- Bus ------------------------------------------------------------------------------------

    def channel(self, room: RoomId) -> str:
        """The room's channel: its hash tag is the room id (one Cluster slot per room)."""
        return f"{self.prefix}:room:{{{room}}}"

    def publish_nowait(self, room: RoomId, payload: bytes) -> None:
        """Queue ``payload`` for the room's subscribers on other nodes. Never blocks.

        When ``queue_limit`` messages are already waiting the message is dropped (counted in
        ``statistics().dropped``); its seq is spent, so peers see the gap and resync.
        """
        seq = self._seq[room] = self._seq.get(room, 0) + 1
        if self._closing or len(self._outbox) >= self.queue_limit:
            self._dropped += 1
            return
        fields = [ENVELOPE_VERSION, self.node_id, seq, payload]
        if self.send_time:
            fields.append(time.time())
        envelope = msgpack.packb(fields)
        self._outbox.append((self.channel(room).encode(), envelope))
        self._flushed.clear()
        self._outbox_ready.set()

    @asynccontextmanager
    async def subscribe(self, room: RoomId) -> AsyncIterator[AsyncIterator[BusMessage]]:
        """Receive the room's messages from other nodes, and loss markers, while open.

        Returns once Redis confirmed the subscription, or after ``subscribe_timeout`` (Redis
        unreachable): then the first item will be a loss marker, once the subscription is made.
        """
        if self._closing:
            raise BackendUnavailable(f"the bus is closed; cannot subscribe to room {room}")
        name = self.channel(room).encode()
        channel = self._channels.get(name)
        inbox = _Inbox(room, self.queue_limit)
        if channel is None:
            channel = self._channels[name] = _Channel(room)
            channel.inboxes.add(inbox)
            await self._send(self._subscribe_cmd, name)
        else:
            channel.inboxes.add(inbox)
        try:
            await self._wait_confirmed(channel)
            yield inbox
        finally:
            channel.inboxes.discard(inbox)
            if not channel.inboxes:
                # The room left this node: forget its seq, or one entry per wedding ever served
                # would stay. If it comes back while a peer kept it, that peer sees the seq
                # start again at 1 as a gap and repairs from the store once.
                self._seq.pop(room, None)
                await self._release(name, channel)

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            published=self._published,
            delivered=self._delivered,
            dropped=self._dropped,
            gaps=self._gaps,
            reconnects=self._reconnects,
            connected=self._connected,
            rooms=len(self._channels),
            stalled=self._connected and self._stalled(),
        )

    def _stalled(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(now - since >= self.stall_seconds for since in self._waiting_since.values())

    @property
    def subscriber_client_id(self) -> int | None:
        """Redis ``CLIENT ID`` of the pub/sub connection (None if not connected)."""
        return self._client_id

    # -- subscriptions --------------------------------------------------------------------------

    async def _wait_confirmed(self, channel: _Channel) -> None:
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                await channel.confirmed.wait()
        except TimeoutError:
            channel.lossy = True
            log.warning("bus_subscribe_unconfirmed", room=channel.room)

    async def _release(self, name: bytes, channel: _Channel) -> None:
        """The last subscriber left: unsubscribe (or let the pending reply do it)."""
        if not self._connected:
            if self._channels.get(name) is channel:
                del self._channels[name]  # the reconnect will not resubscribe it
        elif channel.state is _State.SUBSCRIBED:
            self._set_state(channel, _State.UNSUBSCRIBING)
            await self._send(self._unsubscribe_cmd, name)

    async def _send(self, *args: str | bytes) -> None:
        """Send one command on the pub/sub connection if it is up; its reply is dispatched.

        When it is down the reconnect resubscribes every room in its stead.
        """
        conn = self._conn
        # is_connected must be checked right here: send_command would silently reconnect a
        # lost socket, subscribing a connection nobody reads.
        if conn is None or not self._connected or not conn.is_connected:
            return
        try:
            await conn.send_command(*args, check_health=False)
        except _FAILURES as exc:
            log.warning("bus_send_failed", command=args[0], error=str(exc))

    def _set_state(self, channel: _Channel, state: _State) -> None:
        channel.state = state
        if state is _State.SUBSCRIBED:
            channel.confirmed.set()
        else:
            channel.confirmed.clear()

    # -- the reader task ------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=5.0)
        failures = 0
        while True:
            self._heard_from_redis = False
            try:
                await self._read_until_lost()
            except _FAILURES as exc:
                self._connection_lost(exc)
            except Exception as exc:  # a bug reading it: what was being read may be lost
                log.exception("bus_reader_failed")
                self._connection_lost(exc)
            # A connection that fails before any reply (e.g. SUBSCRIBE refused by an ACL) must
            # not be reopened in a tight loop.
            failures = 0 if self._heard_from_redis else failures + 1
            if failures:
                await asyncio.sleep(backoff.compute(failures))  # backoff, not a wait on state
            await self._reconnect()

    async def _read_until_lost(self) -> None:
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        waiting = self._waiting_since
        try:
            while True:
                response = await conn.read_response(
                    timeout=self.probe_interval, disconnect_on_error=False
                )
                if response is not None:
                    waiting.pop("reader", None)
                    self._heard_from_redis = True
                    await self._dispatch(response)
                elif "reader" not in waiting:  # quiet for a while: prove Redis is alive
                    waiting["reader"] = loop.time()
                    await conn.send_command("PING", check_health=False)
                elif loop.time() - waiting["reader"] >= self.health_check_interval:
                    raise ConnectionError("the pub/sub connection did not answer PING")
        finally:
            waiting.pop("reader", None)

    def _connection_lost(self, exc: BaseException) -> None:
        """Every room must be subscribed again, and was possibly missing messages."""
        log.warning("bus_connection_lost", error=str(exc), rooms=len(self._channels))
        self._connected = False
        self._client_id = None
        for name, channel in list(self._channels.items()):
            if not channel.inboxes:
                del self._channels[name]
                continue
            if channel.state is _State.SUBSCRIBED:
                channel.lossy = True
            self._set_state(channel, _State.SUBSCRIBING)
            channel.last_seq.clear()

    async def _reconnect(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect(nowait=True)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_FAILURES),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.05),
            before_sleep=_log_reconnect_failure,
        )
        async for attempt in retrying:
            with attempt:
                await self._open_subscriber()
        self._reconnects += 1
        log.info("bus_reconnected", client_id=self._client_id, rooms=len(self._channels))

    async def _open_subscriber(self) -> None:
        """Open the pub/sub connection and (re)subscribe every room that has subscribers."""
        assert self._redis is not None
        pool = self._redis.connection_pool
        conn: AbstractConnection = pool.connection_class(
            **{
                **pool.connection_kwargs,
                "protocol": 2,  # pub/sub replies as plain arrays, whatever the URL says
                "maint_notifications_config": None,  # RESP3 only
                "maint_notifications_pool_handler": None,
                "health_check_interval": 0,  # this class probes; redis-py would steal replies
                "socket_timeout": None,  # every read passes its own timeout
                "socket_connect_timeout": self.command_timeout,
                "retry": Retry(NoBackoff(), 0),  # this class reconnects, with backoff
                "client_name": f"{self.prefix}-bus-{self.node_id}",
            }
        )
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLIENT", "ID", check_health=False)
            client_id = await conn.read_response(timeout=self.command_timeout)
            if client_id is None:  # its late reply would be taken for a pub/sub message
                raise RedisTimeoutError("no reply to CLIENT ID")
        except ResponseError:
            client_id = None  # CLIENT ID renamed or forbidden: only diagnostics need it
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self._conn, self._client_id, self._connected = conn, client_id, True
        for name, channel in list(self._channels.items()):
            if not channel.inboxes:  # left while we were disconnected
                del self._channels[name]
        names = list(self._channels)  # rooms joined from now on subscribe through _send
        try:
            for start in range(0, len(names), 512):
                await conn.send_command(self._subscribe_cmd, *names[start : start + 512])
        except BaseException:
            self._connected = False
            await conn.disconnect(nowait=True)
            raise

    async def _dispatch(self, response: Any) -> None:
        if not isinstance(response, list) or len(response) != 3:
            return  # PONG outside subscribed mode
        kind = response[0]
        if kind in (b"message", b"smessage"):
            self._receive(response[1], response[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            await self._confirmed(response[1])
        elif kind in (b"unsubscribe", b"sunsubscribe"):
            await self._unsubscribed(response[1])

    async def _confirmed(self, name: bytes) -> None:
        channel = self._channels.get(name)
        if channel is None or channel.state is not _State.SUBSCRIBING:
            return
        if not channel.inboxes:  # everyone left while we waited for the reply
            self._set_state(channel, _State.UNSUBSCRIBING)
            await self._send(self._unsubscribe_cmd, name)
            return
        self._set_state(channel, _State.SUBSCRIBED)
        if channel.lossy:
            channel.lossy = False
            for inbox in channel.inboxes:
                inbox.mark_lost()

    async def _unsubscribed(self, name: bytes) -> None:
        channel = self._channels.get(name)
        if channel is None or channel.state is _State.SUBSCRIBING:
            return
        if channel.state is _State.SUBSCRIBED:  # Redis dropped it (sharded slot moved)
            channel.lossy = True
        elif not channel.inboxes:
            del self._channels[name]
            return
        channel.last_seq.clear()
        self._set_state(channel, _State.SUBSCRIBING)
        await self._send(self._subscribe_cmd, name)

    def _receive(self, name: bytes, data: bytes) -> None:
        channel = self._channels.get(name)
        if channel is None or channel.state is not _State.SUBSCRIBED:
            return  # left, or rejoined while unsubscribing: subscribers get what follows a reply
        decoded = self._decode(channel.room, data)
        if decoded is None:  # unreadable: whatever it said is lost to us
            self._gaps += 1
            self._dropped += 1
            self._mark_lost(channel)
            return
        message, sent = decoded
        if message.origin == self.node_id:
            return  # never echoed (gateway/ports.py Bus)
        if sent is not None and self.lag_observer is not None:
            self.lag_observer(max(0.0, time.time() - sent))  # clock skew: never negative
        last = channel.last_seq.get(message.origin)
        channel.last_seq[message.origin] = message.seq
        if last is not None and message.seq != last + 1:
            self._gaps += 1
            self._mark_lost(channel)
        for inbox in channel.inboxes:
            if inbox.offer(message):
                self._delivered += 1
            else:
                self._dropped += 1

    def _mark_lost(self, channel: _Channel) -> None:
        for inbox in channel.inboxes:
            inbox.mark_lost()

    @staticmethod
    def _decode(room: RoomId, data: bytes) -> tuple[BusMessage, float | None] | None:
        """The message and its publisher's send time (None: not given); None if unreadable."""
        try:
            envelope = msgpack.unpackb(data)
        except (ValueError, TypeError):
            return None
        if not (isinstance(envelope, list) and len(envelope) in (4, 5)):
            return None
        version, origin, seq, payload = envelope[:4]
        sent = envelope[4] if len(envelope) == 5 else None
        valid = (
            version == ENVELOPE_VERSION
            and isinstance(origin, str)
            and origin
            and isinstance(seq, int)
            and seq > LOSS_SEQ
            and isinstance(payload, bytes)
            and (sent is None or isinstance(sent, float))
        )
        return (BusMessage(room, NodeId(origin), seq, payload), sent) if valid else None

    # -- the publisher task ---------------------------------------------------------------------

    async def _publish_forever(self) -> None:
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=5.0)
        failures = 0
        while True:
            if not self._outbox:
                self._flushed.set()
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            batch = [self._outbox.popleft() for _ in range(min(MAX_PIPELINE, len(self._outbox)))]
            self._waiting_since["publisher"] = asyncio.get_running_loop().time()
            try:
                await self._publish_batch(batch)
            except _FAILURES as exc:
                failures += 1
                self._dropped += len(batch)  # peers see the seq gap and resync
                log.warning("bus_publish_failed", error=str(exc), dropped=len(batch))
                await asyncio.sleep(backoff.compute(failures))  # backoff, not a wait on state
            else:
                failures = 0
                self._published += len(batch)
            finally:
                del self._waiting_since["publisher"]

    async def _publish_batch(self, batch: list[tuple[bytes, bytes]]) -> None:
        assert self._redis is not None
        if len(batch) == 1:
            await self._redis.execute_command(self._publish_cmd, *batch[0])  # type: ignore[no-untyped-call]
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, envelope in batch:
                pipe.execute_command(self._publish_cmd, name, envelope)
            await pipe.execute()
