"""The services a fault run uses: the machine's shared ones, or processes the suite starts.

Nemeses that stop a service act only on processes started here (``OwnRedis``, ``OwnPostgres``):
the machine's shared Redis and Postgres are never stopped, paused or restarted. On the shared
ones a run isolates itself with a schema and a key prefix of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

SHARED_DSN = os.environ.get("GATEWAY_LOADTEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
SHARED_REDIS = os.environ.get("GATEWAY_LOADTEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_BIN = Path(os.environ.get("GATEWAY_LOADTEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0
"""Seconds a service process may take to accept connections (hang protection)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` now."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def wait_accepting(port: int, what: str) -> None:
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            if await accepts(port):
                return
            await asyncio.sleep(0.05)  # polling an outside process: {what}


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class OwnRedis:
    """A ``redis-server`` of the run's own (no persistence), to restart and to pause."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
        await wait_accepting(self.port, "redis-server")

    def stop(self) -> None:
        """SIGKILL: everything in it is gone, as after a crash (pub/sub holds nothing anyway)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class OwnPostgres:
    """A Postgres cluster of the run's own (initdb in a temporary directory), to restart.

    Runs as the ``postgres`` user (``runuser``) when the suite runs as root, as Postgres refuses
    to run as root; the directory is removed on exit.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wedsync-faults-pg-"))
        self.started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "server.log")
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-l", log,
                  "-o", options, "-w", action, *extra)  # fmt: skip

    async def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(POSTGRES_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                  "-U", "postgres")  # fmt: skip
        await asyncio.to_thread(self._pg_ctl, "start")
        self.started = True

    async def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the data stays."""
        await asyncio.to_thread(self._pg_ctl, "restart", "-m", "fast")

    async def stop(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "stop", "-m", "fast")

    async def start_again(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "start")

    def destroy(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                self._pg_ctl("stop", "-m", "immediate")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.destroy)
