"""Vendors following many weddings: one ``/mux`` socket each vs one ``/ws`` socket per wedding.

    .venv/bin/python -m loadtest.bench_mux --weddings 40 --vendors 10 --rate 2 --duration 10

Starts ``gateway serve`` (embedded defaults, development mode) once per mode, connects one
editor per wedding on ``/ws``, then ``--vendors`` vendors each following every wedding — over
one ``/mux`` socket (mode ``mux``) or over ``--weddings`` ``/ws`` sockets (mode ``ws``) — and
measures, per mode:

- the server's RSS growth per vendor (all vendors connected and synced, minus before them);
- the time until a vendor's weddings are all synced: first connect and after a reconnect, and
  the server CPU a reconnect costs;
- edit → delivered latency at the vendors while every editor edits ``--rate`` times a second;
- the server's CPU (seconds per second) during that phase.

A client of the wire protocol only (``wedsync_protocol``, pycrdt, websockets, psutil): the
server runs in its own process, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wedsync_protocol import codec, mux
from wedsync_protocol.messages import SyncStep1, SyncStep2, SyncUpdate

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.002)


class Follower:
    """What a vendor holds of one wedding: its Doc, whether it is synced, latencies seen."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.synced = False

    def apply(self, update: bytes, latencies: list[float] | None) -> None:
        self.doc.apply_update(update)
        if latencies is not None:
            notes = self.doc.get("core", type=Map).get("notes")
            if isinstance(notes, str) and notes.startswith("t="):
                latencies.append((time.time_ns() - int(notes[2:])) / 1e6)


class Vendor:
    """One vendor following ``weddings``, over ``/mux`` or over one ``/ws`` socket each."""

    def __init__(self, base: str, weddings: list[str], mode: str) -> None:
        self.base = base
        self.weddings = weddings
        self.mode = mode
        self.followers = {w: Follower() for w in weddings}
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.latencies: list[float] | None = None

    @property
    def synced(self) -> bool:
        return all(f.synced for f in self.followers.values())

    async def connect(self) -> None:
        for follower in self.followers.values():
            follower.synced = False
        if self.mode == "mux":
            ws = await connect(f"{self.base}/mux", compression=None, proxy=None, max_size=None)
            self.sockets = [ws]
            for wedding, follower in self.followers.items():
                await ws.send(mux.encode_token(wedding, "", "bench"))
                await ws.send(mux.encode_message(wedding, SyncStep1(follower.doc.get_state())))
            self.tasks = [asyncio.create_task(self._read_mux(ws))]
        else:
            self.sockets = await asyncio.gather(
                *(
                    connect(f"{self.base}/ws/{w}", compression=None, proxy=None, max_size=None)
                    for w in self.weddings
                )
            )
            for ws, follower in zip(self.sockets, self.followers.values(), strict=True):
                await ws.send(codec.encode(SyncStep1(follower.doc.get_state())))
            self.tasks = [
                asyncio.create_task(self._read_ws(ws, f))
                for ws, f in zip(self.sockets, self.followers.values(), strict=True)
            ]

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read_mux(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                assert isinstance(data, bytes)
                name, kind, body = mux.decode_server(data)
                if kind == mux.MuxType.PING:
                    await ws.send(mux.PONG)
                    continue
                follower = self.followers.get(name)
                if follower is not None and kind == mux.MuxType.SYNC:

                    def encode(message: Any, name: str = name) -> bytes:
                        return mux.encode_message(name, message)

                    await self._sync(follower, body, encode, ws)

    async def _read_ws(self, ws: ClientConnection, follower: Follower) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                assert isinstance(data, bytes)
                await self._sync(follower, codec.decode_server_message(data), codec.encode, ws)

    async def _sync(
        self, follower: Follower, message: Any, encode: Callable[[Any], bytes], ws: Any
    ) -> None:
        if isinstance(message, SyncStep1):
            await ws.send(encode(SyncStep2(follower.doc.get_update(message.state_vector))))
        elif isinstance(message, SyncStep2):
            follower.apply(message.update, None)
            follower.synced = True
        elif isinstance(message, SyncUpdate):
            follower.apply(message.update, self.latencies)


class Editor:
    """A planner on ``/ws`` who creates the wedding and then edits ``core.notes``."""

    def __init__(self, base: str, wedding: str) -> None:
        self.url = f"{base}/ws/{wedding}"
        self.doc: Doc[Any] = Doc()
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await connect(self.url, compression=None, proxy=None, max_size=None)
        await self.ws.send(codec.encode(SyncStep1(self.doc.get_state())))
        self.task = asyncio.create_task(self._drain())
        await self.edit(partner_a="Ana", partner_b="Bea", status="planning")

    async def _drain(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                assert isinstance(data, bytes)
                message = codec.decode_server_message(data)
                if isinstance(message, SyncStep1):
                    update = self.doc.get_update(message.state_vector)
                    await self.ws.send(codec.encode(SyncStep2(update)))

    async def edit(self, **fields: Any) -> None:
        assert self.ws is not None
        before = self.doc.get_state()
        with self.doc.transaction():
            core = self.doc.get("core", type=Map)
            for key, value in fields.items():
                core[key] = value
        await self.ws.send(codec.encode(SyncUpdate(self.doc.get_update(before))))


def start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_MESSAGES_PER_SECOND": "100000",
        "GATEWAY_MESSAGE_BURST": "100000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def timed(job: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await job()
    return (time.perf_counter() - started) * 1000


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    base = f"ws://127.0.0.1:{port}"
    weddings = [f"bench-{i}" for i in range(args.weddings)]
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, Path(data_dir))
        try:
            await wait_listening(port)
            process = psutil.Process(server.pid)
            editors = [Editor(base, w) for w in weddings]
            for editor in editors:
                await editor.open()
            vendors = [Vendor(base, weddings, mode) for _ in range(args.vendors)]
            await asyncio.sleep(1.0)  # the rooms are loaded and quiet
            rss_before = process.memory_info().rss

            async def connect_all() -> None:
                await asyncio.gather(*(v.connect() for v in vendors))
                await until(lambda: all(v.synced for v in vendors), 60, "the vendors to sync")

            first_sync_ms = await timed(connect_all)
            await asyncio.sleep(1.0)
            rss_after = process.memory_info().rss

            latencies: list[float] = []
            for vendor in vendors:
                vendor.latencies = latencies
            cpu_start, wall_start = cpu_seconds(process), time.perf_counter()
            gap = 1.0 / args.rate / len(editors)  # the editors' edits spread evenly
            started = time.perf_counter()
            for n in range(int(args.duration * args.rate) * len(editors)):
                await editors[n % len(editors)].edit(notes=f"t={time.time_ns()}")
                await asyncio.sleep(max(0.0, started + (n + 1) * gap - time.perf_counter()))
            expected = int(args.duration * args.rate) * len(editors) * len(vendors)
            with contextlib.suppress(TimeoutError):
                await until(lambda: len(latencies) >= expected, 10, "every delivery")
            cpu = (cpu_seconds(process) - cpu_start) / (time.perf_counter() - wall_start)
            for vendor in vendors:
                vendor.latencies = None

            resync: list[float] = []

            async def reconnect(vendor: Vendor) -> None:
                await vendor.close()
                started = time.perf_counter()
                await vendor.connect()
                await until(lambda: vendor.synced, 60, "a vendor to resync")
                resync.append((time.perf_counter() - started) * 1000)

            cpu_before_resync = cpu_seconds(process)
            await asyncio.gather(*(reconnect(v) for v in vendors))
            resync_cpu = cpu_seconds(process) - cpu_before_resync
            for vendor in vendors:
                await vendor.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0

    return {
        "mode": mode,
        "weddings": args.weddings,
        "vendors": args.vendors,
        "sockets_per_vendor": 1 if mode == "mux" else args.weddings,
        "rss_per_vendor_kb": round((rss_after - rss_before) / args.vendors / 1024, 1),
        "first_sync_all_vendors_ms": round(first_sync_ms, 1),
        "resync_ms_median": round(statistics.median(resync), 1),
        "resync_ms_max": round(max(resync), 1),
        "resync_server_cpu_ms_per_vendor": round(resync_cpu * 1000 / args.vendors, 1),
        "deliveries": len(latencies),
        "deliveries_expected": expected,
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "server_cpu_per_second": round(cpu, 3),
    }


async def main(args: argparse.Namespace) -> None:
    results = [await run_mode(mode, args) for mode in args.modes.split(",")]
    for result in results:
        print(json.dumps(result))
    keys = [k for k in results[0] if k != "mode"]
    print("\n| | " + " | ".join(r["mode"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(r[key]) for r in results) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weddings", type=int, default=40)
    parser.add_argument("--vendors", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0, help="edits per second per wedding")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--modes", default="mux,ws")
    asyncio.run(main(parser.parse_args()))
