"""The gateway's own work per edit, in one process: ``python -m loadtest.bench_hotpath``.

``--weddings`` rooms of ``--members`` each, on a Node with the embedded store (SQLite, its file on
``/dev/shm`` so that fsync costs nothing) and the memory bus; every member is a real
``ConnectionDriver`` whose writer counts the frames it would hand the socket. Each edit is a
member's core edit, as the load-test kit makes: decoded by ``Session.receive_data`` and given to
``Node.receive`` (guard, apply, enforcement, crash journal, fan-out to the other members, the
append and its ACK). Not measured: WebSocket frame parsing, uvicorn, the kernel.

It prints microseconds per edit (wall clock, noisy on a shared machine). For a number that does
not depend on the machine's load, ``bash loadtest/callgrind_hotpath.sh`` counts instructions
with callgrind: a run with ``--dry`` (the same set-up, the edits made but never received)
subtracted from a real one, over the edits.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.adapters.websocket import encode_frame
from gateway.connection import ConnectionDriver
from gateway.core.limits import Limits
from gateway.core.session import Session
from gateway.logs import configure_logging
from gateway.node import Node
from gateway.types import NodeId, RoomId
from wedsync_protocol import codec
from wedsync_protocol.messages import Feature, Hello, SyncStep1, SyncUpdate

LIMITS = Limits(messages_per_second=1e9, message_burst=1 << 30)


class CountingWriter:
    """A writer that is always writable and counts what it would write."""

    direct = True

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def prepare(self, data: bytes) -> Any:
        return encode_frame(data)

    async def write(self, queued: deque[Any]) -> int:
        written = self.write_nowait(queued)
        return written or 0

    def write_nowait(self, queued: deque[Any]) -> int | None:
        count = len(queued)
        self.frames += count
        self.bytes += sum(map(len, queued))
        queued.clear()
        return count

    async def close(self, code: int, reason: str) -> None:
        return

    async def ready(self) -> None:
        return

    def abandon(self) -> None:
        return

    def buffered(self) -> int:
        return 0


class Member:
    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.session = Session(max_message_bytes=LIMITS.max_message_bytes, limits=LIMITS)
        self.writer = CountingWriter()
        self.driver = ConnectionDriver(self.writer, queue_limit=1 << 20)
        self.slot: Any = None
        self.edits = 0

    def edit(self) -> bytes:
        """One core edit, encoded as the client sends it."""
        self.edits += 1
        before = self.doc.get_state()
        self.doc.get("core", type=Map)["notes"] = f"LT|{self.doc.client_id}|{self.edits}|"
        return codec.encode(SyncUpdate(self.doc.get_update(before)))


async def run(
    weddings: int, members: int, edits: int, data_dir: Path, *, dry: bool = False
) -> tuple[float, int]:
    async with SqliteStore.open(data_dir) as store:
        node = Node(
            node_id=NodeId("bench"), bus=MemoryBus(NodeId("bench")), store=store, limits=LIMITS
        )
        async with node:
            rooms: list[list[Member]] = []
            created: Doc[Any] = Doc(client_id=1)
            created.get("core", type=Map).update(
                {"partner_a": "Ana", "partner_b": "Bea", "status": "planning"}
            )
            wedding = codec.encode(SyncUpdate(created.get_update()))
            for w in range(weddings):
                room = [Member(100 + w * members + m) for m in range(members)]
                for member in room:
                    member.doc.apply_update(created.get_update())
                    member.slot = await node.join(RoomId(f"w{w}"), member.session, member.driver)
                    for message in (Hello(1, Feature.ACKS), SyncStep1(b"\x00")):
                        node.receive(member.slot, member.session, message)
                first = room[0]
                node.receive(first.slot, first.session, first.session.receive_data(wedding))
                rooms.append(room)
            await node.durability.wait_flushed(RoomId(""))
            senders = [member for room in rooms for member in room]
            updates = [senders[i % len(senders)].edit() for i in range(edits)]
            started = time.perf_counter()
            for i, data in enumerate([] if dry else updates):
                sender = senders[i % len(senders)]
                decoded = sender.session.receive_data(data, time.monotonic())
                node.receive(sender.slot, sender.session, decoded)
                if i % len(senders) == len(senders) - 1:
                    await asyncio.sleep(0)  # a loop tick: flushes, the committer
            await node.durability.wait_flushed(RoomId(""))
            seconds = time.perf_counter() - started
            frames = sum(m.writer.frames for m in senders)
    return seconds, frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weddings", type=int, default=50)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--edits", type=int, default=5000)
    p.add_argument(
        "--dry", action="store_true", help="everything but the edits' trip through the node"
    )
    args = p.parse_args(argv)
    configure_logging(level="warning")
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        seconds, frames = asyncio.run(
            run(args.weddings, args.members, args.edits, Path(tmp), dry=args.dry)
        )
    per_edit = seconds / args.edits * 1e6
    print(
        f"{args.edits} edits, {args.weddings} weddings x {args.members}: {per_edit:.1f} µs per"
        f" edit (wall clock), {frames} frames written"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
