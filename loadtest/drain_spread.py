"""How a drain spreads its reconnects: ``python -m loadtest.drain_spread``.

Starts ``gateway serve`` (embedded, ``GATEWAY_DRAIN_SPREAD_SECONDS`` = ``--spread``), connects
``--weddings`` x ``--clients`` clients (the Python SDK, asking for acks), lets each make edits
that are still in flight, sends SIGTERM and records when each client sees its close: the
spread of the closes (per ``--bucket`` seconds, the busiest bucket's share), the close codes,
and how many edits were left unacknowledged (the drain acknowledges every edit it accepted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

from gateway_client import GatewayClient
from loadtest.saturday import start


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="drain-") as tmp:
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(Path(tmp) / "data"),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_DRAIN_SPREAD_SECONDS": str(args.spread),
        }
        from loadtest.soak import free_port

        port = free_port()
        process = await start(env, Path(tmp), port, "drain")
        url = f"ws://127.0.0.1:{port}/ws"
        closed_at: dict[int, float] = {}
        async with AsyncExitStack() as stack:
            clients: list[GatewayClient] = []
            for w in range(args.weddings):
                for c in range(args.clients):
                    client = GatewayClient(url, f"drain-{w}", reconnect=False)
                    await stack.enter_async_context(client)
                    await client.wait_synced()
                    if c == 0:
                        await client.wait_durable(client.create_wedding("Ana", "Bea"))
                    clients.append(client)
            for n, client in enumerate(clients):
                client.set_core(notes=f"in flight {n}")
            sigterm = time.monotonic()
            process.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
            deadline = sigterm + args.spread + 30
            while len(closed_at) < len(clients) and time.monotonic() < deadline:
                now = time.monotonic()
                for i, client in enumerate(clients):
                    if i not in closed_at and client.last_close is not None:
                        closed_at[i] = now - sigterm
                await asyncio.sleep(0.005)  # polling the clients' state, 5 ms resolution
            codes = Counter(c.last_close[0] for c in clients if c.last_close is not None)
            unacked = sum(c.protocol.unacked for c in clients)
        await asyncio.to_thread(process.wait, 60)  # type: ignore[attr-defined]
    times = sorted(closed_at.values())
    buckets = Counter(int(t / args.bucket) for t in times)
    return {
        "clients": len(clients),
        "closed": len(times),
        "close_codes": {str(k): v for k, v in codes.items()},
        "unacked_edits": unacked,
        "first_close_s": round(times[0], 3) if times else None,
        "last_close_s": round(times[-1], 3) if times else None,
        "busiest_bucket_share": round(max(buckets.values()) / len(times), 4) if times else None,
        "per_bucket": {f"{k * args.bucket:.1f}": v for k, v in sorted(buckets.items())},
        "spread_s": args.spread,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.drain_spread", description=__doc__)
    parser.add_argument("--weddings", type=int, default=50)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--spread", type=float, default=5.0)
    parser.add_argument("--bucket", type=float, default=0.5)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0 if result["unacked_edits"] == 0 and result["closed"] == result["clients"] else 1


if __name__ == "__main__":
    sys.exit(main())
