"""Bytes and time to catch up after N missed edits: ``python -m loadtest.resume_bench``.

For each server (``--gateway``, ``--reference``), each ``--target`` and each N of ``--missed``,
in a wedding of its own:

1. a writer creates the wedding and makes ``--history`` edits, durable before it goes on
   (acknowledged by the gateway; a sync round trip on a stock server, which handles a
   connection's messages in order); with ``--churn K`` it also appends K timeline entries and
   deletes every other one (K / 2 separate deleted ranges: the large delete set of a
   long-lived document, which a state-vector diff always carries in full);
2. a reader joins, keeps its document (and, on the gateway, the epoch and offset of its
   CATCH_UP: it said HELLO with RESUME and sent RESUME (0, 0, its state vector)), and leaves;
3. the writer makes N more edits, the ones the reader misses, durable as above;
4. ``--repeats`` times, a fresh client holding the reader's saved document reconnects and
   catches up — on the gateway once with RESUME (one CATCH_UP answers it) and once with a plain
   sync step 1 (sync step 2), on the reference with sync step 1 — and must then hold exactly
   the writer's document.

Measured: the catch-up payload (the update inside the CATCH_UP or sync step 2), its size under
gzip, br and zstd at the levels ``GET /v1/weddings/{id}/resume`` documents (README.md: br 5,
zstd 3, gzip 6; compressed here with the same libraries, not with the gateway's code), and
the time from the socket being open (WebSocket handshake done) to that update applied to the
client's Doc. On the gateway, the HTTP resume endpoint is asked for the same state vector with
each coding: body bytes and request time (one kept-alive connection, so no TCP set-up).

Bench clients drive the Python client's ``gateway_client.sync.ClientSync`` (HELLO, RESUME, the
server's sync step 1 held until the CATCH_UP, POSITION, ACK numbering) over the kit's sockets.
Edits are the load-test kit's (loadtest/client.py), valid under proto/schema.md: ``core`` sets
``core["notes"]`` (last writer wins: missed values are tombstones by the time anyone catches
up), ``timeline`` appends an entry (each one stays: the payload grows with N).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import http.client
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import brotli  # type: ignore[import-untyped]  # no type hints shipped
import zstandard
from pycrdt import Array, Doc, Map

from gateway_client.sync import ClientSync, Origin
from loadtest.client import timeline_entry, wedding_update
from loadtest.config import FIRST_DOC_CLIENT_ID, Target
from loadtest.wsclient import WsConnection, open_connection
from wedsync_protocol import codec
from wedsync_protocol.codec import decode_state_vector
from wedsync_protocol.messages import Feature, Message, SyncStep1, SyncUpdate

CODINGS = ("gzip", "br", "zstd")
LEVELS = {"br": 5, "zstd": 3, "gzip": 6}
"""The levels of ``GET /v1/weddings/{id}/resume`` (README.md, "Compression")."""
CHUNK = 100
"""Edits sent between two durability barriers (below the gateway's per-client queue limit)."""
TIMEOUT = 120.0
WRITER_CLIENT_ID = FIRST_DOC_CLIENT_ID


def compress(body: bytes, coding: str) -> bytes:
    """``body`` as the resume endpoint codes it (same library and level; gzip without mtime)."""
    if coding == "br":
        return bytes(brotli.compress(body, quality=LEVELS["br"]))
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=LEVELS["zstd"]).compress(body)
    return gzip.compress(body, LEVELS["gzip"], mtime=0)


class Peer:
    """One bench client: a pycrdt Doc on a WsConnection (its Handler), the ``Replica`` of a
    ``ClientSync``. ``hello`` is the features sent in HELLO (None: none, a stock client)."""

    def __init__(
        self,
        doc: Doc[Any],
        *,
        hello: Feature | None = None,
        resume: bool = False,
        answers: bool = True,
    ) -> None:
        self.doc = doc
        self.sync = ClientSync(self, features=hello, resume=resume)
        self.answers = answers
        """Answer the server's sync step 1 (False: a client that only measures its catch-up)."""
        self.conn: WsConnection | None = None
        self.changed = asyncio.Event()
        self.acked = 0
        self.step2s = 0
        self.caught_up_ns = 0
        self.payload: bytes | None = None
        self.message_bytes = 0
        self._message = b""  # the message being handled: its size is measured
        self.lost: str | None = None

    @property
    def acks(self) -> bool:
        """The server acknowledges this connection's document-bearing messages (a gateway)."""
        return self.sync.acks_enabled

    @property
    def sent(self) -> int:
        """Document-bearing messages sent on this connection (what the ACKs count)."""
        return self.sync.seq

    async def connect(self, url: str) -> int:
        """Open the socket, send HELLO if asked, then RESUME or sync step 1; returns the
        monotonic ns at which the socket was open."""
        self.conn = await open_connection(url, self, timeout=TIMEOUT)
        opened = time.monotonic_ns()
        for data in self.sync.connection_made(self.doc.get_state()):
            self.conn.send(data)
        return opened

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                if self.lost is not None:
                    raise ConnectionError(self.lost)
                self.changed.clear()
                await self.changed.wait()

    def send_update(self, update: bytes) -> None:
        assert self.conn is not None
        self.conn.send(self.sync.document(SyncUpdate(update))[1])

    async def durable(self) -> None:
        """Everything sent so far is acknowledged (gateway) or applied (a sync round trip)."""
        if self.acks:
            await self.until(lambda: self.acked >= self.sent)
            return
        assert self.conn is not None
        target = self.step2s + 1
        self.conn.send(codec.encode(SyncStep1(self.doc.get_state())))
        await self.until(lambda: self.step2s >= target)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- Handler -----------------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        self._message = data
        for reply in self.sync.receive_data(data):
            if self.conn is not None:
                self.conn.send(reply)
        self.changed.set()

    def connection_lost(self, code: int | None, expected: bool) -> None:
        if not expected:
            self.lost = f"the server closed the bench's connection (code {code})"
            self.changed.set()

    # -- Replica (called by ClientSync) --------------------------------------------------------

    def received(self, update: bytes, origin: Origin) -> None:
        if origin is Origin.STEP2:
            self.step2s += 1
        if origin is Origin.UPDATE or (origin is Origin.STEP2 and self.payload is not None):
            self.doc.apply_update(update)
        else:
            self._caught_up(update)  # the CATCH_UP or the first sync step 2: what is measured

    def answer(self, state_vector: bytes) -> bytes | None:
        if self.conn is None or not self.answers:
            return None  # closed by the bench; the server's last messages still arrive
        return self.doc.get_update(state_vector)  # a sync step 2: the gateway acknowledges it

    def resend(self) -> list[bytes]:
        return []  # the bench waits for every edit to be durable before it goes on

    def acknowledged(self, seq: int) -> None:
        self.acked = seq

    def other(self, message: Message) -> None:
        pass  # REJECT cannot come (the kit's edits are valid); awareness is not measured

    def _caught_up(self, update: bytes) -> None:
        self.doc.apply_update(update)
        self.caught_up_ns = time.monotonic_ns()
        self.payload = update
        self.message_bytes = len(self._message)


class Writer:
    """Makes the kit's edits (loadtest/client.py), valid under proto/schema.md."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.peer = Peer(Doc(client_id=WRITER_CLIENT_ID), hello=Feature.ACKS | Feature.REJECTS)
        self.seq = 0
        # What a Yjs provider sends: the transaction's own update. A state-vector diff taken
        # after the edit would carry the document's whole delete set every time.
        self._captured: list[bytes] = []
        self.peer.doc.observe(lambda event: self._captured.append(event.update))

    def _send_edit(self) -> None:
        """Send the update of the edit just made (the last transaction: remote updates are
        applied only while the writer awaits)."""
        update = self._captured[-1]
        self._captured.clear()
        self.peer.send_update(update)

    async def open(self, url: str) -> None:
        await self.peer.connect(url)
        await self.peer.until(lambda: self.peer.payload is not None)
        core = self.peer.doc.get("core", type=Map)
        if "partner_a" not in core:
            update = wedding_update()
            self.peer.doc.apply_update(update)
            self.peer.send_update(update)

    async def churn(self, count: int) -> None:
        """Append ``count`` timeline entries, then delete every other one, one update each."""
        timeline = self.peer.doc.get("timeline", type=Array)
        first = len(timeline)
        for n in range(count + count // 2):
            self.seq += 1
            if n < count:
                marker = f"LT|{WRITER_CLIENT_ID}|{self.seq}|0|0|"
                timeline.append(Map(timeline_entry(WRITER_CLIENT_ID, self.seq, marker)))
            else:
                del timeline[first + n - count]  # the next one shifts into this index
            self._send_edit()
            if (n + 1) % CHUNK == 0:
                await self.peer.durable()
        await self.peer.durable()

    async def edit(self, count: int) -> None:
        doc = self.peer.doc
        core, timeline = doc.get("core", type=Map), doc.get("timeline", type=Array)
        for n in range(count):
            self.seq += 1
            marker = f"LT|{WRITER_CLIENT_ID}|{self.seq}|{time.monotonic_ns()}|0|"
            if self.target is Target.CORE:
                core["notes"] = marker
            else:
                timeline.append(Map(timeline_entry(WRITER_CLIENT_ID, self.seq, marker)))
            self._send_edit()
            if (n + 1) % CHUNK == 0:
                await self.peer.durable()
        await self.peer.durable()


@dataclass
class Saved:
    """The reader's document when it left, and the position it had been told."""

    update: bytes
    state_vector: bytes
    epoch: int
    offset: int


@dataclass
class Sample:
    payload: int
    message: int
    ms: float
    compressed: dict[str, int] = field(default_factory=dict)


async def catch_up(url: str, saved: Saved, *, resume: bool, expected: Doc[Any]) -> Sample:
    doc: Doc[Any] = Doc()
    doc.apply_update(saved.update)
    hello = Feature.ACKS | Feature.REJECTS | Feature.RESUME if resume else None
    peer = Peer(doc, hello=hello, resume=resume, answers=False)  # an answer would add to the log
    peer.sync.epoch, peer.sync.offset = saved.epoch, saved.offset
    opened = await peer.connect(url)
    await peer.until(lambda: peer.payload is not None)
    peer.close()
    assert peer.payload is not None
    if decode_state_vector(doc.get_state()) != decode_state_vector(expected.get_state()):
        raise AssertionError("the catch-up left the client without some of the writer's edits")
    if _content(doc) != _content(expected):
        raise AssertionError("the client's document differs from the writer's after catch-up")
    compressed = {coding: len(compress(peer.payload, coding)) for coding in CODINGS}
    ms = (peer.caught_up_ns - opened) / 1e6
    return Sample(len(peer.payload), peer.message_bytes, ms, compressed)


def _content(doc: Doc[Any]) -> Any:
    return doc.get("core", type=Map).to_py(), doc.get("timeline", type=Array).to_py()


async def prepare(
    url: str, room: str, target: Target, history: int, churn: int, missed: int
) -> Any:
    """Steps 1-3: returns (the writer, the reader's saved state)."""
    writer = Writer(target)
    await writer.open(f"{url}/{room}")
    await writer.edit(history)
    await writer.churn(churn)
    gateway = writer.peer.acks
    hello = Feature.ACKS | Feature.REJECTS | Feature.RESUME if gateway else None
    reader = Peer(Doc(), hello=hello, resume=gateway)
    await reader.connect(f"{url}/{room}")
    await reader.until(lambda: reader.payload is not None)
    if gateway:  # its sync step 2 answer is stored (it asked for acks): let it be durable
        await reader.until(lambda: reader.acked >= reader.sent)
    reader.close()
    position_now = reader.sync.epoch, reader.sync.offset
    saved = Saved(reader.doc.get_update(), reader.doc.get_state(), *position_now)
    if gateway:
        saved.offset = await position(f"{url}/{room}", saved)
    await writer.edit(missed)
    return writer, saved


async def position(url: str, saved: Saved) -> int:
    """The room's position now: what the reader's offset would have been had it stayed online
    until the POSITION covering its own sync step 2 (stored when the client asked for acks)."""
    doc: Doc[Any] = Doc()
    doc.apply_update(saved.update)
    probe = Peer(doc, hello=Feature.ACKS | Feature.RESUME, resume=True, answers=False)
    probe.sync.epoch, probe.sync.offset = saved.epoch, saved.offset
    await probe.connect(url)
    await probe.until(lambda: probe.payload is not None)
    probe.close()
    return probe.sync.offset


def http_resume(url: str, room: str, saved: Saved, repeats: int) -> dict[str, Any]:
    """GET /v1/weddings/{room}/resume?sv= per coding: body bytes and request ms (median)."""
    parts = urlsplit(url)
    sv = base64.urlsafe_b64encode(saved.state_vector).rstrip(b"=").decode()
    path = f"/v1/weddings/{room}/resume?sv={sv}"
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    out: dict[str, Any] = {}
    try:
        for coding in ("identity", *CODINGS):
            times, size = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                connection.request("GET", path, headers={"Accept-Encoding": coding})
                response = connection.getresponse()
                body = response.read()
                times.append((time.perf_counter() - started) * 1000)
                if response.status != 200:
                    return {"error": f"HTTP {response.status}: {body[:200]!r}"}
                if response.getheader("Content-Encoding", "identity") != coding:
                    size = -len(body)  # the endpoint chose identity (a small body)
                else:
                    size = len(body)
            out[coding] = {"bytes": size, "ms": round(statistics.median(times), 3)}
    finally:
        connection.close()
    return out


async def measure(
    name: str, url: str, target: Target, missed: int, args: argparse.Namespace
) -> dict[str, Any]:
    room = f"rb-{secrets.token_hex(3)}-{target.value}-{missed}"
    writer, saved = await prepare(url, room, target, args.history, args.churn, missed)
    repeats = args.repeats
    gateway = writer.peer.acks
    modes = {"resume": True, "sync step 1": False} if gateway else {"sync step 1": False}
    row: dict[str, Any] = {"server": name, "target": target.value, "missed": missed}
    row["history"], row["churn"] = args.history, args.churn
    row["document_bytes"] = len(writer.peer.doc.get_update())
    for mode, resume in modes.items():
        samples = [
            await catch_up(f"{url}/{room}", saved, resume=resume, expected=writer.peer.doc)
            for _ in range(repeats)
        ]
        row[mode] = _summary(samples)
    if gateway:
        http_base = url.replace("ws://", "http://", 1).rsplit("/", 1)[0]
        row["http"] = await asyncio.to_thread(http_resume, http_base, room, saved, repeats)
    writer.peer.close()
    return row


def _summary(samples: list[Sample]) -> dict[str, Any]:
    last = samples[-1]
    times = [s.ms for s in samples]
    return {
        "payload_bytes": last.payload,
        "message_bytes": last.message,
        "compressed_bytes": last.compressed,
        "ms_median": round(statistics.median(times), 3),
        "ms_min": round(min(times), 3),
        "ms_max": round(max(times), 3),
        "payload_bytes_all": sorted({s.payload for s in samples}),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server, catch-up | target | missed edits | payload bytes | gzip | br | zstd "
        "| open → applied ms, median (min-max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for mode in ("resume", "sync step 1"):
            if mode not in row:
                continue
            m = row[mode]
            packed = " | ".join(f"{m['compressed_bytes'][c]:,}" for c in CODINGS)
            lines.append(
                f"| {row['server']}, {'RESUME' if mode == 'resume' else mode} | {row['target']} "
                f"| {row['missed']:,} | {m['payload_bytes']:,} | {packed} "
                f"| {m['ms_median']:.2f} ({m['ms_min']:.2f}-{m['ms_max']:.2f}) |"
            )
    http_rows = [r for r in rows if "http" in r and "error" not in r["http"]]
    if http_rows:
        lines += [
            "",
            "| HTTP `GET …/resume?sv=` | target | missed edits "
            + "".join(f"| {c} bytes (ms) " for c in ("identity", *CODINGS))
            + "|",
            "|---|---|---:|" + "---:|" * (1 + len(CODINGS)),
        ]
        for row in http_rows:
            cells = "".join(
                f"| {_http_bytes(row['http'][c]['bytes'])} ({row['http'][c]['ms']:.2f}) "
                for c in ("identity", *CODINGS)
            )
            lines.append(f"| {row['server']} | {row['target']} | {row['missed']:,} {cells}|")
    return "\n".join(lines)


def _http_bytes(size: int) -> str:
    return f"{-size:,} (identity)" if size < 0 else f"{size:,}"


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    servers = [("gateway", url) for url in args.gateway] + [
        ("y-websocket reference", url) for url in args.reference
    ]
    rows = []
    for target in args.target:
        for missed in args.missed:
            for name, url in servers:
                row = await measure(name, url, target, missed, args)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", action="append", default=[], metavar="WS_URL")
    parser.add_argument("--reference", action="append", default=[], metavar="WS_URL")
    parser.add_argument("--missed", type=_ints, default=[10, 500, 5000], help="e.g. 10,500,5000")
    parser.add_argument("--target", type=_targets, default=[Target.CORE, Target.TIMELINE])
    parser.add_argument("--history", type=int, default=100, help="edits before the reader left")
    parser.add_argument(
        "--churn", type=int, default=0, help="timeline entries added, every other one deleted"
    )
    parser.add_argument("--repeats", type=int, default=5, help="catch-ups measured per case")
    parser.add_argument("--report", type=Path, help="write every number as JSON here")
    args = parser.parse_args(argv)
    if not args.gateway and not args.reference:
        parser.error("give --gateway and/or --reference")
    import uvloop

    rows = uvloop.run(run(args))
    if args.report is not None:
        args.report.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(markdown(rows))


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _targets(text: str) -> list[Target]:
    return [Target(part) for part in text.split(",") if part]


if __name__ == "__main__":
    main()
