"""Service fixtures: the Redis and Postgres running on the project machine (DESIGN.md §9).

Defaults are redis://127.0.0.1:6379/0 and postgresql://<OS user>@127.0.0.1:5432/test (then user
``postgres``); GATEWAY_TEST_REDIS_URL and GATEWAY_TEST_DATABASE_URL override them. An unreachable
service fails the test with instructions; GATEWAY_TEST_SKIP_SERVICES=1 (a laptop, never CI)
skips instead. Each test isolates itself: a key prefix or a schema of its own, never FLUSH.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest
import redis

REDIS_HELP = (
    "start it with `redis-server --port 6379` (or `docker run -p 6379:6379 redis:7`),"
    " or point GATEWAY_TEST_REDIS_URL at one"
)
POSTGRES_HELP = (
    "start it (e.g. `docker run -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test"
    " -p 5432:5432 postgres:15`), or point GATEWAY_TEST_DATABASE_URL at one"
)


def _unavailable(service: str, target: str, error: BaseException, help_text: str) -> None:
    message = f"{service} at {target} is unreachable ({error}): {help_text}."
    if os.environ.get("GATEWAY_TEST_SKIP_SERVICES") == "1":
        pytest.skip(message)
    pytest.fail(message + " Set GATEWAY_TEST_SKIP_SERVICES=1 to skip locally (never in CI).")


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        _unavailable("Redis", url, exc, REDIS_HELP)
    finally:
        client.close()
    return url


async def _first_reachable(dsns: list[str]) -> tuple[str | None, BaseException | None]:
    error: BaseException | None = None
    for dsn in dsns:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            error = exc
            continue
        await conn.close()
        return dsn, None
    return None, error


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    configured = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    candidates = (
        [configured]
        if configured
        else [
            f"postgresql://{user}@127.0.0.1:5432/test" for user in (getpass.getuser(), "postgres")
        ]
    )
    dsn, error = asyncio.run(_first_reachable(candidates))
    if dsn is None:
        assert error is not None
        _unavailable("Postgres", " or ".join(candidates), error, POSTGRES_HELP)
    assert dsn is not None
    return dsn


@pytest.fixture
async def postgres_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A schema name of the test's own (``t_<uuid12>``), dropped with everything in it after."""
    name = f"t_{uuid4().hex[:12]}"
    try:
        yield name
    finally:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
