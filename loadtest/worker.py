"""A worker process: one uvloop event loop driving a share of the clients.

The parent speaks to it over a pipe, in phases:
``connect`` → ("ready") → ``start t0`` → ("tick" each second) … ("sent") → ``expect sent`` →
("final") → ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import random
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from loadtest.client import LoadClient
from loadtest.config import RunConfig, Scenario
from loadtest.stats import record_us
from loadtest.tally import Tally

CLOSE_TIMEOUT = 5.0


def worker_main(index: int, config: RunConfig, pipe: Connection) -> None:
    """Process entry point (multiprocessing spawn)."""
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the parent too; it reports
        uvloop.run(Worker(index, config, pipe).run())


class Worker:
    def __init__(self, index: int, config: RunConfig, pipe: Connection) -> None:
        self.index = index
        self.config = config
        self.pipe = pipe
        self.tally = Tally()
        self.random = random.Random(config.seed * 1000 + index)
        gids = range(index, config.total_clients, config.workers)
        self.clients = [LoadClient(gid, config, self.tally) for gid in gids]
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.t0 = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The pipe is read on a thread of its own, never registered with the loop: uvloop makes
        # a registered fd non-blocking, and multiprocessing's send and recv of a message larger
        # than the pipe's buffer then fail with BlockingIOError (10,000 clients' counts).
        threading.Thread(target=self._read_pipe, args=(loop,), daemon=True).start()
        await self._expect_command("connect")
        concurrency = 0 if self.config.scenario is Scenario.JOIN_STORM else None
        failed = await self._connect_all(self.clients, concurrency, self.tally.initial_sync)
        # The generator's own GC pauses would show up as latency: freeze what exists now (docs,
        # sockets) and collect the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        self.pipe.send(("ready", {"failed": failed}))
        self.t0 = int(await self._expect_command("start"))
        self.tally.load_start = self._wire_counts()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._ticks())
            await self._run_scenario(tg)
        self.pipe.send(("sent", {c.gid: c.edit_seq for c in self.clients}))
        sent: dict[int, int] = await self._expect_command("expect")
        await self._settle(sent)
        self.pipe.send(("final", self._final()))
        await self._expect_command("close")
        await self._close_all()

    # -- the parent's commands ---------------------------------------------------------------------

    def _read_pipe(self, loop: asyncio.AbstractEventLoop) -> None:
        """The parent's commands, into ``inbox`` (runs on its own thread)."""
        while True:
            try:
                command = self.pipe.recv()
            except (EOFError, OSError):
                command = ("close", None)  # the parent is gone
            loop.call_soon_threadsafe(self.inbox.put_nowait, command)
            if command[0] == "close":
                return

    async def _expect_command(self, name: str) -> Any:
        command, payload = await self.inbox.get()
        if command == "close" and name != "close":
            raise SystemExit(0)  # the parent gave up on the run
        if command != name:
            raise RuntimeError(f"worker {self.index} expected {name!r}, got {command!r}")
        return payload

    # -- connecting --------------------------------------------------------------------------------

    async def _connect_all(
        self, clients: list[LoadClient], concurrency: int | None, into: Any
    ) -> int:
        """Connect clients, ``concurrency`` at a time (0 = all at once); returns the failures."""
        limit = self.config.connect_concurrency if concurrency is None else concurrency
        gate = asyncio.Semaphore(limit or len(clients) or 1)
        failed = 0

        async def one(client: LoadClient) -> None:
            nonlocal failed
            async with gate:
                if not await self._connect(client, into):
                    failed += 1

        async with asyncio.TaskGroup() as tg:
            for client in clients:
                tg.create_task(one(client))
        return failed

    async def _connect(self, client: LoadClient, into: Any) -> bool:
        try:
            connect_us, sync_us = await client.connect()
        except Exception as exc:  # any failure to connect is a measured error, not a crash
            self.tally.errors[f"connect_{type(exc).__name__}"] += 1
            client.drop(abort=True)
            return False
        record_us(self.tally.connect, connect_us)
        record_us(into, sync_us)
        return True

    # -- the scenario ------------------------------------------------------------------------------

    async def _run_scenario(self, tg: asyncio.TaskGroup) -> None:
        config = self.config
        end = self.t0 + int(config.duration * 1e9)
        if config.scenario is Scenario.RECONNECT_STORM:
            tg.create_task(self._reconnect_storm())
        if config.scenario is Scenario.OFFLINE_RESUME:
            for client in self.clients:
                if client.is_resumer:
                    tg.create_task(self._offline_resume(client))
        if config.edits:
            await self._edit_until(end)
        else:
            await _sleep_until(end)

    async def _edit_until(self, end: int) -> None:
        """Open model: each client edits on a fixed schedule, whatever the server does."""
        config, tally = self.config, self.tally
        t0 = self.t0
        period = 1e9 / config.rate
        schedule = [(t0 + int(self.random.uniform(0, period)), c.gid) for c in self.clients]
        by_gid = {c.gid: c for c in self.clients}
        heapq.heapify(schedule)
        while schedule:
            intended, gid = schedule[0]
            if intended >= end:
                return
            now = time.monotonic_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
                continue
            client = by_gid[gid]
            if client.live:
                client.edit(intended)
                record_us(tally.send_lag, (now - intended) // 1000)
            else:
                tally.skipped_offline += 1
            step = int(1e9 / config.rate_at((intended - t0) / 1e9))
            heapq.heapreplace(schedule, (intended + step, gid))

    async def _reconnect_storm(self) -> None:
        """Every client drops its connection at once, then reconnects after a random delay."""
        await _sleep_until(self.t0 + int(self.config.drop_at * 1e9))
        for client in self.clients:
            client.drop(abort=True)
        async with asyncio.TaskGroup() as tg:
            for client in self.clients:
                delay = self.random.uniform(0, self.config.jitter)
                tg.create_task(self._reconnect_later(client, delay))

    async def _reconnect_later(self, client: LoadClient, delay: float) -> None:
        await asyncio.sleep(delay)  # the storm's shape: a jittered reconnect, not a sync wait
        await self._connect(client, self.tally.reconnect)

    async def _offline_resume(self, client: LoadClient) -> None:
        """The client misses edits while offline, then resumes; measures bytes and time."""
        client.drop(abort=False)
        await _sleep_until(self.t0 + int(self.config.offline_seconds * 1e9))
        covered_before = client.covered
        started = time.monotonic_ns()
        if not await self._connect(client, self.tally.reconnect):
            return
        conn = client.conn
        self.tally.resumes.append(
            {
                "missed_edits": client.covered - covered_before,
                "bytes_in": conn.bytes_in if conn else 0,
                "payload_bytes": client.catch_up_bytes,
                "ms": round((time.monotonic_ns() - started) / 1e6, 3),
            }
        )

    async def _ticks(self) -> None:
        """A progress report to the parent at t0 + 1 s, + 2 s, …"""
        end = self.t0 + int(self.config.duration * 1e9)
        second = 1
        while True:
            at = self.t0 + second * 1_000_000_000
            await _sleep_until(min(at, end))
            self.pipe.send(("tick", {"second": second, **self.tally.tick()}))
            if at >= end:
                return
            second += 1

    # -- the end of the run ------------------------------------------------------------------------

    async def _settle(self, sent: dict[int, int]) -> None:
        """Wait until every delivery and ack has arrived, or the settle timeout passes."""
        for client in self.clients:
            client.expect(sent)
        deadline = time.monotonic() + self.config.settle_timeout
        while time.monotonic() < deadline:
            for client in self.clients:
                if not client.settled:
                    client.catch_up()
            if all(c.settled for c in self.clients):
                return
            await asyncio.sleep(0.01)  # polls a condition: every client settled

    def _final(self) -> dict[str, Any]:
        clients = {
            c.gid: {
                "covered": c.covered,
                "expected": c.expected,
                "digest": c.digest(),
                "live": c.live,
            }
            for c in self.clients
        }
        tally = self.tally.final()
        for client in self.clients:
            if client.conn is not None:  # still open: count its bytes and what it still awaits
                tally["bytes_in"] += client.conn.bytes_in
                tally["bytes_out"] += client.conn.bytes_out
                tally["unacked"] += len(client.pending_acks)
        return {"tally": tally, "clients": clients}

    def _wire_counts(self) -> dict[str, int]:
        """Bytes and messages moved so far, closed connections included."""
        tally = self.tally
        counts = {
            "bytes_in": tally.bytes_in,
            "bytes_out": tally.bytes_out,
            "messages_in": tally.messages_in,
        }
        for client in self.clients:
            if client.conn is not None:
                counts["bytes_in"] += client.conn.bytes_in
                counts["bytes_out"] += client.conn.bytes_out
        return counts

    async def _close_all(self) -> None:
        for client in self.clients:
            client.drop(abort=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                for client in self.clients:
                    await client.closed.wait()


async def _sleep_until(monotonic_ns: int) -> None:
    delay = (monotonic_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
