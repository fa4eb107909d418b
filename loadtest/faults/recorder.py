"""Writers that make uniquely identifiable edits and record when each became durable.

Each edit appends a timeline entry ``f-<writer>-<seq>`` (proto/schema.md) through
``gateway_client.GatewayClient``, which keeps edits local first and resends unacknowledged ones
after a reconnect. ``ClientProtocol.on_ack`` tells which local edits each ACK made durable; the
recorder keeps, per edit, its writer, sequence number, sent and acked times, and records as
defects an edit acknowledged twice, an ACK that does not grow on its connection and an ACK
counting more messages than the connection sent (proto/spec.md §4.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Doc, Map

from gateway_client import Acknowledgement, GatewayClient

RECONNECT_CAP_SECONDS = 1.0
"""Longest wait between a writer's reconnect attempts: the spec's 90 s cap would make the time
to converge measure the backoff, not the gateway."""


DOUBLE_ACK = "edit acknowledged twice"
REPEATED_ACK = "ACK not above the connection's previous ACK (spec §4.2: ACK values only grow)"
UNSENT_ACK = "ACK counting more messages than the connection sent"


def capped_backoff(cap: float = RECONNECT_CAP_SECONDS) -> Iterator[float]:
    """proto/spec.md §6 backoff (a random first delay, then x1.618), capped at ``cap`` s."""
    delay = random.uniform(0, cap)
    while True:
        yield delay
        delay = min(max(delay, 0.1) * 1.618, cap)


def doc_json(doc: Doc[Any]) -> dict[str, Any]:
    """The document's content as plain JSON (what replicas and the store are compared by)."""
    return {
        "core": doc.get("core", type=Map).to_py() or {},
        "timeline": doc.get("timeline", type=Array).to_py() or [],
    }


@dataclass
class Edit:
    """One edit: ``entry`` is the timeline id it adds (None: the wedding's creation)."""

    writer: str
    seq: int
    version: int
    entry: str | None
    sent: float
    acked: float | None = None


@dataclass
class Writer:
    """One client of one wedding; ``run()`` edits every ``interval`` seconds until stopped."""

    name: str
    room: str
    urls: list[str]
    interval: float
    edits: list[Edit] = field(default_factory=list)
    defects: Counter[str] = field(default_factory=Counter)
    """Kinds of ACK defect seen (``REPEATED_ACK``, ``UNSENT_ACK``, ``DOUBLE_ACK``) → count."""
    client: GatewayClient = field(init=False)
    _by_version: dict[int, Edit] = field(default_factory=dict)
    _connection: int = 0
    _last_ack: int = 0

    def __post_init__(self) -> None:
        self.client = GatewayClient(self.urls, self.room, delays=capped_backoff())
        self.client.protocol.on_ack = self._on_ack

    def create_wedding(self) -> None:
        self.client.create_wedding(partner_a="Ana", partner_b="Bea")
        self._record(None)

    def edit(self) -> None:
        seq = len(self.edits) + 1
        entry = f"f-{self.name}-{seq}"
        start = f"{seq // 60 % 24:02d}:{seq % 60:02d}"
        self.client.add_timeline_entry(id=entry, title="Fault suite", start=start)
        self._record(entry)

    def _record(self, entry: str | None) -> None:
        version = self.client.protocol.local_version
        edit = Edit(self.name, len(self.edits) + 1, version, entry, time.monotonic())
        self.edits.append(edit)
        self._by_version[version] = edit

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))  # spread the writers' phases
        while not stop.is_set():
            self.edit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)  # the load's pace

    def _on_ack(self, ack: Acknowledgement) -> None:
        now = time.monotonic()
        if self.client.connections != self._connection:
            self._connection, self._last_ack = self.client.connections, 0
        if ack.seq <= self._last_ack:
            self.defects[REPEATED_ACK] += 1
        if ack.seq > ack.sent:
            self.defects[UNSENT_ACK] += 1
        self._last_ack = max(self._last_ack, ack.seq)
        for version in range(ack.durable_before + 1, ack.durable_after + 1):
            edit = self._by_version.get(version)
            if edit is None:
                continue
            if edit.acked is not None:
                self.defects[DOUBLE_ACK] += 1
            else:
                edit.acked = now

    @property
    def all_acked(self) -> bool:
        protocol = self.client.protocol
        return protocol.durable_version >= protocol.local_version

    def acked(self) -> list[Edit]:
        return [e for e in self.edits if e.acked is not None]
