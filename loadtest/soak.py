"""Soak: does the gateway's memory plateau while weddings come and go? (loadtest/README.md)

``python -m loadtest.soak`` starts ``gateway serve`` (one node on the embedded defaults, or two
nodes on ``--redis`` and ``--postgres``) with ``GATEWAY_ROOM_IDLE_SECONDS`` low, and drives
``--clients`` kit clients (``LoadClient``) over rotating weddings: the clients are grouped in
slots of ``--per-wedding``; each slot's wedding lives a fixed time, during which its members edit
at ``--rate``, then they check that each saw every other member's edits (``lost``), leave, and
the slot opens the next wedding — a new one, or (``--revisit``) one left earlier, which the
gateway loads again from its store. ``--churn`` is the weddings replaced per minute over all
slots; the slots' first weddings end at staggered times, so replacements are spread evenly.

Every ``--sample-seconds`` it reads each gateway process's RSS (psutil) and the rooms and
connections it reports (``/metrics``). After the run it fits a line (least squares) to the RSS
samples taken after ``--warmup-minutes`` and reports the slope in MB/h, with the RSS before the
load, at the end of the warm-up and at the end: a JSON report (``--report``) and one line of text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtest.client import LoadClient
from loadtest.config import RunConfig, Scenario
from loadtest.tally import Tally

START_TIMEOUT = 60.0
"""Seconds for a gateway to start listening (hang protection, not a measured bound)."""
SETTLE_TIMEOUT = 15.0
"""Seconds a leaving wedding's members wait for each other's last edits and their acks."""
CLOSE_TIMEOUT = 5.0
"""Seconds to wait for a leaving client's close handshake."""
METRIC = re.compile(rb"^(gateway_rooms|gateway_connections) (\S+)$", re.MULTILINE)
MB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakConfig:
    minutes: float
    clients: int
    per_wedding: int
    churn: float  # weddings replaced per minute, over all slots (0: the first ones stay)
    warmup_minutes: float
    rate: float  # edits/s per client
    revisit: float  # share of new weddings that reopen one left earlier
    room_idle_seconds: float
    sample_seconds: float
    seed: int

    @property
    def slots(self) -> int:
        return max(1, self.clients // self.per_wedding)

    @property
    def lifetime(self) -> float:
        """Seconds each wedding lives (the whole run without churn)."""
        if self.churn <= 0:
            return self.minutes * 60 + 1
        return self.slots / self.churn * 60


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour; None below 2 points."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 3600


# -- the gateways ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    """One ``gateway serve`` child process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        try:
            root = psutil.Process(self.process.pid)
            return int(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:
            return 0


class Gateways(contextlib.AbstractAsyncContextManager["Gateways"]):
    """Starts one node (embedded) or two (Redis + Postgres, a schema and prefix of the run's own),
    and stops them (SIGTERM) at the end."""

    def __init__(
        self,
        config: SoakConfig,
        *,
        redis: str | None,
        postgres: str | None,
        env: dict[str, str],
        workdir: Path,
    ) -> None:
        self.config = config
        self.redis = redis
        self.postgres = postgres
        self.extra_env = env
        self.workdir = workdir
        self.run = f"soak_{secrets.token_hex(5)}"
        self.nodes: list[Gateway] = []

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "GATEWAY_ROOM_IDLE_SECONDS": str(self.config.room_idle_seconds),
            "GATEWAY_LOG_LEVEL": "warning",
        }
        if self.redis:
            env |= {"GATEWAY_REDIS_URL": self.redis, "GATEWAY_REDIS_PREFIX": self.run}
        if self.postgres:
            env |= {"GATEWAY_DATABASE_URL": self.postgres, "GATEWAY_DATABASE_SCHEMA": self.run}
        return env | self.extra_env

    async def __aenter__(self) -> Gateways:
        env = self.env()
        if self.postgres:
            migrate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "migrate", env=env, cwd=self.workdir
            )
            if await migrate.wait() != 0:
                raise RuntimeError("gateway migrate failed")
        names = ["a", "b"] if self.redis and self.postgres else ["a"]
        for name in names:
            port = free_port()
            log = self.workdir / f"gateway-{name}.log"
            node_env = env | {
                "GATEWAY_NODE_ID": f"soak-{name}",
                "GATEWAY_PORT": str(port),
                "GATEWAY_DATA_DIR": str(self.workdir / f"data-{name}"),
            }
            self.nodes.append(Gateway(name, port, spawn(node_env, log), log))
        async with asyncio.timeout(START_TIMEOUT):
            for node in self.nodes:
                while not await _listening(node.port):
                    if node.process.poll() is not None:
                        raise RuntimeError(f"gateway {node.name} exited; see {node.log}")
                    await asyncio.sleep(0.05)  # polling an outside process
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                await asyncio.to_thread(node.process.wait, 30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self.postgres:
            import asyncpg

            conn = await asyncpg.connect(self.postgres)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.run}" CASCADE')
            finally:
                await conn.close()


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``gateway serve`` with ``env``, its output to ``log``.

    It runs in the log's directory: ``python -m`` puts the working directory first on
    ``sys.path``, and the gateway measured must be the installed one, or ``--env PYTHONPATH``'s.
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


# -- the load -------------------------------------------------------------------------------------


@dataclass
class Counts:
    weddings_opened: int = 0
    revisits: int = 0
    weddings_closed: int = 0
    clients_connected: int = 0
    connect_failures: int = 0
    sent: int = 0
    lost: int = 0
    unsettled_weddings: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Soak:
    def __init__(self, config: SoakConfig, urls: list[str]) -> None:
        self.config = config
        self.urls = urls
        self.random = random.Random(config.seed)
        self.run_id = secrets.token_hex(3)
        self.run_config = RunConfig(
            urls=(urls[0],),
            scenario=Scenario.STEADY,
            weddings=1,
            clients=config.per_wedding,
            rate=config.rate,
            duration=config.minutes * 60,
        )
        self.tally = Tally()
        self.counts = Counts()
        self.next_block = 0  # client gids come in consecutive blocks of per_wedding
        self.next_wedding = 0
        self.left: list[str] = []  # weddings left, which a revisit may reopen

    def pick_wedding(self) -> str:
        self.counts.weddings_opened += 1
        if self.left and self.random.random() < self.config.revisit:
            self.counts.revisits += 1
            return self.left.pop(self.random.randrange(len(self.left)))
        self.next_wedding += 1
        return f"soak-{self.run_id}-{self.next_wedding}"

    async def run(self, end: float) -> None:
        """Run every slot until ``end`` (loop time); each finishes the wedding it is in."""
        async with asyncio.TaskGroup() as tg:
            for slot in range(self.config.slots):
                tg.create_task(self.slot(slot, end))

    async def slot(self, slot: int, end: float) -> None:
        loop = asyncio.get_running_loop()
        lifetime = self.config.lifetime
        first = lifetime * (slot + 1) / self.config.slots  # staggered: even replacements
        until = loop.time() + first
        while loop.time() < end:
            wedding = self.pick_wedding()
            await self.wedding(wedding, min(until, end))
            until = loop.time() + lifetime

    async def wedding(self, wedding: str, until: float) -> None:
        block = self.next_block
        self.next_block += 1
        per = self.config.per_wedding
        clients = [LoadClient(block * per + i, self.run_config, self.tally) for i in range(per)]
        for i, client in enumerate(clients):
            client.url = f"{self.urls[i % len(self.urls)].rstrip('/')}/{wedding}"
        results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.counts.connect_failures += 1
                self._error(f"connect_{type(result).__name__}")
            else:
                self.counts.clients_connected += 1
        try:
            async with asyncio.TaskGroup() as tg:
                for client in clients:
                    if client.live:
                        tg.create_task(self.edit(client, until))
            await self.settle(clients)
        finally:
            for client in clients:
                client.drop(abort=False)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    for client in clients:
                        await client.closed.wait()
            for client in clients:
                client.dispose()
            self.counts.weddings_closed += 1
            self.left.append(wedding)

    async def edit(self, client: LoadClient, until: float) -> None:
        loop = asyncio.get_running_loop()
        period = 1 / self.config.rate
        await asyncio.sleep(self.random.uniform(0, period))  # random phase
        while loop.time() < until and client.live:
            client.edit(time.monotonic_ns())
            self.counts.sent += 1
            await asyncio.sleep(period)  # the load's pace

    async def settle(self, clients: list[LoadClient]) -> None:
        """Wait until each member saw every other member's edits and got its acks; count lost."""
        sent = {c.gid: c.edit_seq for c in clients}

        def missing(client: LoadClient) -> int:
            client.catch_up()
            return sum(
                max(0, count - client.seen_max.get(gid, 0))
                for gid, count in sent.items()
                if gid != client.gid
            )

        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            if all(missing(c) == 0 and not c.pending_acks for c in clients if c.live):
                return
            await asyncio.sleep(0.05)  # polls a condition: every member settled
        self.counts.unsettled_weddings += 1
        self.counts.lost += sum(missing(c) for c in clients if c.live)

    def _error(self, key: str) -> None:
        self.counts.errors[key] = self.counts.errors.get(key, 0) + 1


# -- sampling and the report -----------------------------------------------------------------------


async def scrape(http: httpx.AsyncClient, node: Gateway) -> dict[str, float]:
    try:
        response = await http.get(f"{node.http}/metrics")
    except httpx.HTTPError:
        return {}
    return {m[1].decode(): float(m[2]) for m in METRIC.finditer(response.content)}


async def sample_until(
    gateways: list[Gateway], every: float, stop: asyncio.Event, samples: list[dict[str, Any]]
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_print = 60.0
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            t = loop.time() - started
            rss = [node.rss() for node in gateways]
            metrics = [await scrape(http, node) for node in gateways]
            samples.append(
                {
                    "t": round(t, 2),
                    "rss": rss,
                    "rooms": [m.get("gateway_rooms") for m in metrics],
                    "connections": [m.get("gateway_connections") for m in metrics],
                }
            )
            if t >= next_print:
                next_print += 60.0
                text = ", ".join(f"{r / MB:.1f} MB" for r in rss)
                rooms = [m.get("gateway_rooms") for m in metrics]
                print(f"[{t / 60:5.1f} min] RSS {text}; rooms {rooms}", file=sys.stderr)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()
                    return


def build_report(
    config: SoakConfig,
    samples: list[dict[str, Any]],
    counts: Counts,
    nodes: list[Gateway],
    before: list[int],
    mode: str,
    env: dict[str, str],
) -> dict[str, Any]:
    warmup = config.warmup_minutes * 60
    after = [s for s in samples if s["t"] >= warmup]
    per_node = []
    for i, node in enumerate(nodes):
        points = [(s["t"], s["rss"][i] / MB) for s in after if s["rss"][i]]
        slope = slope_per_hour(points)
        per_node.append(
            {
                "node": node.name,
                "rss_mb_before_load": round(before[i] / MB, 2),
                "rss_mb_after_warmup": round(after[0]["rss"][i] / MB, 2) if after else None,
                "rss_mb_end": round(samples[-1]["rss"][i] / MB, 2) if samples else None,
                "rss_mb_max": round(max(s["rss"][i] for s in samples) / MB, 2) if samples else None,
                "slope_mb_per_h": None if slope is None else round(slope, 2),
            }
        )
    total = slope_per_hour([(s["t"], sum(s["rss"]) / MB) for s in after])
    return {
        "mode": mode,
        "config": {
            "minutes": config.minutes,
            "clients": config.clients,
            "per_wedding": config.per_wedding,
            "churn_per_min": config.churn,
            "wedding_lifetime_s": round(config.lifetime, 1),
            "warmup_minutes": config.warmup_minutes,
            "rate": config.rate,
            "revisit": config.revisit,
            "room_idle_seconds": config.room_idle_seconds,
            "sample_seconds": config.sample_seconds,
            "gateway_env": env,
        },
        "slope_mb_per_h": None if total is None else round(total, 2),
        "samples_after_warmup": len(after),
        "nodes": per_node,
        "counts": counts.__dict__,
        "samples": samples,
    }


def summary(report: dict[str, Any]) -> str:
    c, counts = report["config"], report["counts"]
    nodes = "; ".join(
        f"{n['node']}: {n['rss_mb_before_load']} → {n['rss_mb_after_warmup']}"
        f" → {n['rss_mb_end']} MB"
        for n in report["nodes"]
    )
    slope = report["slope_mb_per_h"]
    slope_text = "n/a" if slope is None else f"{slope:+.2f} MB/h"
    return (
        f"soak {report['mode']}: {c['minutes']:g} min, {c['clients']} clients, churn"
        f" {c['churn_per_min']:g}/min: RSS (before load → after {c['warmup_minutes']:g}-min"
        f" warm-up → end) {nodes}; slope after warm-up {slope_text};"
        f" {counts['weddings_opened']} weddings ({counts['revisits']} revisits),"
        f" {counts['sent']} edits, {counts['lost']} lost,"
        f" {counts['connect_failures']} connect failures"
    )


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    config = SoakConfig(
        minutes=args.minutes,
        clients=args.clients,
        per_wedding=args.per_wedding,
        churn=args.churn,
        warmup_minutes=args.warmup_minutes,
        rate=args.rate,
        revisit=args.revisit,
        room_idle_seconds=args.room_idle_seconds,
        sample_seconds=args.sample_seconds,
        seed=args.seed,
    )
    env = dict(item.split("=", 1) for item in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="wedsync-soak-"))
    print(f"soak: gateway logs and data in {workdir}", file=sys.stderr)
    mode = "redis+postgres, 2 nodes" if args.redis and args.postgres else "embedded, 1 node"
    async with Gateways(
        config, redis=args.redis, postgres=args.postgres, env=env, workdir=workdir
    ) as gateways:
        nodes = gateways.nodes
        before = [node.rss() for node in nodes]
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_until(nodes, config.sample_seconds, stop, samples))
        load = Soak(config, [node.url for node in nodes])
        end = asyncio.get_running_loop().time() + config.minutes * 60
        try:
            await load.run(end)
        finally:
            stop.set()
            await sampler
        for node in nodes:
            if node.process.poll() is not None:
                load.counts.errors["gateway_exited"] = node.process.returncode or -1
    return build_report(config, samples, load.counts, nodes, before, mode, env)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    p.add_argument("--clients", type=int, default=100, help="clients connected at any time")
    p.add_argument("--per-wedding", type=int, default=4, help="clients per wedding")
    p.add_argument("--churn", type=float, default=10.0, help="weddings replaced per minute")
    p.add_argument("--warmup-minutes", type=float, default=5.0, help="samples before: no slope")
    p.add_argument("--rate", type=float, default=1.0, help="edits/s per client")
    p.add_argument(
        "--revisit", type=float, default=0.2, help="share of new weddings reopening a left one"
    )
    p.add_argument("--room-idle-seconds", type=float, default=2.0, help="GATEWAY_ROOM_IDLE_SECONDS")
    p.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period")
    p.add_argument("--redis", metavar="URL", help="Redis bus (with --postgres: two nodes)")
    p.add_argument("--postgres", metavar="DSN", help="Postgres store (with --redis: two nodes)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the gateways, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.redis) != bool(args.postgres):
        parser().error("--redis and --postgres go together (two nodes), or neither (embedded)")
    if any("=" not in item for item in args.env):
        parser().error("--env takes KEY=VALUE")
    import uvloop

    report = uvloop.run(soak(args))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
