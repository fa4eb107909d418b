"""A Saturday: ``python -m loadtest.saturday`` — the room-load hit ratio of warm weddings.

The shape (issue 16): many weddings, most of the day's activity on the weddings of the next
seven days — today's above all — and a thin tail on weddings months away. Sessions come and go
(a vendor opens a wedding, edits, closes the tab), so what decides the cost is whether the room
is already in memory when a session arrives.

1. An embedded gateway (``gateway serve``, a fresh data directory; ``--nodes N`` on ``--redis``
   and ``--postgres``: N nodes, sessions routed by ``--routing``) is seeded: ``--weddings``
   weddings, each created with a ``wedding_date`` (``--near-share`` of them within the next
   7 days, weighted towards today; the rest 8-365 days away).
2. The gateway is restarted (SIGTERM, drain, start): the Saturday-morning deploy. Warming, if on,
   loads the next week's weddings, today's first, while nobody is connected.
3. ``--sessions`` sessions run, ``--concurrency`` at a time: each connects to one wedding,
   syncs, makes one durable edit and leaves. A session picks a near wedding with probability
   ``--near-activity`` (today's weddings weighted by ``--today-weight``), else a far one.
4. The hit ratio is read from the gateway's own counters (``/metrics``:
   ``gateway_room_joins_total{source="memory"}`` over all joins) over the sessions only.

Run it twice to see what warming buys: ``--env GATEWAY_WARM_MAX_ROOMS=0`` turns it off.
Reports JSON (``--report``); exits 1 when the hit ratio is below ``--target``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gateway_client import GatewayClient
from loadtest.faults.services import drop_schema
from loadtest.soak import _listening, free_port, spawn

START_TIMEOUT = 30.0
JOINS = re.compile(r'^gateway_room_joins_total\{source="(memory|store)"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True, slots=True)
class SaturdayConfig:
    weddings: int = 400
    near_share: float = 0.25  # of the weddings: dated within the next 7 days
    sessions: int = 3000
    concurrency: int = 40
    near_activity: float = 0.95  # of the sessions: for a wedding of the next 7 days
    today_weight: float = 4.0  # a wedding of today is this much likelier than one of next week
    room_idle_seconds: float = 30.0
    target: float = 0.95
    seed: int = 6
    nodes: int = 1  # above 1: on --redis and --postgres (a schema and prefix of the run's own)
    routing: str = "wedding"  # wedding (hash of the path, as deploy/nginx.conf) | round-robin
    redis: str = ""
    postgres: str = ""


@dataclass
class Result:
    hit_ratio: float
    joins_from_memory: int
    joins_from_store: int
    sessions: int
    failed_sessions: int
    near_weddings: int
    far_weddings: int
    warm_rooms_after_restart: int
    sessions_seconds: float
    env: dict[str, str]
    config: dict[str, object]


def wedding_dates(config: SaturdayConfig, today: date, rng: random.Random) -> list[date]:
    near = round(config.weddings * config.near_share)
    days = [today + timedelta(days=rng.choice(range(8))) for _ in range(near)]
    days += [today + timedelta(days=rng.randint(8, 365)) for _ in range(config.weddings - near)]
    return days


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {source: float(value) for source, value in JOINS.findall(text)}
    warm = re.search(r"^gateway_rooms_warm ([0-9.e+]+)$", text, re.M)
    found["warm"] = float(warm.group(1)) if warm else 0.0
    return found


async def start(env: dict[str, str], workdir: Path, port: int, name: str) -> object:
    log = workdir / f"gateway-{name}.log"
    process = spawn(env | {"GATEWAY_PORT": str(port)}, log)
    async with asyncio.timeout(START_TIMEOUT):
        while not await _listening(port):
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited; see {log}")
            await asyncio.sleep(0.05)  # polling an outside process
    return process


async def stop(process: object) -> None:
    process.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    await asyncio.to_thread(process.wait, 60)  # type: ignore[attr-defined]


async def session(url: str, wedding: str, note: str) -> bool:
    try:
        async with GatewayClient(url, wedding, reconnect=False) as client:
            await client.wait_synced()
            await client.wait_durable(client.set_core(notes=note))
        return True
    except Exception:  # a failed session is counted, the run goes on
        return False


async def seed(url: str, names: list[str], days: list[date], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, day: date) -> None:
        async with gate, GatewayClient(url, name, reconnect=False) as client:
            await client.wait_synced()
            version = client.create_wedding("Ana", "Bea", wedding_date=day.isoformat())
            await client.wait_durable(version)

    await asyncio.gather(*(one(n, d) for n, d in zip(names, days, strict=True)))


async def warm_settled(ports: list[int], expected: int) -> int:
    """Wait (a condition) until the nodes' warm gauges add up to ``expected``, at most 20 s."""
    deadline = time.monotonic() + 20
    warm = 0
    while time.monotonic() < deadline:
        warm = sum(int(scrape(port)["warm"]) for port in ports)
        if warm >= expected:
            break
        await asyncio.sleep(0.2)  # polling an outside process
    return warm


def node_of(config: SaturdayConfig, wedding: str, session_index: int) -> int:
    """Which node a session reaches: by wedding (a proxy hashing the path, deploy/nginx.conf)
    or round-robin (a proxy balancing connections)."""
    if config.routing == "wedding":
        return zlib.crc32(wedding.encode()) % config.nodes
    return session_index % config.nodes


async def migrate(env: dict[str, str]) -> None:
    done = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "migrate", env=env)
    if await done.wait() != 0:
        raise RuntimeError("gateway migrate failed")


async def run(config: SaturdayConfig, env_overrides: dict[str, str]) -> Result:
    if config.nodes > 1 and not (config.redis and config.postgres):
        raise SystemExit("--nodes above 1 needs --redis and --postgres")
    rng = random.Random(config.seed)
    today = datetime.now(UTC).date()
    days = wedding_dates(config, today, rng)
    names = [f"sat-{config.seed}-{i}" for i in range(config.weddings)]
    near = [n for n, d in zip(names, days, strict=True) if d <= today + timedelta(days=7)]
    far = [n for n in names if n not in set(near)]
    weights = [config.today_weight if d == today else 1.0 for n, d in zip(names, days, strict=True)]
    near_weights = [w for n, w in zip(names, weights, strict=True) if n in set(near)]
    run_id = f"sat_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="saturday-") as tmp:
        workdir = Path(tmp)
        env = {
            **os.environ,
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_ROOM_IDLE_SECONDS": str(config.room_idle_seconds),
            "GATEWAY_DRAIN_SPREAD_SECONDS": "0",
        }
        if config.postgres:
            env |= {"GATEWAY_DATABASE_URL": config.postgres, "GATEWAY_DATABASE_SCHEMA": run_id}
        if config.redis:
            env |= {"GATEWAY_REDIS_URL": config.redis, "GATEWAY_REDIS_PREFIX": run_id}
        env |= env_overrides
        if config.postgres:
            await migrate(env)
        ports = [free_port() for _ in range(config.nodes)]
        envs = [
            env | {"GATEWAY_DATA_DIR": str(workdir / f"data-{n}"), "GATEWAY_NODE_ID": f"sat-{n}"}
            for n in range(config.nodes)
        ]
        urls = [f"ws://127.0.0.1:{port}/ws" for port in ports]
        try:
            processes = [
                await start(e, workdir, p, f"seed-{n}")
                for n, (e, p) in enumerate(zip(envs, ports, strict=True))
            ]
            await seed(urls[0], names, days, config.concurrency)
            for process in processes:
                await stop(process)
            processes = [
                await start(e, workdir, p, f"saturday-{n}")
                for n, (e, p) in enumerate(zip(envs, ports, strict=True))
            ]
            try:
                warm_on = env_overrides.get("GATEWAY_WARM_MAX_ROOMS", "1") != "0"
                warm = await warm_settled(ports, len(near)) if warm_on else 0
                before = [scrape(port) for port in ports]
                gate = asyncio.Semaphore(config.concurrency)

                async def one(i: int) -> bool:
                    if near and rng.random() < config.near_activity:
                        wedding = rng.choices(near, near_weights)[0]
                    else:
                        wedding = rng.choice(far)
                    url = urls[node_of(config, wedding, i)]
                    async with gate:
                        return await session(url, wedding, f"session {i}")

                started = time.monotonic()
                outcomes = await asyncio.gather(*(one(i) for i in range(config.sessions)))
                elapsed = time.monotonic() - started
                after = [scrape(port) for port in ports]
            finally:
                for process in processes:
                    await stop(process)
        finally:
            if config.postgres:
                await drop_schema(config.postgres, run_id)
    pairs = list(zip(after, before, strict=True))
    memory = int(sum(a.get("memory", 0) - b.get("memory", 0) for a, b in pairs))
    store = int(sum(a.get("store", 0) - b.get("store", 0) for a, b in pairs))
    return Result(
        hit_ratio=memory / max(1, memory + store),
        joins_from_memory=memory,
        joins_from_store=store,
        sessions=config.sessions,
        failed_sessions=outcomes.count(False),
        near_weddings=len(near),
        far_weddings=len(far),
        warm_rooms_after_restart=warm,
        sessions_seconds=round(elapsed, 2),
        env=env_overrides,
        config=asdict(config),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.saturday", description=__doc__)
    defaults = SaturdayConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    config = SaturdayConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    overrides = dict(item.split("=", 1) for item in args.env)
    result = asyncio.run(run(config, overrides))
    text = json.dumps(asdict(result), indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    verdict = "meets" if result.hit_ratio >= config.target else "MISSES"
    print(
        f"hit ratio {result.hit_ratio:.1%} ({result.joins_from_memory} from memory,"
        f" {result.joins_from_store} loaded) {verdict} the target {config.target:.0%};"
        f" {result.failed_sessions} failed sessions",
        file=sys.stderr,
    )
    return 0 if result.hit_ratio >= config.target and not result.failed_sessions else 1


if __name__ == "__main__":
    sys.exit(main())
