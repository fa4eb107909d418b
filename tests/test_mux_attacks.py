"""The ``/mux`` isolation attack suite and limits (issue 15), through a live gateway.

A raw client speaks the ``/mux`` framing (``wedsync_protocol.mux``), one pycrdt Doc per document.
Every refused attempt is checked three ways: what the attacking socket got (permission-denied
for that document, the socket still open, its other documents still working), what the other
clients received (nothing: a planner on ``/ws`` records every transaction reaching it), and what
reached the store (nothing of it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import structlog
from pycrdt import Array, Doc, Map, TransactionEvent
from starlette.datastructures import Secret
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.types import RoomId
from gateway_client import GatewayClient
from loadtest.faults.rawclients import RawClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from tests.test_attacks import AUDIENCE, ISSUER, SECRET, Watcher
from wedsync_protocol import codec, mux
from wedsync_protocol.messages import Feature, Hello, SyncStep1, SyncStep2, SyncUpdate
from wedsync_protocol.mux import MuxAuthType, MuxType

WAIT = 10.0


def token(weddings: dict[str, Role], subject: str = "vendor-dashboard", **extra: Any) -> str:
    return issue_token(
        SECRET,
        subject=subject,
        weddings=weddings,
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
        **extra,
    )


@dataclass
class MuxPeer:
    """A raw ``/mux`` client: a pycrdt Doc per document, and everything the socket received."""

    ws: ClientConnection
    docs: dict[str, Doc[Any]] = field(default_factory=dict)
    received: list[tuple[str, MuxType, object]] = field(default_factory=list)
    close_code: int | None = None

    def of(self, name: str) -> list[tuple[MuxType, object]]:
        return [(kind, body) for doc, kind, body in self.received if doc == name]

    def auth(self, name: str) -> list[tuple[int, str]]:
        return [body for kind, body in self.of(name) if kind == MuxType.AUTH]  # type: ignore[misc]

    def scope(self, name: str) -> str | None:
        granted = [text for t, text in self.auth(name) if t == MuxAuthType.AUTHENTICATED]
        return granted[-1] if granted else None

    def denied(self, name: str) -> str | None:
        denials = [text for t, text in self.auth(name) if t == MuxAuthType.PERMISSION_DENIED]
        return denials[-1] if denials else None

    def statuses(self, name: str) -> list[bool]:
        return [bool(body) for kind, body in self.of(name) if kind == MuxType.SYNC_STATUS]

    async def open(self, name: str, tok: str) -> None:
        """Send the token, then sync step 1, as the provider does (without waiting)."""
        doc = self.docs.setdefault(name, Doc())
        await self.ws.send(mux.encode_token(name, tok, "4.8.0"))
        await self.ws.send(mux.encode_message(name, SyncStep1(doc.get_state())))

    async def synced(self, name: str) -> None:
        await eventually(
            lambda: any(
                kind == MuxType.SYNC and isinstance(b, SyncStep2) for kind, b in self.of(name)
            ),
            timeout=WAIT,
            message=f"{name} synced",
        )

    async def write(self, name: str, **core: Any) -> None:
        """Set core fields in the local Doc and send the update."""
        doc = self.docs.setdefault(name, Doc())
        before = doc.get_state()
        with doc.transaction():
            values = doc.get("core", type=Map)
            for key, value in core.items():
                values[key] = value
        await self.ws.send(mux.encode_message(name, SyncUpdate(doc.get_update(before))))

    async def run(self) -> None:
        try:
            async for data in self.ws:
                assert isinstance(data, bytes)
                name, kind, body = mux.decode_server(data)
                self.received.append((name, kind, body))
                doc = self.docs.get(name)
                if kind == MuxType.SYNC and doc is not None:
                    if isinstance(body, SyncStep1):
                        reply = SyncStep2(doc.get_update(body.state_vector))
                        await self.ws.send(mux.encode_message(name, reply))
                    elif isinstance(body, SyncStep2 | SyncUpdate):
                        doc.apply_update(body.update)
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code


@contextlib.asynccontextmanager
async def mux_peer(running: RunningGateway) -> AsyncIterator[MuxPeer]:
    async with connect(f"ws://127.0.0.1:{running.port}/mux", compression=None, proxy=None) as ws:
        peer = MuxPeer(ws)
        task = asyncio.create_task(peer.run())
        try:
            yield peer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def watching(running: RunningGateway, *weddings: str) -> AsyncIterator[list[Watcher]]:
    """A planner on ``/ws`` per wedding: each creates its wedding, then records what reaches it."""
    async with contextlib.AsyncExitStack() as stack:
        watchers = []
        for wedding in weddings:
            doc: Doc[Any] = Doc()
            watcher = Watcher(
                GatewayClient(
                    running.ws_url,
                    wedding,
                    doc=doc,
                    token=token({wedding: Role.PLANNER}, subject="planner"),
                )
            )
            client = await stack.enter_async_context(watcher.client)
            await client.wait_synced()
            client.create_wedding("Ana", "Bea", "planning")
            await client.wait_durable()

            def record(event: TransactionEvent, watcher: Watcher = watcher) -> None:
                watcher.received.append(event.update)

            doc.observe(record)
            watchers.append(watcher)
        yield watchers


async def stored(running: RunningGateway, room: str) -> list[bytes]:
    return list((await running.node.store.load(RoomId(room))).blobs())


async def never_stored(running: RunningGateway, room: str, bad: bytes) -> None:
    assert all(bad not in blob for blob in await stored(running, room))


async def barrier(peer: MuxPeer, tok: str, name: str) -> None:
    """Open ``name`` and wait for its answer: the server handles a socket's messages in order,
    so whatever it would have sent for earlier messages has been sent by then."""
    await peer.open(name, tok)
    await peer.synced(name)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(
        tmp_path / "data",
        room_idle_seconds=0.2,
        jwt_secret=Secret(SECRET),
        mux_message_burst=20_000,
        mux_messages_per_second=20_000,
    )
    try:
        yield running
    finally:
        await stop_in_process(running)


# -- isolation ---------------------------------------------------------------------------------


async def test_a_document_outside_the_token_is_refused_alone(secured: RunningGateway) -> None:
    tok = token({"wed-a": Role.PLANNER})
    async with watching(secured, "wed-a", "wed-b") as (watch_a, watch_b), mux_peer(secured) as p:
        await p.open("wed-b", tok)
        await p.write("wed-b", venue="Intruder Hall")
        await barrier(p, tok, "wed-a")
        assert p.denied("wed-b") is not None
        assert "wed-b" in p.denied("wed-b")
        assert [kind for kind, _ in p.of("wed-b")] == [MuxType.AUTH], "only the denial"
        await p.write("wed-a", venue="Hall A")
        await eventually(lambda: watch_a.client.core().get("venue") == "Hall A", timeout=WAIT)
        assert not watch_b.saw(b"Intruder Hall")
        assert p.close_code is None, "the socket stays open"
    await never_stored(secured, "wed-b", b"Intruder Hall")


@pytest.mark.parametrize(
    "spelling",
    [
        "WED-A",
        "wed-a ",
        " wed-a",
        "w\u0435d-a",
        "wed-a\u200b",
        "wed\u2011a",
        "wed-a\n",
        "\uff57ed-a",
    ],
)
async def test_other_spellings_of_a_name_are_other_documents(
    secured: RunningGateway, spelling: str
) -> None:
    tok = token({"wed-a": Role.PLANNER})
    async with watching(secured, "wed-a") as (watch,), mux_peer(secured) as p:
        await p.open(spelling, tok)
        await p.write(spelling, venue="Lookalike Hall")
        await barrier(p, tok, "wed-a")
        assert p.denied(spelling) is not None
        assert [kind for kind, _ in p.of(spelling)] == [MuxType.AUTH]
        assert p.scope("wed-a") == "read-write"
        assert not watch.saw(b"Lookalike Hall")
        assert p.close_code is None
    await never_stored(secured, "wed-a", b"Lookalike Hall")
    if spelling.strip() and spelling.isascii() and "\n" not in spelling:
        assert await stored(secured, spelling) == []  # a valid id of another wedding: untouched


async def test_switching_a_documents_token_mid_session(secured: RunningGateway) -> None:
    both = token({"wed-a": Role.PLANNER, "wed-b": Role.PLANNER})
    async with watching(secured, "wed-a", "wed-b") as (watch_a, watch_b), mux_peer(secured) as p:
        await barrier(p, both, "wed-a")
        await barrier(p, both, "wed-b")
        # a token for wed-b only, sent for wed-a: wed-a closes, wed-b carries on
        await p.ws.send(mux.encode_token("wed-a", token({"wed-b": Role.PLANNER})))
        await eventually(lambda: p.denied("wed-a") is not None, timeout=WAIT)
        assert (MuxType.CLOSE, f"4503 {p.denied('wed-a')}") in p.of("wed-a")
        await p.write("wed-a", venue="After Switch")
        await p.write("wed-b", venue="Hall B")
        await eventually(lambda: watch_b.client.core().get("venue") == "Hall B", timeout=WAIT)
        assert not watch_a.saw(b"After Switch")
        # another user's token for an open document: closed too
        await p.ws.send(mux.encode_token("wed-b", token({"wed-b": Role.PLANNER}, subject="eve")))
        await eventually(lambda: p.denied("wed-b") is not None, timeout=WAIT)
        await p.write("wed-b", venue="Eve Hall")
        assert p.close_code is None
    await never_stored(secured, "wed-a", b"After Switch")
    await never_stored(secured, "wed-b", b"Eve Hall")


async def test_a_downgraded_token_makes_its_document_readonly_only(secured: RunningGateway) -> None:
    async with watching(secured, "wed-a", "wed-b") as (watch_a, watch_b), mux_peer(secured) as p:
        planner = token({"wed-a": Role.PLANNER, "wed-b": Role.PLANNER})
        await barrier(p, planner, "wed-a")
        await barrier(p, planner, "wed-b")
        viewer = token({"wed-a": Role.VIEWER, "wed-b": Role.PLANNER})
        await p.ws.send(mux.encode_token("wed-a", viewer))
        await eventually(lambda: p.scope("wed-a") == "readonly", timeout=WAIT)
        await p.write("wed-a", venue="Downgraded Hall")
        await p.write("wed-b", venue="Still Writable")
        await eventually(
            lambda: watch_b.client.core().get("venue") == "Still Writable", timeout=WAIT
        )
        await eventually(lambda: False in p.statuses("wed-a"), timeout=WAIT)
        assert not watch_a.saw(b"Downgraded Hall")
    await never_stored(secured, "wed-a", b"Downgraded Hall")


async def test_readonly_and_write_grants_on_one_socket_do_not_leak(secured: RunningGateway) -> None:
    tok = token({"wed-r": Role.VIEWER, "wed-w": Role.PLANNER})
    async with watching(secured, "wed-r", "wed-w") as (watch_r, watch_w), mux_peer(secured) as p:
        await barrier(p, tok, "wed-r")
        await barrier(p, tok, "wed-w")
        assert p.scope("wed-r") == "readonly"
        assert p.scope("wed-w") == "read-write"
        # interleaved: a write on the read-only document between writes on the writable one
        await p.write("wed-w", venue="Allowed 1")
        await p.write("wed-r", venue="Leaked Write")
        await p.write("wed-w", notes="Allowed 2")
        await eventually(lambda: watch_w.client.core().get("notes") == "Allowed 2", timeout=WAIT)
        await eventually(lambda: len(p.statuses("wed-r")) >= 2, timeout=WAIT)  # step 2 + update
        assert p.statuses("wed-r")[-1] is False, "the refused write is not applied"
        await eventually(lambda: p.statuses("wed-w")[-2:] == [True, True], timeout=WAIT)
        # the refusal is undone on the attacker's own document too
        await eventually(
            lambda: p.docs["wed-r"].get("core", type=Map).get("venue") is None, timeout=WAIT
        )
        assert not watch_r.saw(b"Leaked Write")
        assert watch_w.client.core()["venue"] == "Allowed 1"
    await never_stored(secured, "wed-r", b"Leaked Write")
    blobs = b"".join(await stored(secured, "wed-w"))
    assert b"Allowed 1" in blobs
    assert b"Allowed 2" in blobs


async def test_a_message_for_a_document_never_opened_is_dropped(secured: RunningGateway) -> None:
    tok = token({"wed-a": Role.PLANNER, "wed-x": Role.PLANNER})
    async with watching(secured, "wed-x") as (watch_x,), mux_peer(secured) as p:
        await p.write("wed-x", venue="Unopened Hall")
        await p.ws.send(mux.encode_message("wed-x", SyncStep1(b"\x00")))
        await barrier(p, tok, "wed-a")
        assert p.of("wed-x") == [], "nothing comes back for a document never opened"
        assert not watch_x.saw(b"Unopened Hall")
        assert p.close_code is None
    await never_stored(secured, "wed-x", b"Unopened Hall")


async def test_ten_thousand_document_names_on_one_socket(secured: RunningGateway) -> None:
    covered = [f"n-{i}" for i in range(120)]
    tok = token(dict.fromkeys(covered, Role.VIEWER))
    names = [f"n-{i}" for i in range(10_000)]
    async with mux_peer(secured) as p:
        for name in names:
            await p.ws.send(mux.encode_token(name, tok))

        def answers() -> dict[str, int]:
            """Each name's auth answer (the first): 2 authenticated, 1 permission-denied."""
            first: dict[str, int] = {}
            for name, kind, body in p.received:
                if kind == MuxType.AUTH:
                    first.setdefault(name, body[0])  # type: ignore[index]
            return first

        await eventually(lambda: len(answers()) == 10_000, timeout=60, message="every answer")
        auth = answers()
        granted = [n for n in names if auth[n] == MuxAuthType.AUTHENTICATED]
        denied = [n for n in names if auth[n] == MuxAuthType.PERMISSION_DENIED]
        assert granted == names[:100], "the first 100 open: GATEWAY_MUX_MAX_DOCUMENTS"
        assert denied == names[100:]
        assert "GATEWAY_MUX_MAX_DOCUMENTS" in (p.denied("n-100") or "")
        assert len(secured.node.rooms.slots) <= 100
        # closing one document makes room for another; the socket never closed
        await p.ws.send(mux.encode_close("n-0"))
        await p.ws.send(mux.encode_token("n-100", tok))
        await eventually(lambda: p.scope("n-100") == "readonly", timeout=WAIT)
        assert p.close_code is None


async def test_closing_one_document_leaves_the_others_open(secured: RunningGateway) -> None:
    tok = token({"wed-a": Role.PLANNER, "wed-b": Role.PLANNER})
    async with watching(secured, "wed-a", "wed-b") as (watch_a, watch_b), mux_peer(secured) as p:
        await barrier(p, tok, "wed-a")
        await barrier(p, tok, "wed-b")
        await p.ws.send(mux.encode_close("wed-a"))
        await eventually(
            lambda: (
                (room := secured.node.room(RoomId("wed-a"))) is not None and len(room.members) == 1
            ),
            timeout=WAIT,
            message="the socket's session left wed-a",
        )
        await p.write("wed-a", venue="Closed Hall")
        await watch_a.client.wait_synced()
        watch_a.client.set_core(notes="planner edit")
        await p.write("wed-b", venue="Open Hall")
        await eventually(lambda: watch_b.client.core().get("venue") == "Open Hall", timeout=WAIT)
        assert not any(b"planner edit" in bytes(str(body), "utf-8") for _, body in p.of("wed-a"))
        assert not watch_a.saw(b"Closed Hall")
    await never_stored(secured, "wed-a", b"Closed Hall")


async def test_a_sustained_flood_is_closed_with_4429(tmp_path: Path) -> None:
    running = await start_in_process(
        tmp_path / "data",
        mux_messages_per_second=50,
        mux_message_burst=50,
        rate_pacing_seconds=0.5,
        rate_window_seconds=60,
    )
    try:
        async with mux_peer(running) as p:
            with contextlib.suppress(ConnectionClosed):
                for i in range(2_000):
                    await p.ws.send(mux.encode_close(f"x-{i}"))
            await eventually(lambda: p.close_code is not None, timeout=WAIT)
            assert p.close_code == 4429
    finally:
        await stop_in_process(running)


async def test_a_socket_that_does_not_read_is_closed_with_4001_and_others_go_on(
    tmp_path: Path,
) -> None:
    running = await start_in_process(
        tmp_path / "data",
        max_message_bytes=65536,
        mux_outbox_bytes=131072,  # 128 KiB may wait for one socket, transport included
        socket_send_buffer_bytes=65536,
        ws_ping_interval=0.0,
        messages_per_second=1e6,
    )
    stalled = RawClient(f"ws://127.0.0.1:{running.port}/mux")
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                GatewayClient(running.ws_url, "stalled") as writer,
                mux_peer(running) as reader,
            ):
                await writer.wait_synced()
                writer.create_wedding(partner_a="Ana", partner_b="Bea")
                await stalled.open()  # a small receive buffer, and it never reads
                assert stalled.protocol is not None
                assert stalled.sock is not None
                stalled.protocol.send_binary(mux.encode_token("stalled", ""))
                stalled.protocol.send_binary(mux.encode_message("stalled", SyncStep1(b"\x00")))
                data = b"".join(stalled.protocol.data_to_send())
                await asyncio.get_running_loop().sock_sendall(stalled.sock, data)
                await barrier(reader, "", "stalled")
                await eventually(lambda: running.node.fanout.connections == 3, timeout=WAIT)
                timeline = reader.docs["stalled"].get("timeline", type=Array)
                for n in range(400):  # ~600 KB to every member: more than the socket holds
                    writer.add_timeline_entry(
                        id=f"e{n}", title="t", start="14:00", notes="x" * 1500
                    )
                    if n % 20 == 19:  # at the pace of the reading socket (its outbox is small)
                        await eventually(lambda n=n: len(timeline) == n + 1, timeout=WAIT)
                await eventually(lambda: running.node.fanout.connections == 2, timeout=30)
                assert reader.close_code is None
        closed = [e for e in logs if e["event"] == "mux_closed"]
        codes = [(e["code"], e["by"]) for e in closed]
        assert codes.count((4001, "gateway")) == 1, "the stalled socket, and it alone"
        assert set(codes) == {(4001, "gateway"), (1000, "client")}, codes
    finally:
        stalled.close()
        await stop_in_process(running)


async def test_a_revoked_token_closes_its_document_only(secured: RunningGateway) -> None:
    doomed = token({"wed-a": Role.PLANNER})
    kept = token({"wed-b": Role.PLANNER})
    claims = jwt.decode(doomed, options={"verify_signature": False})
    async with watching(secured, "wed-a", "wed-b") as (watch_a, watch_b), mux_peer(secured) as p:
        await barrier(p, doomed, "wed-a")
        await barrier(p, kept, "wed-b")
        async with httpx.AsyncClient(base_url=secured.http_url) as http:
            admin = token({}, subject="ops", admin=True)
            answer = await http.post(
                "/v1/revocations",
                json={"jti": claims["jti"], "expires_at": claims["exp"]},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert answer.status_code == 200, answer.text
        await eventually(lambda: p.denied("wed-a") == "token revoked", timeout=WAIT)
        assert (MuxType.CLOSE, "4401 token revoked") in p.of("wed-a")
        await p.write("wed-a", venue="Revoked Hall")
        await p.write("wed-b", venue="Kept Hall")
        await eventually(lambda: watch_b.client.core().get("venue") == "Kept Hall", timeout=WAIT)
        assert not watch_a.saw(b"Revoked Hall")
        assert p.close_code is None
        # the revoked token opens nothing again on this socket
        await p.ws.send(mux.encode_token("wed-a", doomed))
        await eventually(lambda: len(p.auth("wed-a")) == 3, timeout=WAIT)
        assert p.denied("wed-a") == "token revoked"
    await never_stored(secured, "wed-a", b"Revoked Hall")


async def test_the_provider_ping_and_the_handshake_deadline(tmp_path: Path) -> None:
    running = await start_in_process(
        tmp_path / "data", mux_ping_seconds=0.05, handshake_timeout_seconds=1.0
    )
    try:
        async with mux_peer(running) as p:
            await p.open("wed-a", "")
            await p.synced("wed-a")
            await eventually(
                lambda: sum(kind == MuxType.PING for _, kind, _ in p.received) >= 3, timeout=WAIT
            )
            await p.ws.send(mux.PONG)  # the provider's answer: accepted, ignored
            await p.write("wed-a", partner_a="Ana", partner_b="Bea", status="planning")
            await eventually(lambda: p.statuses("wed-a")[-1:] == [True], timeout=WAIT)
            assert p.close_code is None
        async with mux_peer(running) as idle:  # opens no document: closed at the deadline
            await eventually(lambda: idle.close_code is not None, timeout=WAIT)
            assert idle.close_code == 4408
    finally:
        await stop_in_process(running)


async def test_a_document_that_loads_slowly_holds_up_neither_the_others_nor_its_own_edits(
    secured: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = secured.node.store
    load, release = store.load, asyncio.Event()

    async def slow_load(room: RoomId) -> Any:
        if room == "wed-slow":
            await release.wait()  # this wedding's history takes its time to come
        return await load(room)

    monkeypatch.setattr(store, "load", slow_load)
    tok = token({"wed-slow": Role.PLANNER, "wed-b": Role.PLANNER})
    async with watching(secured, "wed-b") as (watch_b,), mux_peer(secured) as p:
        await p.open("wed-slow", tok)
        await p.write("wed-slow", partner_a="Slow", partner_b="Poke", status="planning")
        await barrier(p, tok, "wed-b")  # answered while wed-slow still loads
        await p.write("wed-b", venue="Fast Hall")
        await eventually(lambda: watch_b.client.core().get("venue") == "Fast Hall", timeout=WAIT)
        assert p.scope("wed-slow") == "read-write"
        assert not any(kind == MuxType.SYNC for kind, _ in p.of("wed-slow")), "still loading"
        release.set()
        await p.synced("wed-slow")
        await eventually(lambda: p.statuses("wed-slow")[-1:] == [True], timeout=WAIT)
    assert any(b"Slow" in blob for blob in await stored(secured, "wed-slow"))


async def test_a_drain_tells_documents_that_asked_then_closes_the_socket_with_1012(
    tmp_path: Path,
) -> None:
    running = await start_in_process(tmp_path / "data")
    try:
        async with mux_peer(running) as p:
            hello = codec.encode(Hello(1, Feature.ACKS))
            p.docs["wed-a"] = Doc()  # it answers the server's step 1
            await p.ws.send(mux.encode_token("wed-a", ""))
            await p.ws.send(mux.encode_stateless("wed-a", mux.wrap_extension(hello)))
            await p.ws.send(mux.encode_message("wed-a", SyncStep1(b"\x00")))
            await barrier(p, "", "wed-b")  # a stock document: no HELLO
            await p.write("wed-a", partner_a="Ana", partner_b="Bea", status="planning")
            await eventually(lambda: p.statuses("wed-a") == [True, True], timeout=WAIT)
            await running.app.drain()
            await eventually(lambda: p.close_code is not None, timeout=WAIT)
            assert p.close_code == 1012
            wrapped = [
                codec.decode_server_message(mux.unwrap_extension(str(body)) or b"")
                for kind, body in p.of("wed-a")
                if kind == MuxType.STATELESS
            ]
            names = [type(m).__name__ for m in wrapped]
            assert names[0] == "Hello"
            assert names[-1] == "Drain", "the DRAIN before the close"
            assert set(names[1:-1]) == {"Ack"}
            assert getattr(wrapped[-2], "seq", None) == 2, "its step 2 and its update, durable"
            assert not any(kind == MuxType.STATELESS for kind, _ in p.of("wed-b"))
    finally:
        await stop_in_process(running)


async def test_a_full_document_queue_stops_reading_the_socket_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_in_process(tmp_path / "data", mux_document_queue=2)
    store = running.node.store
    load, release = store.load, asyncio.Event()

    async def slow_load(room: RoomId) -> Any:
        if room == "wed-slow":
            await release.wait()
        return await load(room)

    monkeypatch.setattr(store, "load", slow_load)
    try:
        async with mux_peer(running) as p:
            await p.open("wed-slow", "")  # its step 1 waits in the queue: 1 of 2
            await p.write("wed-slow", partner_a="A", partner_b="B", status="planning")  # 2 of 2
            await p.write("wed-slow", venue="V1")  # the queue is full: reading stops here
            await p.write("wed-slow", venue="V2")
            await p.ws.send(mux.encode_token("wed-b", ""))
            await eventually(lambda: p.scope("wed-slow") is not None, timeout=WAIT)
            with pytest.raises(AssertionError):  # not read yet: backpressure
                await eventually(lambda: p.scope("wed-b") is not None, timeout=0.5)
            release.set()
            await eventually(lambda: p.scope("wed-b") is not None, timeout=WAIT)
            await eventually(lambda: p.statuses("wed-slow")[-3:] == [True] * 3, timeout=WAIT)
            assert p.close_code is None
        blobs = b"".join((await load(RoomId("wed-slow"))).blobs())
        assert b"V2" in blobs
    finally:
        await stop_in_process(running)


async def test_an_overloaded_node_refuses_a_new_document_and_keeps_the_open_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_in_process(tmp_path / "data")
    try:
        async with mux_peer(running) as p:
            await barrier(p, "", "wed-a")
            overload = running.node.overload
            assert overload is not None
            monkeypatch.setattr(overload, "reason", lambda: "loop_lag")  # the node is behind
            await p.open("wed-b", "")
            await eventually(lambda: p.denied("wed-b") is not None, timeout=WAIT)
            closes = [body for kind, body in p.of("wed-b") if kind == MuxType.CLOSE]
            assert len(closes) == 1
            assert str(closes[0]).startswith("1013 ")
            await p.write("wed-a", partner_a="Ana", partner_b="Bea", status="planning")
            await eventually(lambda: p.statuses("wed-a")[-1:] == [True], timeout=WAIT)
            assert p.close_code is None
    finally:
        await stop_in_process(running)


async def test_metrics_count_sockets_documents_and_refusals(secured: RunningGateway) -> None:
    tok = token({"wed-a": Role.PLANNER, "wed-b": Role.PLANNER})
    async with mux_peer(secured) as p:
        await barrier(p, tok, "wed-a")
        await barrier(p, tok, "wed-b")
        await p.open("wed-c", tok)  # not in the token
        await p.ws.send(mux.encode_close("never-opened"))
        await eventually(lambda: p.denied("wed-c") is not None, timeout=WAIT)
        async with httpx.AsyncClient(base_url=secured.http_url) as http:
            text = (await http.get("/metrics")).text
        assert "gateway_mux_sockets 1.0" in text
        assert "gateway_mux_documents 2.0" in text
        assert "gateway_mux_documents_refused_total 1.0" in text
        assert "gateway_mux_messages_ignored_total 2.0" in text  # wed-c's step 1, the close
