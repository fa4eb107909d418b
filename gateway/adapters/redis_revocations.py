"""Redis Revocations: revoked token ids shared by every node (gateway/ports.py ``Revocations``).

Wire format (only gateway nodes speak it):

- A sorted set ``{prefix}:revoked``: member = token id (``jti``), score = the token's ``exp``.
  Entries whose ``exp`` is more than ``grace`` seconds past are pruned on every write and
  reload: no verifier accepts those tokens any more.
- A pub/sub channel ``{prefix}:revocations``: each revocation is published as a msgpack array
  ``[1, token id, expires_at]`` (version 1), so every node hears it at once.

Every node keeps a local copy, so ``is_revoked`` does no I/O. Pub/sub is at most once, so the
set is the truth: on start, and after every reconnect of the subscriber, a node subscribes,
waits for Redis to confirm, and only then reloads the whole set, so a revocation published
while it was away is never missed. Callbacks run once per token id on each node, whichever of
``revoke``, the channel or a reload told it first. An unreadable message triggers a reload.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import msgpack
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from gateway.adapters.redis_common import reconnect_logger, safe_url
from gateway.errors import BackendUnavailable, ConfigError
from gateway.supervision import Supervisor

log = structlog.get_logger(__name__)
_log_reconnect_failure = reconnect_logger("revocations_reconnect_failed")

ENVELOPE_VERSION = 1
DEFAULT_GRACE = 300.0
"""Seconds an entry outlives its token's ``exp``: covers the verifier's leeway (at most 300)."""
_FAILURES = (RedisError, OSError)


class RedisRevocations:
    """Revocations in Redis for many nodes. Enter it (``async with``) before use."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wedsync",
        grace: float = DEFAULT_GRACE,
        command_timeout: float = 5.0,
        health_check_interval: float = 15.0,
        clock: Callable[[], float] = time.time,
        supervisor: Supervisor | None = None,
    ) -> None:
        if not prefix or any(c in "{} " for c in prefix):
            raise ConfigError(f"Revocations prefix {prefix!r} must be non-empty, without spaces.")
        self.url = url
        self.key = f"{prefix}:revoked"
        self.channel = f"{prefix}:revocations"
        self.subscriber_name = f"{prefix}-revocations-{uuid.uuid4().hex[:8]}"
        """The Redis client name of this instance's pub/sub connection."""
        self.grace = grace
        self.command_timeout = command_timeout
        self.health_check_interval = health_check_interval
        self._clock = clock
        self._revoked: dict[str, float] = {}  # token id → expires_at
        self._callbacks: list[Callable[[str], None]] = []
        self._redis: Redis | None = None
        self._subscriber: Redis | None = None
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None  # subscribed on entry; the follower takes it
        self.supervisor = supervisor or Supervisor()
        """Restarts the follower task if it fails (the process's, in the server)."""
        self._closing = False

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        prefix: str = "wedsync",
        grace: float = DEFAULT_GRACE,
        supervisor: Supervisor | None = None,
    ) -> Self:
        """Revocations on ``url``; entering connects (BackendUnavailable if Redis is down)."""
        return cls(url, prefix=prefix, grace=grace, supervisor=supervisor)

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._redis = self._client(retries=1)  # one retry on a stale pooled socket
        # No silent reconnects on the subscriber: every reconnect must be followed by a reload.
        self._subscriber = self._client(retries=0, client_name=self.subscriber_name)
        try:
            pubsub = await self._subscribe()
        except _FAILURES as exc:
            await self._close_clients()
            raise BackendUnavailable(
                f"Redis at {safe_url(self.url)} is unreachable: {exc}"
            ) from exc
        self._pubsub = pubsub
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        follow = self.supervisor.keep("revocations", self._follow_forever, essential=True)
        self._task = tasks.create_task(follow)
        log.info("revocations_loaded", revoked=len(self._revoked))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        await self._stack.aclose()
        await self._close_clients()

    # -- Revocations ----------------------------------------------------------------------------

    def is_revoked(self, token_id: str) -> bool:
        """Whether ``token_id`` was revoked (local copy: no I/O)."""
        expires_at = self._revoked.get(token_id)
        return expires_at is not None and expires_at >= self._clock() - self.grace

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Record the revocation in Redis, tell every node, then call this node's callbacks.

        Raises BackendUnavailable when Redis does not take it. A token long expired is ignored.
        """
        now = self._clock()
        if expires_at < now - self.grace:
            return
        if self._closing or self._redis is None:
            raise BackendUnavailable("the revocations are closed")
        envelope = msgpack.packb([ENVELOPE_VERSION, token_id, expires_at])
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.key, {token_id: expires_at}, gt=True)  # keep the later exp
                pipe.zremrangebyscore(self.key, "-inf", f"({now - self.grace}")
                pipe.publish(self.channel, envelope)
                await pipe.execute()
        except _FAILURES as exc:
            raise BackendUnavailable(f"Redis did not record revoking {token_id!r}: {exc}") from exc
        self._record(token_id, expires_at)

    def on_revoked(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    # -- local copy -----------------------------------------------------------------------------

    def _record(self, token_id: str, expires_at: float) -> None:
        known = self._revoked.get(token_id)
        if known is not None:
            self._revoked[token_id] = max(known, expires_at)
            return
        if expires_at < self._clock() - self.grace:
            return
        self._revoked[token_id] = expires_at
        for callback in self._callbacks:
            try:
                callback(token_id)
            except Exception:  # one consumer's bug must not hide the revocation from the rest
                log.exception("revocation_callback_failed", token_id=token_id)

    async def _reload(self) -> None:
        """Read the whole set into the local copy (after pruning what expired)."""
        assert self._redis is not None
        cutoff = self._clock() - self.grace
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key, "-inf", f"({cutoff}")
            pipe.zrange(self.key, cutoff, "+inf", byscore=True, withscores=True)
            _, entries = await pipe.execute()
        for member, score in entries:
            self._record(member.decode(), float(score))
        for token_id in [t for t, expires_at in self._revoked.items() if expires_at < cutoff]:
            del self._revoked[token_id]

    def _receive(self, data: Any) -> bool:
        """Record one published revocation; False when the message cannot be read."""
        try:
            version, token_id, expires_at = msgpack.unpackb(data)
        except (ValueError, TypeError):
            return False
        valid = (
            version == ENVELOPE_VERSION
            and isinstance(token_id, str)
            and isinstance(expires_at, int | float)
        )
        if valid:
            self._record(token_id, float(expires_at))
        return valid

    # -- the subscriber task --------------------------------------------------------------------

    async def _follow_forever(self) -> None:
        """Restartable (gateway/supervision.py): a run that failed leaves no subscription,
        and the next one subscribes (and reloads) again."""
        while True:
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is None:
                pubsub = await self._resubscribe()
            try:
                await self._listen(pubsub)
            except _FAILURES as exc:
                log.warning("revocations_connection_lost", error=str(exc))
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _resubscribe(self) -> PubSub:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_FAILURES),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.05),
            before_sleep=_log_reconnect_failure,
        )
        async for attempt in retrying:
            with attempt:
                pubsub = await self._subscribe()
        log.info("revocations_reconnected", revoked=len(self._revoked))
        return pubsub

    async def _subscribe(self) -> PubSub:
        """Subscribe, wait for Redis to confirm, then reload: no revocation falls in between."""
        assert self._subscriber is not None
        pubsub = self._subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            reply = await pubsub.get_message(timeout=self.command_timeout)
            if reply is None or reply["type"] != "subscribe":
                raise RedisConnectionError(f"Redis did not confirm SUBSCRIBE {self.channel}")
            await self._reload()
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        """Handle messages until the connection fails (raises) or stops answering PING."""
        probing = False
        while True:
            message = await pubsub.get_message(timeout=self.health_check_interval)
            if message is None:
                if probing:
                    raise RedisConnectionError("the revocations channel did not answer PING")
                probing = True  # quiet for a while: prove the connection is alive
                await pubsub.ping()
                continue
            probing = False
            if message["type"] == "message" and not self._receive(message["data"]):
                log.warning("revocation_unreadable", channel=self.channel)
                await self._reload()

    def _client(self, *, retries: int, client_name: str | None = None) -> Redis:
        return Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), retries),
            socket_timeout=self.command_timeout,
            socket_connect_timeout=self.command_timeout,
            socket_keepalive=True,
            client_name=client_name,
        )

    async def _close_clients(self) -> None:
        for client in (self._redis, self._subscriber):
            if client is not None:
                await client.aclose()
