"""Memory held for clients that never read (README "Reliability").

Starts ``gateway serve`` on embedded defaults (plus ``--env`` overrides), opens ``--stalled``
raw clients that upgrade, send sync step 1 and never read again, and has one writer add
timeline entries with ~1.5 KB of notes at ``--rate`` per second for ``--seconds``. Every second
it samples the gateway's RSS, the kernel send queue of each stalled client's socket
(``tx_queue`` in /proc/net/tcp, the server's side) and how many of them the gateway still holds.

    python -m loadtest.stalled_memory --stalled 50 --seconds 40
    python -m loadtest.stalled_memory --stalled 50 --seconds 40 \
        --env GATEWAY_SOCKET_SEND_BUFFER_BYTES=0 --env GATEWAY_WS_PING_INTERVAL=0 \
        --env GATEWAY_CLIENT_OUTBOX_BYTES=1099511627776 --env GATEWAY_CLIENT_QUEUE_LIMIT=100000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from gateway_client import GatewayClient
from loadtest.failover import free_port, listening, until
from loadtest.faults.rawclients import RawClient, still_open

ROOM = "stalled-memory"


def send_queues(server_port: int, client_ports: set[int]) -> dict[int, int]:
    """Kernel send-queue bytes of the server's sockets to ``client_ports``."""
    queues: dict[int, int] = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            if local_port == server_port and remote_port in client_ports:
                queues[remote_port] = int(fields[4].split(":")[0], 16)
    return queues


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env)


async def measure(stalled: int, seconds: float, rate: float, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="wedsync-stalled-")
    child = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": data_dir,
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_MESSAGES_PER_SECOND": "1e6",
        **env,
    }
    process = serve(child)
    clients = [RawClient(f"ws://127.0.0.1:{port}/ws/{ROOM}") for _ in range(stalled)]
    samples: list[dict[str, float]] = []
    try:
        await until(lambda: listening(port), "listening", 0.05)
        gateway = psutil.Process(process.pid)
        async with GatewayClient(f"ws://127.0.0.1:{port}/ws", ROOM) as writer:
            await writer.wait_synced()
            writer.create_wedding(partner_a="Ana", partner_b="Bea")
            await writer.wait_durable()
            for client in clients:
                await client.open()
            rss_start = gateway.memory_info().rss
            ports = {c.local_port for c in clients}
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < seconds:
                for _ in range(int(rate)):
                    writer.add_timeline_entry(
                        id=f"e{n}", title=f"entry {n}", start="14:00", notes="x" * 1500
                    )
                    n += 1
                await asyncio.sleep(1.0)  # the schedule: rate per second, sampled each second
                queues = send_queues(port, ports)
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "rss_mb": round((gateway.memory_info().rss - rss_start) / 1e6, 1),
                        "open": len(still_open(process.pid, clients)),
                        "send_q_max_kb": round(max(queues.values(), default=0) / 1024, 1),
                        "send_q_total_mb": round(sum(queues.values()) / 1e6, 2),
                    }
                )
            await writer.wait_durable()
    finally:
        for client in clients:
            client.close()
        process.terminate()
        process.wait()
    peak = max(samples, key=lambda s: s["rss_mb"])
    return {
        "stalled": stalled,
        "env": env,
        "entries": n,
        "still_open_at_end": samples[-1]["open"],
        "rss_growth_peak_mb": peak["rss_mb"],
        "send_q_per_client_peak_kb": max(s["send_q_max_kb"] for s in samples),
        "send_q_total_peak_mb": max(s["send_q_total_mb"] for s in samples),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=50.0, help="entries per second")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    result = asyncio.run(measure(args.stalled, args.seconds, args.rate, env))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
