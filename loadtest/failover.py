"""Failover after ``kill -9`` of a wedding's owner (README "Running several nodes").

Each run starts two ``gateway serve`` processes on the machine's Redis and Postgres (a schema
and a channel prefix of the run's own, dropped afterwards). A client on node ``a`` creates the
wedding, so ``a`` owns it; a client on node ``b`` edits it every ``--interval-ms`` and waits for
durable acks (its node relays the edits to ``a``). Then ``a`` is killed with SIGKILL and the run
measures, from the kill:

- takeover: until ``b`` reports itself the owner (``GET /v1/weddings/{id}/owner``, polled);
- ack gap: until the writer's first edit made after the kill is acknowledged as durable;
- lost: acknowledged edits missing from Postgres at the end (must be 0).

Usage: python -m loadtest.failover [--runs 5] [--lease-seconds 3]
(from the repository root, after ``make install``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
from pycrdt import Doc, Map

from gateway_client import GatewayClient

DSN = os.environ.get("GATEWAY_PERF_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS = os.environ.get("GATEWAY_PERF_REDIS_URL", "redis://127.0.0.1:6379/0")
DEADLINE = 60.0
"""Seconds before a run is given up (hang protection, not a measured bound)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    child = {
        **os.environ,
        **env,
        "GATEWAY_NODE_ID": name,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": f"/tmp/wedsync-failover-{name}-{port}",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=child)


async def until(check: Any, what: str, poll: float = 0.01) -> float:
    """Poll ``check`` (async) until true; return the loop time it became true."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DEADLINE):
        while True:
            if await check():
                break
            await asyncio.sleep(poll)  # polling an outside process: no event to wait on
    return loop.time()


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def one_run(lease_seconds: float, interval: float) -> dict[str, float]:
    run = f"fo_{uuid4().hex[:10]}"
    env = {
        "GATEWAY_DATABASE_URL": DSN,
        "GATEWAY_DATABASE_SCHEMA": run,
        "GATEWAY_REDIS_URL": REDIS,
        "GATEWAY_REDIS_PREFIX": run,
        "GATEWAY_LEASE_SECONDS": str(lease_seconds),
    }
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "migrate", env={**os.environ, **env}
    )
    if await migrate.wait() != 0:
        raise RuntimeError("gateway migrate failed")
    ports = {"a": free_port(), "b": free_port()}
    nodes = {name: spawn(name, port, env) for name, port in ports.items()}
    room = "failover-wedding"
    try:
        for port in ports.values():
            await until(lambda port=port: listening(port), "listening", 0.05)
        url = {name: f"ws://127.0.0.1:{port}/ws" for name, port in ports.items()}
        async with (
            GatewayClient(url["a"], room) as creator,
            GatewayClient([url["b"]], room, doc=Doc()) as writer,
            httpx.AsyncClient() as http,
        ):
            await creator.wait_synced()
            creator.create_wedding(partner_a="Ana", partner_b="Bea")
            await creator.wait_durable()
            await writer.wait_synced()

            async def owner_is(name: str) -> bool:
                base = f"http://127.0.0.1:{ports['b']}"
                response = await http.get(f"{base}/v1/weddings/{room}/owner")
                return bool(response.status_code == 200 and response.json()["owner"] == name)

            await until(lambda: owner_is("a"), "a owns")
            stop = asyncio.Event()

            async def write() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    writer.set_core(guest_count=n % 5000 + 1, notes=f"edit {n}")
                    await asyncio.sleep(interval)  # the load's pace

            task = asyncio.create_task(write())
            await writer.wait_durable(writer.protocol.local_version)  # relaying works
            loop = asyncio.get_running_loop()
            nodes["a"].send_signal(signal.SIGKILL)
            killed = loop.time()
            after = writer.protocol.local_version + 1
            takeover = await until(lambda: owner_is("b"), "b owns")
            async with asyncio.timeout(DEADLINE):
                await writer.wait_durable(after)
            acked = loop.time()
            stop.set()
            await task
            await writer.wait_durable()
            final = writer.doc.get("core", type=Map).to_py()
        stored = await stored_core(run, room)
        return {
            "takeover_ms": (takeover - killed) * 1000,
            "ack_gap_ms": (acked - killed) * 1000,
            "lost": 0.0 if stored == final else 1.0,
        }
    finally:
        for process in nodes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait()
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{run}" CASCADE')
        finally:
            await conn.close()


async def stored_core(schema: str, room: str) -> dict[str, Any]:
    conn = await asyncpg.connect(DSN)
    try:
        rows = await conn.fetch(
            f'SELECT data FROM "{schema}".snapshots WHERE room = $1 UNION ALL '
            f'(SELECT data FROM "{schema}".updates WHERE room = $1 ORDER BY "offset")',
            room,
        )
    finally:
        await conn.close()
    doc: Doc[Any] = Doc()
    for row in rows:
        doc.apply_update(bytes(row["data"]))
    return dict(doc.get("core", type=Map).to_py() or {})


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    results = []
    for n in range(args.runs):
        started = time.perf_counter()
        result = await one_run(args.lease_seconds, args.interval_ms / 1000)
        results.append(result)
        print(f"run {n + 1}: {json.dumps(result)} ({time.perf_counter() - started:.1f} s)")
    for key in ("takeover_ms", "ack_gap_ms"):
        values = [r[key] for r in results]
        print(
            f"{key}: median {statistics.median(values):.0f}, min {min(values):.0f},"
            f" max {max(values):.0f} (lease {args.lease_seconds:g} s, {args.runs} runs)"
        )
    print(f"runs with a lost acknowledged edit: {sum(r['lost'] > 0 for r in results)}")


if __name__ == "__main__":
    asyncio.run(main())
