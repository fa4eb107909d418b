"""Gateway nodes the suite starts, owns and stops: ``python -m gateway serve`` processes.

Each node logs JSON lines to a file of its own (the checker reads close codes and tracebacks
there) and reaches Redis and Postgres through proxies of its own (``ServicePaths``), so one
node can be cut off alone. Clients reach a node through a front proxy (``Node.front``), which
can drop every client connection at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

from loadtest.faults.proxy import TcpProxy
from loadtest.faults.services import START_TIMEOUT, accepts, free_port

ROOT = Path(__file__).resolve().parents[2]


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=user + proxy.address))


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    assert parts.port is not None, url
    return parts.hostname, parts.port


def documented_settings() -> set[str]:
    """The ``GATEWAY_*`` names in the README's configuration table: a gateway refuses unknown
    names, so optional settings (e.g. GATEWAY_WS_PING_TIMEOUT) are passed only once they exist."""
    names = set()
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `GATEWAY_"):
            names.add(line.split("`")[1])
    return names


@dataclass
class ServicePaths:
    """One node's proxies to Redis and Postgres (None: that service is not used)."""

    redis: TcpProxy | None = None
    postgres: TcpProxy | None = None

    def all(self) -> list[TcpProxy]:
        return [p for p in (self.redis, self.postgres) if p is not None]


@dataclass
class Node:
    """One ``gateway serve`` process (restartable on the same port and log)."""

    name: str
    env: dict[str, str]
    log_path: Path
    paths: ServicePaths
    front: TcpProxy
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Where clients connect: the node's front proxy."""
        return f"ws://{self.front.address}/ws"

    @property
    def direct_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        env = {**os.environ, **self.env, "GATEWAY_NODE_ID": self.name}
        env["GATEWAY_PORT"] = str(self.port)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_listening(self) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while not await accepts(self.port):
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited with {self.process.returncode}")
                await asyncio.sleep(0.05)  # polling an outside process

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.running():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a drain), then SIGKILL after ``timeout``; the exit status, None if killed."""
        if not self.running():
            return self.process.returncode if self.process is not None else None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def rss_mb(self) -> float | None:
        if not self.running():
            return None
        try:
            return float(psutil.Process(self.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return None


async def readyz(http: httpx.AsyncClient, node: Node) -> int:
    """The node's /readyz status code (0 when it does not answer)."""
    try:
        response = await http.get(f"{node.http_url}/readyz", timeout=2.0)
    except httpx.HTTPError:
        return 0
    return response.status_code


async def owner_of(http: httpx.AsyncClient, nodes: list[Node], room: str) -> str | None:
    """The node owning ``room``, as the first node that answers tells (None: nobody)."""
    for node in nodes:
        if not node.running():
            continue
        try:
            response = await http.get(f"{node.http_url}/v1/weddings/{room}/owner", timeout=2.0)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            owner: str | None = response.json()["owner"]
            return owner
    return None


async def migrate(env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "migrate", env={**os.environ, **env}, cwd=ROOT
    )
    if await process.wait() != 0:
        raise RuntimeError("gateway migrate failed")
