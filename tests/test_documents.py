"""gateway/documents.py: a wedding read from its loaded room, else rebuilt from the store."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway import documents
from gateway.adapters.sqlite_store import SqliteStore
from gateway.core.limits import Limits
from gateway.core.room import Room
from gateway.errors import BackendUnavailable
from gateway.ports import Append, History
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway

WEDDING = RoomId("documents-1")


def edit(client_id: int, **core: Any) -> bytes:
    doc: Doc[Any] = Doc(client_id=client_id)
    with doc.transaction():
        doc.get("core", type=Map).update(core)
    return doc.get_update()


def core_of(doc: Doc[Any]) -> dict[str, Any]:
    return doc.get("core", type=Map).to_py() or {}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path) as opened:
        yield opened


class DownStore(SqliteStore):
    """The real store whose reads fail, as when its disk or database goes away."""

    async def load(self, room: RoomId) -> History:
        raise BackendUnavailable("the store is down")


async def test_a_wedding_never_written_is_empty_at_epoch_1(store: SqliteStore) -> None:
    read = await documents.read_document(None, store, WEDDING, lambda doc: doc.get_update())
    assert (read.epoch, read.offset, read.value) == (1, 0, b"\x00\x00")


@pytest.mark.parametrize("in_thread", [False, True], ids=["on-loop", "in-thread"])
async def test_without_a_room_the_store_is_rebuilt(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, in_thread: bool
) -> None:
    if in_thread:
        monkeypatch.setattr(documents, "THREAD_HISTORY_BYTES", 0)
    offsets = await store.append(
        [Append(WEDDING, edit(1, venue="Villa Rosa")), Append(WEDDING, edit(2, guests=80))]
    )
    threads: list[threading.Thread] = []

    def render(doc: Doc[Any]) -> dict[str, Any]:
        threads.append(threading.current_thread())
        return core_of(doc)

    read = await documents.read_document(None, store, WEDDING, render)
    assert read.value == {"venue": "Villa Rosa", "guests": 80.0}
    assert (read.epoch, read.offset) == (1, offsets[-1])
    assert (threads[0] is threading.main_thread()) is not in_thread


async def test_a_loaded_room_is_rendered_at_its_own_position(store: SqliteStore) -> None:
    await store.append([Append(WEDDING, edit(1, venue="stored only"))])
    room = Room(WEDDING, [edit(1, venue="in the room")], limits=Limits(), epoch=3, position=42)
    seen: list[Doc[Any]] = []

    def render(doc: Doc[Any]) -> dict[str, Any]:
        seen.append(doc)
        return core_of(doc)

    read = await documents.read_document(room, store, WEDDING, render)
    assert (read.epoch, read.offset, read.value) == (3, 42, {"venue": "in the room"})
    assert seen == [room.doc]  # the live Doc itself: no copy for a light rendering
    heavy = await documents.read_document(room, store, WEDDING, render, heavy=True)
    assert (heavy.epoch, heavy.offset, heavy.value) == (3, 42, {"venue": "in the room"})
    assert seen[-1] is not room.doc  # a heavy rendering works on a copy, off the room


async def test_a_poisoned_room_is_read_from_the_store(store: SqliteStore) -> None:
    [offset] = await store.append([Append(WEDDING, edit(1, venue="stored"))])
    room = Room(WEDDING, [edit(1, venue="untrusted")], limits=Limits(), position=99)
    room.poisoned = True
    read = await documents.read_document(room, store, WEDDING, core_of)
    assert (read.offset, read.value) == (offset, {"venue": "stored"})


async def test_a_failing_store_raises_backend_unavailable(tmp_path: Path) -> None:
    async with DownStore.open(tmp_path) as down:
        with pytest.raises(BackendUnavailable, match="the store is down"):
            await documents.read_document(None, down, WEDDING, core_of)


async def test_the_node_reads_through_its_room_or_store(gateway: RunningGateway) -> None:
    async with GatewayClient(gateway.ws_url, WEDDING) as client:
        await client.wait_synced()
        client.create_wedding("Ana", "Bea", "planning")
        await client.wait_durable()
        loaded = await gateway.node.read_document(WEDDING, core_of)
        assert loaded.value == client.core()
        assert loaded.offset == gateway.node.room(WEDDING).position
    history = await gateway.node.store.load(WEDDING)
    assert loaded.offset == history.last_offset  # durable: the room's position is the store's
