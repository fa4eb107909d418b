"""The Revocations contract (gateway/ports.py) against MemoryRevocations and RedisRevocations.

Every Redis test uses a key prefix of its own (``test-<uuid12>``); nothing is flushed.
Connections are killed only by their own client name, never by type alone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from gateway.adapters.memory_revocations import MemoryRevocations, RevocationBoard
from gateway.adapters.redis_revocations import RedisRevocations
from gateway.errors import BackendUnavailable
from gateway.ports import Revocations
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

RevocationsFactory = Callable[..., Awaitable[Revocations]]
"""Opens another node's Revocations on the shared medium; options: grace, clock."""


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def recorder(revocations: Revocations) -> list[str]:
    """The token ids ``revocations`` reports to its callbacks, in order."""
    calls: list[str] = []
    revocations.on_revoked(calls.append)
    return calls


class RevocationsContract:
    """What every Revocations must do. Subclasses provide the ``make_revocations`` fixture."""

    async def test_revoked_token_is_refused_here_at_once_and_on_other_nodes(
        self, make_revocations: RevocationsFactory
    ) -> None:
        a, b = await make_revocations(), await make_revocations()
        await a.revoke("token-1", time.time() + 60)
        assert a.is_revoked("token-1")
        await eventually(lambda: b.is_revoked("token-1"), message="b hears the revocation")
        assert not a.is_revoked("token-2")
        assert not b.is_revoked("token-2")

    async def test_callbacks_run_once_per_revocation_on_every_node(
        self, make_revocations: RevocationsFactory
    ) -> None:
        a, b = await make_revocations(), await make_revocations()
        at_a, at_b = recorder(a), recorder(b)
        expires_at = time.time() + 60
        await a.revoke("token-1", expires_at)
        await eventually(lambda: b.is_revoked("token-1"))
        await b.revoke("token-1", expires_at)  # again: nothing new to tell
        await b.revoke("token-2", expires_at)
        await eventually(lambda: a.is_revoked("token-2"))
        await a.revoke("token-3", expires_at)
        # Each node hears revocations in order: once token-3 arrived, every echo before it did.
        await eventually(lambda: b.is_revoked("token-3"))
        assert at_a == at_b == ["token-1", "token-2", "token-3"]

    async def test_a_node_started_later_loads_earlier_revocations(
        self, make_revocations: RevocationsFactory
    ) -> None:
        a = await make_revocations()
        await a.revoke("token-1", time.time() + 60)
        late = await make_revocations()
        assert late.is_revoked("token-1")

    async def test_a_token_long_expired_is_not_recorded(
        self, make_revocations: RevocationsFactory
    ) -> None:
        a = await make_revocations(grace=10)
        calls = recorder(a)
        await a.revoke("stale", time.time() - 60)
        assert not a.is_revoked("stale")
        assert calls == []

    async def test_entries_expire_once_their_token_expired_past_the_grace(
        self, make_revocations: RevocationsFactory
    ) -> None:
        clock = FakeClock()
        a = await make_revocations(grace=10, clock=clock)
        await a.revoke("token-1", clock.now + 60)
        clock.now += 60 + 5  # the token expired, but a verifier's leeway may still accept it
        assert a.is_revoked("token-1")
        clock.now += 6
        assert not a.is_revoked("token-1")
        late = await make_revocations(grace=10, clock=clock)
        assert not late.is_revoked("token-1")

    async def test_a_later_expiry_extends_the_entry(
        self, make_revocations: RevocationsFactory
    ) -> None:
        clock = FakeClock()
        a = await make_revocations(grace=0, clock=clock)
        await a.revoke("token-1", clock.now + 10)
        await a.revoke("token-1", clock.now + 100)
        clock.now += 50
        assert a.is_revoked("token-1")


class TestMemoryRevocations(RevocationsContract):
    @pytest.fixture
    async def make_revocations(self) -> AsyncIterator[RevocationsFactory]:
        boards: dict[float, RevocationBoard] = {}
        async with AsyncExitStack() as stack:

            async def make(grace: float = 300.0, **options: Any) -> Revocations:
                board = boards.setdefault(grace, RevocationBoard(grace=grace))
                return await stack.enter_async_context(MemoryRevocations(board, **options))

            yield make

    async def test_instances_without_a_board_share_nothing(self) -> None:
        async with MemoryRevocations() as a, MemoryRevocations() as b:
            await a.revoke("token-1", time.time() + 60)
            assert not b.is_revoked("token-1")

    async def test_a_failing_callback_does_not_stop_the_others(self) -> None:
        async with MemoryRevocations() as a:

            def fail(token_id: str) -> None:
                raise RuntimeError("consumer bug")

            a.on_revoked(fail)
            calls = recorder(a)
            await a.revoke("token-1", time.time() + 60)
        assert calls == ["token-1"]


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid4().hex[:12]}"


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def kill_subscriber(admin: Redis, revocations: RedisRevocations) -> None:
    """Close this instance's pub/sub connection from the server side."""
    clients = await admin.client_list()
    ids = [c["id"] for c in clients if c["name"] == revocations.subscriber_name]
    assert ids, f"no Redis client named {revocations.subscriber_name}"
    for client_id in ids:
        await admin.client_kill_filter(_id=client_id)


@pytest.mark.redis
class TestRedisRevocations(RevocationsContract):
    @pytest.fixture
    async def connect(self, redis_url: str, prefix: str) -> AsyncIterator[RevocationsFactory]:
        async with AsyncExitStack() as stack:

            async def make(**options: Any) -> RedisRevocations:
                revocations = RedisRevocations(redis_url, prefix=prefix, **options)
                return await stack.enter_async_context(revocations)

            yield make

    @pytest.fixture
    def make_revocations(self, connect: RevocationsFactory) -> RevocationsFactory:
        return connect

    async def test_the_set_is_scored_by_expiry(
        self, connect: RevocationsFactory, admin: Redis, prefix: str
    ) -> None:
        a = await connect()
        await a.revoke("token-1", 1_900_000_000.5)
        assert await admin.zscore(f"{prefix}:revoked", "token-1") == 1_900_000_000.5

    async def test_writes_prune_expired_entries_from_redis(
        self, connect: RevocationsFactory, admin: Redis, prefix: str
    ) -> None:
        clock = FakeClock()
        a = await connect(grace=10, clock=clock)
        await a.revoke("old", clock.now + 1)
        clock.now += 20
        await a.revoke("new", clock.now + 60)
        assert await admin.zrange(f"{prefix}:revoked", 0, -1) == [b"new"]

    async def test_a_node_that_missed_a_message_reloads_after_reconnecting(
        self, connect: RevocationsFactory, admin: Redis, prefix: str
    ) -> None:
        b = await connect()
        assert isinstance(b, RedisRevocations)
        calls = recorder(b)
        # Revoked while b was not listening: in the set, never published.
        await admin.zadd(f"{prefix}:revoked", {"missed": time.time() + 60})
        await kill_subscriber(admin, b)
        await eventually(lambda: b.is_revoked("missed"), message="b reloaded the set")
        assert calls == ["missed"]
        a = await connect()
        await a.revoke("after", time.time() + 60)  # b listens again
        await eventually(lambda: b.is_revoked("after"))
        assert calls == ["missed", "after"]

    async def test_a_node_cut_off_from_redis_catches_up_when_it_returns(
        self, redis_url: str, admin: Redis, prefix: str
    ) -> None:
        target = urlsplit(redis_url)
        async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}{target.path}"
            async with RedisRevocations.connect(url, prefix=prefix) as b:
                calls = recorder(b)
                await proxy.stop()  # Redis is gone for b: its revocations stay readable
                with pytest.raises(BackendUnavailable):
                    await b.revoke("during", time.time() + 60)
                await admin.zadd(f"{prefix}:revoked", {"missed": time.time() + 60})
                accepted = proxy.connections_accepted
                await proxy.start()
                await eventually(lambda: b.is_revoked("missed"), message="b caught up")
                assert proxy.connections_accepted > accepted
                assert calls == ["missed"]

    async def test_an_unreadable_message_makes_the_node_reload(
        self, connect: RevocationsFactory, admin: Redis, prefix: str
    ) -> None:
        b = await connect()
        await admin.zadd(f"{prefix}:revoked", {"token-1": time.time() + 60})
        await admin.publish(f"{prefix}:revocations", b"\xc1 not msgpack")
        await eventually(lambda: b.is_revoked("token-1"))

    async def test_unreachable_redis_fails_on_enter(self, prefix: str) -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        revocations = RedisRevocations(f"redis://127.0.0.1:{port}/0", prefix=prefix)
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await revocations.__aenter__()

    async def test_revoke_after_close_raises(self, redis_url: str, prefix: str) -> None:
        async with RedisRevocations.connect(redis_url, prefix=prefix) as revocations:
            pass
        with pytest.raises(BackendUnavailable):
            await revocations.revoke("token-1", time.time() + 60)
