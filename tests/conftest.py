"""Fixtures: the gateway in-process or as a child process, and the machine's services."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.cli import GatewayServer, uvicorn_config
from gateway.compiled import stale_extensions
from gateway.settings import Settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningGateway:
    """A gateway serving on 127.0.0.1:port."""

    port: int
    data_dir: Path
    app: Any = None
    server: Any = None
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        """Base URL for y-websocket providers: append '/<wedding id>'."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node(self) -> Any:
        """The Node of an in-process gateway."""
        return self.app.node if self.app is not None else None


async def start_in_process(data_dir: Path, bus: Any = None, **overrides: Any) -> RunningGateway:
    port = free_port()
    overrides.setdefault("drain_spread_seconds", 0.0)  # tests that want the spread set it
    settings = Settings(port=port, data_dir=data_dir, **overrides)
    app = create_app(settings, bus=bus)
    config = uvicorn_config(app, settings, host="127.0.0.1", timeout_graceful_shutdown=None)
    server = GatewayServer(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve())
    running = RunningGateway(port=port, data_dir=data_dir, server=(server, task))

    def started() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("gateway exited during start-up")
        return bool(server.started)

    await eventually(started, timeout=20, message="the in-process gateway started")
    running.app = app  # its lifespan opened the node: app.node
    return running


async def stop_in_process(running: RunningGateway) -> None:
    server, task = running.server
    server.should_exit = True
    await task


def pytest_sessionstart(session: pytest.Session) -> None:
    """Tests run the compiled guard when it is built: an edited guard must be built again."""
    stale = stale_extensions()
    if stale:
        names = ", ".join(p.name for p in stale)
        pytest.exit(f"{names} older than its source: run `make install` (tools/compile_guard.py)")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway on embedded defaults, in this test's event loop."""
    running = await start_in_process(tmp_path / "data", room_idle_seconds=0.2)
    try:
        yield running
    finally:
        await stop_in_process(running)


def spawn_gateway(data_dir: Path, port: int | None = None, **env: str) -> RunningGateway:
    """Start ``gateway serve`` as a child process (for kill -9 tests)."""
    port = port or free_port()
    child_env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_DRAIN_SPREAD_SECONDS": "0",  # tests that want the spread set it
        **env,
    }
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=child_env, cwd=ROOT)
    return RunningGateway(port=port, data_dir=data_dir, process=process, env=env)


async def accepts_connections(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` right now."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_listening(running: RunningGateway, timeout: float = 20.0) -> None:
    """Wait until the child gateway accepts TCP connections."""

    async def listening() -> bool:
        assert running.process is not None
        if running.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {running.process.returncode}")
        return await accepts_connections(running.port)

    await eventually(listening, timeout=timeout, message=f"port {running.port} accepts")


@pytest.fixture
def gateway_processes(tmp_path: Path) -> Iterator[list[RunningGateway]]:
    """Collects child gateways started by a test and kills any left running."""
    started: list[RunningGateway] = []
    yield started
    for running in started:
        if running.process is not None and running.process.poll() is None:
            running.process.kill()
            running.process.wait()


from tests.services import postgres_dsn, postgres_schema, redis_url  # noqa: E402  (fixtures)

__all__ = ["postgres_dsn", "postgres_schema", "redis_url"]
