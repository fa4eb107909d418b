"""pycrdt's own ``Provider`` (from PyPI) against the in-process gateway, alone and beside npm yjs.

The provider speaks through a ``Channel``; ``WebsocketChannel`` adapts a ``websockets`` client
connection to it. Going offline closes the connection; coming back opens a new Provider on a new
connection with the same Doc. Everything written is a valid wedding (proto/schema.md): the
gateway undoes anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from pycrdt import Array, Doc, Map, Provider
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.types import RoomId
from tests.conftest import RunningGateway
from tests.helpers import eventually
from tests.interop import (
    assert_clients_match,
    assert_same_document,
    canonical,
    doc_json,
    finish_script,
    read_event,
    require_node,
    script_running,
    state_vector,
)

pytestmark = pytest.mark.interop

SYNC_DEADLINE = 5.0
COUPLE = {"partner_a": "Ana Silva", "partner_b": "Bea Costa", "status": "planning"}
"""The core fields every wedding holds from its first update (proto/schema.md)."""


class WebsocketChannel:
    """pycrdt's ``Channel`` protocol over a ``websockets`` client connection.

    Iteration ends when the connection closes. A send on a closed connection is dropped, as a
    browser client drops what it sends while offline: the next sync handshake repairs it.
    """

    def __init__(self, websocket: ClientConnection, path: str) -> None:
        self._websocket = websocket
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._websocket.send(message)

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        if isinstance(message, str):
            raise AssertionError(f"the gateway sent a text frame: {message!r}")
        return message


@contextlib.asynccontextmanager
async def online(url: str, doc: Doc[Any]) -> AsyncIterator[ClientConnection]:
    """Connect ``doc`` to the room at ``url`` with pycrdt's Provider; wait until it is synced.

    Leaving the block stops the provider (after it sent what it had queued), then closes the
    connection: the client is offline.
    """
    async with connect(url, proxy=None, compression=None) as websocket:
        async with Provider(doc, WebsocketChannel(websocket, url)) as provider:
            async with asyncio.timeout(SYNC_DEADLINE):
                await provider.synced.wait()
            yield websocket
        code = websocket.close_code
        assert code is None, f"the gateway closed the connection with code {code}"


def new_wedding() -> str:
    return f"interop-py-{uuid4().hex[:12]}"


def new_doc() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc["core"] = Map()
    doc["timeline"] = Array()
    return doc


def core(doc: Doc[Any]) -> Map[Any]:
    root: Map[Any] = doc.get("core", type=Map)
    return root


def timeline(doc: Doc[Any]) -> Array[Any]:
    root: Array[Any] = doc.get("timeline", type=Array)
    return root


def create_wedding(doc: Doc[Any], **fields: Any) -> None:
    """Set the required core fields (and ``fields``) in one update: a wedding's first core
    update must set them all."""
    with doc.transaction():
        for key, value in {**COUPLE, **fields}.items():
            core(doc)[key] = value


def add_event(doc: Doc[Any], entry_id: str, *, start: str = "16:00", **fields: Any) -> None:
    """Append a timeline entry: ``entry_id``, a title (the id unless given) and ``start``."""
    timeline(doc).append(Map({"id": entry_id, "title": entry_id, "start": start, **fields}))


def event_ids(doc: Doc[Any]) -> list[str]:
    return [entry["id"] for entry in timeline(doc).to_py() or []]


def server_doc(gateway: RunningGateway, wedding: str) -> Doc[Any]:
    room = gateway.node.room(RoomId(wedding))
    assert room is not None, f"room {wedding} is not loaded on the gateway"
    doc: Doc[Any] = room.doc
    return doc


def same(*docs: Doc[Any]) -> bool:
    """All docs have equal JSON and state vectors (for ``eventually``)."""
    first, *rest = docs
    for doc in rest:
        assert canonical(doc_json(doc)) == canonical(doc_json(first))
        assert state_vector(doc) == state_vector(first)
    return True


async def test_two_pycrdt_clients_editing_concurrently_converge(gateway: RunningGateway) -> None:
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    a, b = new_doc(), new_doc()
    # each side's own core key: concurrent edits of different keys of one map must merge
    note = {"a": "notes", "b": "venue_address"}
    async with online(url, a), online(url, b):
        create_wedding(a)
        add_event(a, "ceremony", title="Ceremony", start="15:00")
        await eventually(lambda: same(a, b, server_doc(gateway, wedding)), timeout=5)

        # No await between the two sides' edits: neither has seen the other's when making its own.
        for i in range(20):
            for name, doc in (("a", a), ("b", b)):
                with doc.transaction():
                    core(doc)["venue"] = f"{name}-venue-{i}"
                    core(doc)[note[name]] = f"{name}-note-{i}"
                    timeline(doc)[0]["title"] = f"Ceremony ({name} {i})"
                add_event(doc, f"{name}-{i}", title=f"{name} item {i}")
        del timeline(a)[1]  # a's own first entry
        del core(b)["venue_address"]  # b's own key

        await eventually(lambda: same(a, b, server_doc(gateway, wedding)), timeout=5)
        ids = event_ids(a)
        assert len(ids) == 40
        assert ids[0] == "ceremony"
        assert "a-0" not in ids
        assert core(a)["venue"] in {"a-venue-19", "b-venue-19"}
        assert "venue_address" not in core(a)
        assert core(a)["notes"] == "a-note-19"


async def test_pycrdt_client_editing_offline_converges_after_reconnecting(
    gateway: RunningGateway,
) -> None:
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    a, b = new_doc(), new_doc()
    async with online(url, b):
        async with online(url, a):
            add_event(a, "dinner", title="Dinner", start="19:00")
            create_wedding(b)
            await eventually(lambda: same(a, b), timeout=5)
        # a is offline: both edit, including the same entry and the same key.
        for i in range(10):
            add_event(a, f"a-offline-{i}")
            add_event(b, f"b-online-{i}")
        core(a)["venue"] = "Lakeside (a, offline)"
        core(b)["venue"] = "Hilltop (b, online)"
        timeline(a)[0]["start"] = "19:30"
        del timeline(b)[0]
        await eventually(lambda: same(b, server_doc(gateway, wedding)), timeout=5)
        assert "b-online-0" not in event_ids(a), "a received an edit while offline"
        assert "a-offline-0" not in event_ids(b)

        # a comes back: a new Provider on a new connection, with the same Doc.
        async with online(url, a):
            await eventually(lambda: same(a, b, server_doc(gateway, wedding)), timeout=5)
            ids = event_ids(a)
            assert "dinner" not in ids
            assert sum(i.startswith("a-offline-") for i in ids) == 10
            assert sum(i.startswith("b-online-") for i in ids) == 10
            assert core(a)["venue"] in {"Lakeside (a, offline)", "Hilltop (b, online)"}


async def test_pycrdt_client_offline_while_the_room_unloads_converges_after_reconnecting(
    gateway: RunningGateway,
) -> None:
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    a = new_doc()
    async with online(url, a):
        add_event(a, "first")
    add_event(a, "offline")  # nobody is connected while a edits
    await eventually(lambda: gateway.node.room(RoomId(wedding)) is None, timeout=5)

    b = new_doc()
    async with online(url, b):
        assert event_ids(b) == ["first"], "the reloaded room has what was sent before"
        add_event(b, "b-while-a-offline")
        async with online(url, a):
            await eventually(lambda: same(a, b, server_doc(gateway, wedding)), timeout=5)
            assert sorted(event_ids(a)) == ["b-while-a-offline", "first", "offline"]


async def test_late_pycrdt_joiner_receives_the_full_state(gateway: RunningGateway) -> None:
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    a, b = new_doc(), new_doc()
    async with online(url, a), online(url, b):
        create_wedding(b)
        for i in range(25):
            add_event(a, f"a-{i}", title=f"Item {i}")
            core(b)["guest_count"] = 100 + i  # overwritten values: tombstones
            core(b)["notes"] = f"Guest {i} replied"
        del core(b)["notes"]
        await eventually(lambda: same(a, b, server_doc(gateway, wedding)), timeout=5)

        late = new_doc()
        async with online(url, late):
            # The provider is synced once it applied the server's step 2: no further waiting.
            assert_same_document(a, late, "the late joiner when synced")
            add_event(late, "late")
            await eventually(lambda: same(a, b, late, server_doc(gateway, wedding)), timeout=5)
            assert event_ids(a)[-1] == "late"
            assert core(late).to_py() == {**COUPLE, "guest_count": 124}


async def test_pycrdt_and_yjs_clients_in_one_wedding_converge(gateway: RunningGateway) -> None:
    require_node()
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    py = new_doc()
    async with online(url, py):
        create_wedding(py)
        add_event(py, "py-first")
        async with script_running(
            "client.mjs", gateway.ws_url, wedding, "--name", "js", "--edits", "js",
            "--count", "20", "--mark", "js-done", "--await-mark", "py-done",
        ) as script:  # fmt: skip
            await read_event(script, "synced")
            # Edit while the JS client makes its own edits.
            for i in range(20):
                add_event(py, f"py-{i}")
                core(py)["notes"] = f"py-note-{i}"
                core(py)["venue"] = f"py-venue-{i}"
            add_event(py, "py-done")
            run = await finish_script(script, "client.mjs")
        js = run.result["clients"][0]
        await eventually(lambda: "js-done" in event_ids(py), timeout=5)
        server = server_doc(gateway, wedding)
        await eventually(lambda: same(py, server), timeout=5)
        assert canonical(js["json"]) == canonical(doc_json(py))
        assert_clients_match([js], server)
        ids = event_ids(py)
        assert ids[0] == "py-first"
        assert {f"py-{i}" for i in range(20)} | {f"js-{i}" for i in range(20)} <= set(ids)
        assert core(py)["notes"] == "py-note-19"
        assert core(py)["venue"] in {"py-venue-19", "js-venue-19"}
