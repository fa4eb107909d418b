"""The faults: each a ``Nemesis`` with ``inject``, ``hold`` and ``heal``.

Every nemesis acts only on processes the suite started (its gateway nodes, its own
redis-server and Postgres cluster, its proxies, its tmpfs) or on the run's own schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from loadtest.faults.env import Needs, World, now, until
from loadtest.faults.rawclients import RawClient, still_open
from loadtest.faults.recorder import Writer

CLOSE_SLACK_SECONDS = 2.0
"""Beyond ping interval + ping timeout, time allowed for a non-reader's close itself (the
timer firing on a busy event loop, the abort): the bound follows from settings, not speed."""


@dataclass
class Nemesis:
    """A fault. ``prepare`` runs before the load, ``inject`` starts the fault, ``hold`` keeps it
    (by default ``tier.fault_seconds``), ``heal`` ends it."""

    name: str
    doc: str
    needs: Needs = field(default_factory=Needs)
    state: dict[str, Any] = field(default_factory=dict)

    async def prepare(self, world: World) -> None:
        del world

    async def inject(self, world: World) -> None:
        raise NotImplementedError

    async def hold(self, world: World) -> None:
        await asyncio.sleep(world.tier.fault_seconds)  # a fault lasts this long, by design

    async def heal(self, world: World) -> None:
        raise NotImplementedError


class KillOwner(Nemesis):
    async def inject(self, world: World) -> None:
        owner = await world.owner()
        self.state["node"] = owner.name
        world.notes.append(f"killed {owner.name} (owner)")
        owner.kill()

    async def heal(self, world: World) -> None:
        node = world.node(self.state["node"])
        node.spawn()
        await node.wait_listening()


class PauseOwner(Nemesis):
    async def inject(self, world: World) -> None:
        owner = await world.owner()
        self.state["node"] = owner.name
        world.notes.append(f"paused {owner.name} (owner)")
        owner.signal(signal.SIGSTOP)

    async def hold(self, world: World) -> None:
        lapse = 2 * world.tier.lease_seconds + 1.0  # past the lease: another node takes over
        await asyncio.sleep(max(world.tier.fault_seconds, lapse))  # the pause, by design

    async def heal(self, world: World) -> None:
        world.node(self.state["node"]).signal(signal.SIGCONT)


class RedisRestart(Nemesis):
    async def inject(self, world: World) -> None:
        assert world.redis is not None
        world.redis.stop()

    async def heal(self, world: World) -> None:
        assert world.redis is not None
        await world.redis.start()


class RedisStall(Nemesis):
    async def inject(self, world: World) -> None:
        assert world.redis is not None
        world.redis.pause()

    async def heal(self, world: World) -> None:
        assert world.redis is not None
        world.redis.resume()


class PostgresRestart(Nemesis):
    async def inject(self, world: World) -> None:
        assert world.postgres is not None
        await world.postgres.stop()

    async def heal(self, world: World) -> None:
        assert world.postgres is not None
        await world.postgres.start_again()


class TableLock(Nemesis):
    """``LOCK TABLE <schema>.updates IN ACCESS EXCLUSIVE MODE`` in an open transaction; while
    it holds, new clients create new weddings on every node (their loads wait on the lock)."""

    async def inject(self, world: World) -> None:
        assert world.dsn is not None
        conn = await asyncpg.connect(world.dsn)
        self.state["conn"] = conn
        await conn.execute("BEGIN")
        await conn.execute(f'LOCK TABLE "{world.schema}".updates IN ACCESS EXCLUSIVE MODE')

    async def hold(self, world: World) -> None:
        held = max(world.tier.fault_seconds, 2 * world.tier.database_timeout + 1.0)
        for n in range(world.tier.joiners):
            writer = await world.add_writer(f"j{n}", f"lock-join-{n}", n)
            writer.create_wedding()
            writer.edit()
        world.notes.append(f"{world.tier.joiners} new weddings created under the lock")
        await asyncio.sleep(held)  # the lock holds this long, by design

    async def heal(self, world: World) -> None:
        conn: asyncpg.Connection = self.state.pop("conn")
        await conn.execute("ROLLBACK")
        await conn.close()


class Partition(Nemesis):
    """Cut one node off a service through its proxy: the owner from Postgres, or a relaying
    node from Redis (``service``)."""

    service: str = "postgres"

    async def inject(self, world: World) -> None:
        owner = await world.owner()
        node = owner
        if self.service == "redis":
            node = next(n for n in world.nodes if n is not owner)
        self.state["node"] = node.name
        world.notes.append(f"{node.name} cut off {self.service}")
        proxy = node.paths.postgres if self.service == "postgres" else node.paths.redis
        assert proxy is not None
        self.state["proxy"] = proxy
        await proxy.partition()

    async def heal(self, world: World) -> None:
        await self.state["proxy"].heal()


class PartitionRedis(Partition):
    service = "redis"


class DiskFull(Nemesis):
    """Fill the embedded store's tmpfs with a file, then delete it."""

    async def inject(self, world: World) -> None:
        assert world.sqlite is not None
        filler = world.sqlite.parent / "filler"
        self.state["filler"] = filler
        written = await asyncio.to_thread(_fill, filler)
        world.notes.append(f"tmpfs {world.tier.disk_mb} MB filled ({written // 2**20} MB)")

    async def heal(self, world: World) -> None:
        self.state["filler"].unlink(missing_ok=True)


def _fill(path: Any) -> int:
    """Write zeros to ``path`` until the disk is full (ENOSPC); return how many bytes."""
    written = 0
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as file:
        while True:  # unbuffered: closing the file has nothing left to flush into a full disk
            written += file.write(chunk) or 0
    return written


class NonReaders(Nemesis):
    """Raw clients of the main wedding on the owner that never read, and slow readers; the
    gateway must close every non-reader within ping interval + ping timeout (+ slack)."""

    async def inject(self, world: World) -> None:
        node = await world.owner()
        url = f"{node.direct_ws_url}/{world.room}"
        readers = [RawClient(url) for _ in range(world.tier.non_readers)]
        slow = [RawClient(url) for _ in range(world.tier.slow_readers)]
        for client in readers + slow:
            await client.open()
        self.state.update(node=node, readers=readers, slow=slow, opened=now())
        self.state["tasks"] = [asyncio.create_task(c.read_slowly()) for c in slow]

    async def hold(self, world: World) -> None:
        bound = world.tier.ping_interval + world.ping_timeout + CLOSE_SLACK_SECONDS
        node, readers, opened = self.state["node"], self.state["readers"], self.state["opened"]

        async def closed() -> bool:
            return not still_open(node.pid, readers)

        deadline = max(bound * 2, world.tier.fault_seconds)
        await until(closed, deadline - (now() - opened))
        took = now() - opened
        left = len(still_open(node.pid, readers))
        world.extra["non_readers"] = {"bound_s": bound, "closed_after_s": round(took, 2)}
        world.extra["non_readers"]["still_open"] = left
        if left or took > bound:
            world.failures.append(
                f"{left} of {len(readers)} non-reading clients still open after {took:.1f} s"
                f" (bound {bound:.1f} s = ping interval + ping timeout + slack)"
                if left
                else f"non-reading clients closed after {took:.1f} s, past the bound {bound:.1f} s"
            )

    async def heal(self, world: World) -> None:
        for task in self.state["tasks"]:
            task.cancel()
        for client in self.state["readers"] + self.state["slow"]:
            client.close()


class ReconnectStorm(Nemesis):
    """``storm_clients`` more clients of the main wedding; then every client connection on
    every node's front proxy is dropped at once, and all reconnect."""

    async def prepare(self, world: World) -> None:
        observers: list[Writer] = []
        for n in range(world.tier.storm_clients):
            observers.append(await world.add_writer(f"o{n}", world.room, n))
        for observer in observers:
            await observer.client.wait_synced()

    async def inject(self, world: World) -> None:
        dropped = [await node.front.drop() for node in world.nodes]
        world.notes.append(f"dropped {sum(dropped)} client connections at once")

    async def hold(self, world: World) -> None:
        del world

    async def heal(self, world: World) -> None:
        del world


OWN_REDIS = Needs(redis="own")
OWN_POSTGRES = Needs(postgres="own")
EMBEDDED = Needs(redis="none", postgres="none", tmpfs=True)

NEMESES: list[Nemesis] = [
    KillOwner("kill-owner", "kill -9 of the wedding owner's node; restarted after"),
    PauseOwner("pause-owner", "SIGSTOP of the owner's node past its lease, then SIGCONT"),
    RedisRestart("redis-restart", "the suite's redis-server killed, started again", OWN_REDIS),
    RedisStall("redis-stall", "the suite's redis-server SIGSTOPped, then SIGCONT", OWN_REDIS),
    TableLock("table-lock", "ACCESS EXCLUSIVE lock on the run's updates table; new weddings"),
    PostgresRestart(
        "postgres-restart", "the suite's Postgres stopped (fast), started", OWN_POSTGRES
    ),
    Partition("partition-postgres", "the owner's node cut off Postgres (its proxy refuses)"),
    PartitionRedis("partition-redis", "a relaying node cut off Redis (its proxy refuses)"),
    DiskFull("disk-full", "embedded node: its SQLite tmpfs filled, then freed", EMBEDDED),
    NonReaders("non-readers", "raw clients that never read, and slow readers, on the owner"),
    ReconnectStorm("reconnect-storm", "every client connection dropped at once; all reconnect"),
]
