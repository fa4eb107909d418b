"""One fault run's world: its services, its gateway nodes, its weddings and their writers.

``World.open`` starts what the nemesis needs (``Needs``) and registers every cleanup on the
caller's exit stack: node processes, proxies, the run's own Redis / Postgres cluster / tmpfs,
and the run's schema on the shared Postgres.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

import httpx

from gateway_client import GatewayClient
from loadtest.faults import services
from loadtest.faults.checker import postgres_doc, sqlite_doc
from loadtest.faults.cluster import (
    Node,
    ServicePaths,
    documented_settings,
    migrate,
    owner_of,
    readyz,
    target_of,
    via,
)
from loadtest.faults.proxy import TcpProxy
from loadtest.faults.recorder import Writer, capped_backoff, doc_json
from loadtest.faults.tier import Tier

POLL = 0.05
"""Seconds between two looks at an outside process or at the replicas."""
JOIN_TIMEOUT = 15.0
"""Seconds a new client may take to sync (or a new wedding to be durable) after the heal."""


@dataclass(frozen=True, slots=True)
class Needs:
    """Which services a nemesis needs: shared ones, its own processes, or none (embedded)."""

    redis: Literal["shared", "own", "none"] = "shared"
    postgres: Literal["shared", "own", "none"] = "shared"
    tmpfs: bool = False


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll ``check`` until true (True) or ``timeout`` seconds passed (False)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await check():
                    return True
                await asyncio.sleep(POLL)  # polling outside processes and replicas
    except TimeoutError:
        return False


@dataclass
class World:
    tier: Tier
    dir: Path
    http: httpx.AsyncClient
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    writers: list[Writer] = field(default_factory=list)
    room: str = "fault-wedding"
    dsn: str | None = None
    schema: str = ""
    sqlite: Path | None = None
    redis: services.OwnRedis | None = None
    postgres: services.OwnPostgres | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Figures a nemesis adds to the report."""
    stopped: bool = False
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, stack: AsyncExitStack, tier: Tier, needs: Needs, dir: Path) -> World:
        await asyncio.to_thread(dir.mkdir, parents=True, exist_ok=True)
        http = await stack.enter_async_context(httpx.AsyncClient())
        world = cls(tier=tier, dir=dir, http=http, env=cls._base_env(tier), stack=stack)
        redis_url = await world._open_redis(needs)
        await world._open_store(needs)
        count = 1 if needs.postgres == "none" else tier.nodes
        for n in range(count):
            await world._add_node(chr(ord("a") + n), redis_url)
        stack.push_async_callback(world.stop_nodes)
        for node in world.nodes:
            node.spawn()
        for node in world.nodes:
            await node.wait_listening()
        return world

    @staticmethod
    def _base_env(tier: Tier) -> dict[str, str]:
        env = {
            "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LEASE_SECONDS": str(tier.lease_seconds),
            "GATEWAY_DATABASE_TIMEOUT": str(tier.database_timeout),
            "GATEWAY_WS_PING_INTERVAL": str(tier.ping_interval),
            "GATEWAY_ROOM_IDLE_SECONDS": "5",
        }
        if "GATEWAY_WS_PING_TIMEOUT" in documented_settings():
            env["GATEWAY_WS_PING_TIMEOUT"] = str(tier.ping_timeout)
        return env

    @property
    def ping_timeout(self) -> float:
        """The gateway's pong deadline: the setting when it exists, else uvicorn's 20 s."""
        return float(self.env.get("GATEWAY_WS_PING_TIMEOUT", 20.0))

    async def _open_redis(self, needs: Needs) -> str | None:
        if needs.redis == "none":
            return None
        if needs.redis == "own":
            self.redis = await self.stack.enter_async_context(services.OwnRedis())
            return self.redis.url
        self.env["GATEWAY_REDIS_PREFIX"] = f"faults-{uuid4().hex[:10]}"
        return services.SHARED_REDIS

    async def _open_store(self, needs: Needs) -> None:
        if needs.postgres == "none":
            data = self.dir / "data"
            await asyncio.to_thread(data.mkdir, exist_ok=True)
            if needs.tmpfs:
                await self._mount_tmpfs(data)
            self.env["GATEWAY_DATA_DIR"] = str(data)
            self.sqlite = data / "gateway.sqlite3"
            return
        if needs.postgres == "own":
            self.postgres = await self.stack.enter_async_context(services.OwnPostgres())
            self.dsn = self.postgres.dsn
        else:
            self.dsn = services.SHARED_DSN
        self.schema = f"faults_{uuid4().hex[:10]}"
        self.stack.push_async_callback(services.drop_schema, self.dsn, self.schema)
        await migrate({"GATEWAY_DATABASE_URL": self.dsn, "GATEWAY_DATABASE_SCHEMA": self.schema})
        self.env["GATEWAY_DATABASE_SCHEMA"] = self.schema

    async def _mount_tmpfs(self, data: Path) -> None:
        size = f"size={self.tier.disk_mb}m"
        command = ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(data)]
        await asyncio.to_thread(subprocess.run, command, check=True)
        self.stack.callback(subprocess.run, ["umount", "-l", str(data)], check=False)

    async def _add_node(self, name: str, redis_url: str | None) -> None:
        paths = ServicePaths()
        env = {**self.env, "GATEWAY_DATA_DIR": self.env.get("GATEWAY_DATA_DIR", "")}
        if not env["GATEWAY_DATA_DIR"]:
            env["GATEWAY_DATA_DIR"] = str(self.dir / f"data-{name}")
        if redis_url is not None:
            paths.redis = await self._proxy(redis_url)
            env["GATEWAY_REDIS_URL"] = via(redis_url, paths.redis)
        if self.dsn is not None:
            paths.postgres = await self._proxy(self.dsn)
            env["GATEWAY_DATABASE_URL"] = via(self.dsn, paths.postgres)
        node = Node(name, env, self.dir / f"{name}.log", paths, front=TcpProxy("", 0))
        node.front = await self._proxy(f"ws://127.0.0.1:{node.port}")
        self.nodes.append(node)

    async def _proxy(self, url: str) -> TcpProxy:
        proxy = await self.stack.enter_async_context(TcpProxy(*target_of(url)))
        return proxy

    # -- nodes -------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def owner(self) -> Node:
        """The main wedding's owner (the only node, embedded)."""
        if len(self.nodes) == 1:
            return self.nodes[0]
        name = await owner_of(self.http, self.nodes, self.room)
        if name is None:
            raise RuntimeError(f"no node owns {self.room}")
        return self.node(name)

    async def stop_nodes(self) -> None:
        """SIGTERM every node (a drain); a node that had already exited is a failure."""
        if self.stopped:
            return
        self.stopped = True
        for node in self.nodes:
            if node.process is not None and not node.running():
                self.failures.append(f"node {node.name} exited by itself")
        for node in self.nodes:
            await asyncio.to_thread(node.terminate)

    # -- clients -----------------------------------------------------------------------------

    def urls_from(self, index: int) -> list[str]:
        """Every node's client URL, starting with node ``index``'s (reconnects rotate)."""
        urls = [node.ws_url for node in self.nodes]
        index %= len(urls)
        return urls[index:] + urls[:index]

    async def add_writer(self, name: str, room: str, index: int) -> Writer:
        writer = Writer(name, room, self.urls_from(index), self.tier.interval)
        await self.stack.enter_async_context(writer.client)
        self.writers.append(writer)
        return writer

    async def create_wedding(self) -> None:
        creator = await self.add_writer("creator", self.room, 0)
        await creator.client.wait_synced()
        creator.create_wedding()
        await creator.client.wait_durable()
        for n in range(self.tier.writers):
            writer = await self.add_writer(f"w{n}", self.room, n)
            await writer.client.wait_synced()

    # -- checks after the heal -----------------------------------------------------------------

    def rooms(self) -> dict[str, list[Writer]]:
        rooms: dict[str, list[Writer]] = {}
        for writer in self.writers:
            rooms.setdefault(writer.room, []).append(writer)
        return rooms

    def converged(self, before: float | None = None) -> bool:
        """Every edit (made before ``before``, if given) is acked and in every replica of its
        wedding; without ``before`` also: every replica of a wedding is identical."""
        for writers in self.rooms().values():
            contents = [doc_json(w.client.doc) for w in writers]
            ids = [{e.get("id") for e in c["timeline"]} for c in contents]
            for writer in writers:
                for edit in writer.edits:
                    if before is not None and edit.sent >= before:
                        continue
                    if edit.acked is None:
                        return False
                    if edit.entry is not None and any(edit.entry not in i for i in ids):
                        return False
            if before is None and any(c != contents[0] for c in contents):
                return False
        return True

    def divergence(self) -> str:
        """What keeps the replicas apart, in a few words: per replica that lacks acknowledged
        entries, how many and an example; and how many distinct contents each wedding has."""
        parts: list[str] = []
        for room, writers in self.rooms().items():
            contents = [doc_json(w.client.doc) for w in writers]
            acked = {e.entry for w in writers for e in w.edits if e.acked and e.entry}
            for writer, content in zip(writers, contents, strict=True):
                missing = sorted(acked - {e.get("id") for e in content["timeline"]})
                if missing:
                    parts.append(
                        f"{writer.name} (on {writer.client.url}) lacks {len(missing)}"
                        f" acknowledged entries (e.g. {missing[0]})"
                    )
            distinct = len({json.dumps(c, sort_keys=True) for c in contents})
            if distinct > 1:
                parts.append(f"{room}: {distinct} distinct replicas of {len(contents)}")
        return "; ".join(parts[:8]) + (f"; {len(parts) - 8} more" if len(parts) > 8 else "")

    async def ready(self) -> dict[str, int]:
        return {node.name: await readyz(self.http, node) for node in self.nodes}

    async def new_joins_work(self) -> list[str]:
        """Per node: a new client of the main wedding syncs to what the writers hold, and a
        new wedding is created and acknowledged. Returns the failures."""
        failures = []
        expected = doc_json(self.writers[0].client.doc)
        for node in self.nodes:
            try:
                async with asyncio.timeout(JOIN_TIMEOUT):
                    await self._join(node, expected)
            except TimeoutError:
                failures.append(f"a new join on node {node.name} did not sync")
            except AssertionError as exc:
                failures.append(f"node {node.name}: {exc}")
        return failures

    async def _join(self, node: Node, expected: dict[str, Any]) -> None:
        async with GatewayClient(node.direct_ws_url, self.room, delays=capped_backoff()) as c:
            await c.wait_synced()
            assert doc_json(c.doc) == expected, "a new join got a document unlike the writers'"
        room = f"join-{node.name}-{uuid4().hex[:6]}"
        async with GatewayClient(node.direct_ws_url, room, delays=capped_backoff()) as c:
            await c.wait_synced()
            await c.wait_durable(c.create_wedding(partner_a="Cy", partner_b="Di"))

    async def stored(self, room: str) -> dict[str, Any]:
        if self.sqlite is not None:
            return await asyncio.to_thread(sqlite_doc, self.sqlite, room)
        assert self.dsn is not None
        return await postgres_doc(self.dsn, self.schema, room)


def now() -> float:
    return time.monotonic()


def is_root() -> bool:
    return os.geteuid() == 0
