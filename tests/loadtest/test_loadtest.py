"""End-to-end smoke runs of the load-test kit (issue #3): counts, convergence, the report.

Never a speed bound: these runs check that the kit measures, not what it measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.thresholds import Threshold, ThresholdError, lookup
from tests.conftest import (
    ROOT,
    RunningGateway,
    accepts_connections,
    free_port,
    spawn_gateway,
    wait_listening,
)
from tests.helpers import eventually

REFERENCE_SERVER = ROOT / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
REPORT_KEYS = {
    "scenario", "sent", "delivered", "lost", "converged", "latency_ms", "ack_latency_ms",
    "updates_per_s", "server", "generator_cpu_percent",
}  # fmt: skip
RUN_TIMEOUT = 120.0


async def run_loadtest(*args: str) -> tuple[int, str]:
    """Run ``python -m loadtest`` to completion; return (exit code, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(RUN_TIMEOUT):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def smoke_args(url: str, report: Path, pid: int, *extra: str) -> list[str]:
    return [
        "run", "--url", url, "--weddings", "3", "--clients", "3", "--rate", "5",
        "--duration", "3", "--workers", "2", "--report", str(report), "--server-pid", str(pid),
        *extra,
    ]  # fmt: skip


def check_report(report: dict[str, Any]) -> None:
    assert report.keys() >= REPORT_KEYS
    assert report["sent"] > 0
    assert report["delivered"] > 0
    assert report["lost"] == 0
    assert report["converged"] is True
    assert report["errors"] == {}
    assert report["refused"] == 0  # every edit of the kit is valid under proto/schema.md
    assert {"p50", "p95", "p99", "max"} <= report["latency_ms"].keys()
    assert report["server"]["rss_mb"] is not None
    assert report["generator_cpu_percent"] is not None


@pytest.mark.slow
async def test_steady_run_against_the_gateway_reports_acks_and_converges(
    tmp_path: Path, gateway_processes: list[RunningGateway]
) -> None:
    gateway = spawn_gateway(tmp_path / "data")
    gateway_processes.append(gateway)
    await wait_listening(gateway)
    assert gateway.process is not None
    report_path = tmp_path / "steady.json"

    code, output = await run_loadtest(*smoke_args(gateway.ws_url, report_path, gateway.process.pid))

    assert code == 0, output
    report = json.loads(report_path.read_text())
    check_report(report)
    # Every edit reached the other two clients of its wedding.
    assert report["delivered"] == report["expected_deliveries"] == 2 * report["sent"]
    assert report["acks"] is True
    assert {"p50", "p95", "p99", "max"} <= report["ack_latency_ms"].keys()
    assert report["ack_latency_ms"]["count"] == report["sent"]
    assert (tmp_path / "steady-latency.png").stat().st_size > 0
    assert (tmp_path / "steady-cdf.png").stat().st_size > 0

    code, table = await run_loadtest("compare", str(report_path), str(report_path))
    assert code == 0
    assert "| latency p99 (ms) |" in table


@pytest.mark.slow
async def test_a_deflating_batching_gateway_is_measured_in_compressed_wire_bytes(
    tmp_path: Path, gateway_processes: list[RunningGateway]
) -> None:
    gateway = spawn_gateway(
        tmp_path / "data",
        GATEWAY_WS_PER_MESSAGE_DEFLATE="true",
        GATEWAY_BROADCAST_BATCH_MS="10",
    )
    gateway_processes.append(gateway)
    await wait_listening(gateway)
    assert gateway.process is not None
    report_path = tmp_path / "deflate.json"
    args = smoke_args(gateway.ws_url, report_path, gateway.process.pid, "--deflate", "--no-plots")

    code, output = await run_loadtest(*args)

    assert code == 0, output
    report = json.loads(report_path.read_text())
    check_report(report)
    wire = report["wire"]
    assert wire["deflate_offered"] is True
    assert wire["deflate_connections"] == report["clients"]
    assert 0 < wire["bytes_in"] <= report["bytes"]["in"]
    assert wire["bytes_in_per_delivery"] > 0
    assert report["server"]["cpu_seconds"] > 0


@pytest.mark.slow
async def test_timeline_reconnect_storm_against_the_gateway_loses_nothing(
    tmp_path: Path, gateway_processes: list[RunningGateway]
) -> None:
    gateway = spawn_gateway(tmp_path / "data")
    gateway_processes.append(gateway)
    await wait_listening(gateway)
    assert gateway.process is not None
    report_path = tmp_path / "storm.json"
    args = smoke_args(gateway.ws_url, report_path, gateway.process.pid)
    args += ["--scenario", "reconnect-storm", "--target", "timeline", "--jitter", "0.5"]

    code, output = await run_loadtest(*args, "--no-plots")

    assert code == 0, output
    report = json.loads(report_path.read_text())
    check_report(report)
    assert report["reconnect_ms"]["count"] == report["clients"]


@pytest.mark.slow
async def test_steady_run_against_the_reference_y_websocket_server(tmp_path: Path) -> None:
    if not REFERENCE_SERVER.exists():
        pytest.fail(f"{REFERENCE_SERVER} is missing: run `npm ci` in {ROOT}")
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    server = await asyncio.create_subprocess_exec(
        node, str(REFERENCE_SERVER), env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_port(port, server)
        report_path = tmp_path / "reference.json"
        url = f"ws://127.0.0.1:{port}/ws"

        code, output = await run_loadtest(*smoke_args(url, report_path, server.pid), "--no-plots")

        assert code == 0, output
        report = json.loads(report_path.read_text())
        check_report(report)
        assert report["delivered"] == 2 * report["sent"]
        assert report["acks"] is False  # a stock server ignores HELLO
        assert report["ack_latency_ms"] is None
    finally:
        server.kill()
        await server.wait()


async def wait_port(port: int, process: asyncio.subprocess.Process, timeout: float = 20) -> None:
    """Wait until ``process`` accepts TCP connections on ``port``."""

    async def listening() -> bool:
        if process.returncode is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        return await accepts_connections(port)

    await eventually(listening, timeout=timeout, message=f"port {port} accepts")


async def test_fail_on_thresholds_read_the_report() -> None:
    report = {"latency_ms": {"p99": 60.0}, "lost": 0, "converged": True, "ack_latency_ms": None}
    assert Threshold.parse("p99>50")[0].violated(report) == (True, 60.0)
    assert Threshold.parse("lost>0, converged==false") == [
        Threshold("lost", ">", 0.0),
        Threshold("converged", "==", 0.0),
    ]
    assert not Threshold.parse("converged==false")[0].violated(report)[0]
    assert Threshold.parse("ack_latency_ms.p99>10")[0].violated(report) == (True, None)
    assert lookup(report, "latency_ms.p99") == 60.0
    with pytest.raises(ThresholdError):
        Threshold.parse("p99 is large")
    with pytest.raises(ThresholdError):
        lookup(report, "nothing_here")
