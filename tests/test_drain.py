"""The drain that holds (issue 16 item 5): clients of many weddings are closed over a spread,
every edit acknowledged before a close is durable, and none is closed before its turn.

The spread's clock is faked (``drain_sleep``): time moves only when the node asks to wait, so the
test checks when each client was closed without reading the wall clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway import drain
from gateway.adapters.sqlite_store import SqliteStore
from gateway.core.session import Session
from gateway.errors import GatewayError, ShuttingDown
from gateway.ports import Append
from gateway.types import RoomId
from tests.test_node import GatedStore, created_wedding, member, started
from wedsync_protocol import codec
from wedsync_protocol.messages import Ack, Drain, Feature, SyncUpdate

WEDDINGS = 12
CLIENTS_PER_WEDDING = 6
SPREAD = 8.0


# -- the schedule -----------------------------------------------------------------------------


def test_the_schedule_spreads_every_client_over_the_window_once() -> None:
    clients = list(range(2000))
    groups = drain.schedule(clients, 10.0, random.Random(7))
    closed = [c for g in groups for c in g.clients]
    assert sorted(closed) == clients  # each client once
    times = [g.at for g in groups]
    assert times == sorted(times)
    assert 0.0 <= times[0] <= 0.5
    assert 9.5 <= times[-1] <= 10.0
    # uniform: no tick takes more than a few times its share (10 s / 50 ms = 200 ticks)
    assert max(len(g.clients) for g in groups) <= 4 * len(clients) / 200


def test_no_window_closes_everyone_at_once_and_nobody_is_no_group() -> None:
    assert drain.schedule([], 5.0, random.Random(1)) == []
    (group,) = drain.schedule([1, 2, 3], 0.0, random.Random(1))
    assert (group.at, group.clients) == (0.0, [1, 2, 3])


# -- the node ---------------------------------------------------------------------------------


class RecordingStore(GatedStore):
    """Also remembers every update it made durable."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.durable: set[bytes] = set()

    async def append(self, batch: Sequence[Append]) -> list[int]:
        offsets = await super().append(batch)
        self.durable.update(item.update for item in batch)
        return offsets


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RecordingStore]:
    async with SqliteStore.open(tmp_path) as inner:
        yield RecordingStore(inner)


@dataclass
class FakeClock:
    """The drain's clock: ``sleep`` moves time on at once, after letting ``meanwhile`` run."""

    now: float = 0.0
    meanwhile: list[Any] = field(default_factory=list)

    sleeps: int = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.sleeps % 10 == 0:  # now and then: the load of a test, not of a Saturday
            for job in self.meanwhile:
                job()
        await asyncio.sleep(0)
        self.now += seconds


@dataclass
class Client:
    """One member: its own Doc (so its updates have its own clock), what it sent, what it got."""

    clock: FakeClock
    store: RecordingStore
    client_id: int
    wedding: bytes
    sent: list[bytes] = field(default_factory=list)
    acked_durable: list[bool] = field(default_factory=list)
    """For each ACK: were all the updates it acknowledged durable when it was written?"""
    events: list[Any] = field(default_factory=list)
    closed_at: float | None = None
    slot: Any = None
    session: Session | None = None

    def __post_init__(self) -> None:
        self.doc: Doc[Any] = Doc(client_id=self.client_id)
        self.doc.apply_update(self.wedding)

    def edit(self) -> bytes:
        before = self.doc.get_state()
        self.doc.get("core", type=Map)["notes"] = f"{self.client_id}-{len(self.sent)}"
        update = self.doc.get_update(before)
        self.sent.append(update)
        return update

    # the Outlet the node writes to
    def send_nowait(self, data: bytes) -> None:
        if self.closed_at is not None:
            return
        message = codec.decode_server_message(data)
        self.events.append(message)
        if isinstance(message, Ack):
            self.acked_durable.append(
                all(u in self.store.durable for u in self.sent[: message.seq])
            )

    def close_nowait(self, error: GatewayError) -> None:
        if self.closed_at is None:
            self.closed_at = self.clock.now
            self.events.append(error)


async def test_a_drain_closes_clients_of_many_weddings_over_the_spread_with_their_edits_durable(
    store: RecordingStore,
) -> None:
    clock = FakeClock()
    node = started(
        store,
        drain_spread_seconds=SPREAD,
        drain_random=random.Random(16),
        drain_sleep=clock.sleep,
    )
    clients: list[Client] = []
    async with node:
        for w in range(WEDDINGS):
            room = RoomId(f"wedding-{w}")
            wedding = created_wedding(client_id=1000 + w)
            await store.inner.append([Append(room, wedding)])
            for c in range(CLIENTS_PER_WEDDING):
                client = Client(clock, store, 10 * (w + 1) * 100 + c, wedding)
                client.slot, client.session = await member(node, client, Feature.ACKS, room=room)
                clients.append(client)

        def everyone_still_open_edits() -> None:
            for client in clients:
                if client.closed_at is None:
                    node.receive(client.slot, client.session, SyncUpdate(client.edit()))

        everyone_still_open_edits()
        clock.meanwhile.append(everyone_still_open_edits)  # edits keep coming during the spread
        await node.drain()
        for client in clients:
            node.leave(client.slot, client.session)

    assert all(c.closed_at is not None for c in clients)
    times = sorted(c.closed_at for c in clients if c.closed_at is not None)
    assert times[-1] <= SPREAD
    assert times[-1] - times[0] >= SPREAD / 2  # spread, not a storm
    assert max(times.count(t) for t in set(times)) <= len(clients) / 4
    for client in clients:
        *_, drain_notice, close = client.events
        assert drain_notice == Drain(0)
        assert isinstance(close, ShuttingDown)
        assert close.close_code == 1012
        acks = [e for e in client.events if isinstance(e, Ack)]
        assert acks, "every client had an edit acknowledged before its close"
        assert all(client.acked_durable)  # no ACK before its updates were durable
        # the clients closed later kept editing, and those edits were acked before the close
        assert acks[-1].seq >= 1
    late = [c for c in clients if c.closed_at and c.closed_at > SPREAD / 2]
    assert late
    assert all(len(c.sent) > 1 and c.events[-3] == Ack(len(c.sent)) for c in late)
    # everything acknowledged is in the store after the node stopped (compacted or not)
    for w in range(WEDDINGS):
        blobs = (await store.inner.load(RoomId(f"wedding-{w}"))).blobs()
        stored = doc_of(blobs)
        for client in clients[w * CLIENTS_PER_WEDDING : (w + 1) * CLIENTS_PER_WEDDING]:
            acked = max(e.seq for e in client.events if isinstance(e, Ack))
            with_acked = doc_of([*blobs, *client.sent[:acked]])
            assert with_acked.get_state() == stored.get_state()  # they add nothing: stored


def doc_of(updates: Sequence[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


async def test_a_stopping_server_drains_real_clients_of_many_weddings(tmp_path: Path) -> None:
    """Through uvicorn (GatewayServer.shutdown drains before uvicorn closes anything)."""
    from contextlib import AsyncExitStack

    from gateway_client import GatewayClient
    from tests.conftest import start_in_process, stop_in_process
    from tests.helpers import eventually

    running = await start_in_process(tmp_path / "data", drain_spread_seconds=0.5)
    weddings = [f"drain-{w}" for w in range(6)]
    async with AsyncExitStack() as stack:
        clients = []
        for wedding in weddings:
            for i in range(3):
                client = GatewayClient(running.ws_url, wedding, reconnect=False)
                await stack.enter_async_context(client)
                await client.wait_synced()
                if i == 0:
                    await client.wait_durable(client.create_wedding("Ana", "Bea"))
                clients.append(client)
        for n, client in enumerate(clients):
            for k in range(5):
                client.set_core(notes=f"{n}-{k}")  # not waited for: in flight at the SIGTERM
        await stop_in_process(running)
        await eventually(lambda: all(c.last_close is not None for c in clients))
        assert {c.last_close[0] for c in clients if c.last_close} == {1012}
        assert all(c.protocol.drain is not None for c in clients)  # DRAIN before the close
        assert [c.protocol.unacked for c in clients] == [0] * len(clients)  # all acked
        assert running.node.drained_clients == len(clients)
        async with SqliteStore.open(tmp_path / "data") as store:
            for wedding in weddings:
                blobs = (await store.load(RoomId(wedding))).blobs()
                stored = doc_of(blobs)
                for client in clients:
                    if client.url.endswith(f"/{wedding}"):
                        mine = client.doc.get_update()
                        assert doc_of([*blobs, mine]).get_state() == stored.get_state()
