"""Stock npm ``yjs`` + ``y-websocket`` clients (tests/interop/js) against the in-process gateway."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from gateway.types import RoomId
from tests.conftest import RunningGateway, free_port, wait_listening
from tests.helpers import eventually
from tests.interop import (
    ROOT,
    assert_clients_match,
    canonical,
    finish_script,
    hold_room,
    read_event,
    require_node,
    run_script,
    script_running,
)

pytestmark = pytest.mark.interop


def new_wedding() -> str:
    return f"interop-{uuid4().hex[:12]}"


def server_doc(gateway: RunningGateway, wedding: str) -> Any:
    room = gateway.node.room(RoomId(wedding))
    assert room is not None, f"room {wedding} is not loaded on the gateway"
    return room.doc


def assert_converged(clients: list[dict[str, Any]]) -> None:
    """The clients' own reports agree (re-checked here, not only inside the script)."""
    first, *rest = clients
    assert len(clients) >= 2
    for other in rest:
        assert canonical(other["json"]) == canonical(first["json"]), other["name"]
        assert other["stateVector"] == first["stateVector"], other["name"]


async def test_two_yjs_clients_editing_concurrently_converge(gateway: RunningGateway) -> None:
    wedding = new_wedding()
    url = f"{gateway.ws_url}/{wedding}"
    async with hold_room(url):
        run = await run_script("concurrent.mjs", gateway.ws_url, wedding)
        clients = run.result["clients"]
        assert_converged(clients)
        core = clients[0]["json"]["core"]
        assert core["venue"] in {"a-venue-3-4", "b-venue-3-4"}
        assert (core["notes"], core["venue_address"]) == ("a-note-3-4", "b-note-3-4")
        assert core["guest_count"] == 3  # b's set beat a's concurrent delete
        assert len(clients[0]["stateVector"]) == 2  # both clients wrote
        assert_clients_match(clients, server_doc(gateway, wedding))


async def test_yjs_client_editing_offline_converges_after_reconnecting(
    gateway: RunningGateway,
) -> None:
    wedding = new_wedding()
    async with hold_room(f"{gateway.ws_url}/{wedding}"):
        run = await run_script("offline.mjs", gateway.ws_url, wedding)
        clients = run.result["clients"]
        assert_converged(clients)
        final = clients[0]["json"]
        offline = run.result["offlineA"]
        assert canonical(offline) != canonical(final), "the offline client missed nothing?"
        assert (final["core"]["notes"], final["core"]["guest_count"]) == ("a-9", 9)
        assert "guest_count" not in offline["core"]
        notes = {entry["id"]: entry.get("notes") for entry in final["timeline"]}
        assert (notes["a-offline-0"], notes["b-online-0"]) == ("a-0", "b-0")
        assert "b-online-0" not in {entry["id"] for entry in offline["timeline"]}
        assert_clients_match(clients, server_doc(gateway, wedding))


async def test_late_yjs_joiner_receives_the_full_state(gateway: RunningGateway) -> None:
    wedding = new_wedding()
    async with hold_room(f"{gateway.ws_url}/{wedding}"):
        run = await run_script("late_joiner.mjs", gateway.ws_url, wedding)
        clients = run.result["clients"]
        assert_converged(clients)
        assert clients[0]["json"]["timeline"][-1]["id"] == "c-late"
        assert_clients_match(clients, server_doc(gateway, wedding))


async def test_yjs_joiner_after_the_room_unloaded_receives_the_stored_state(
    gateway: RunningGateway,
) -> None:
    wedding = new_wedding()
    first = await run_script("client.mjs", gateway.ws_url, wedding, "--edits", "w", "--count", "15")
    written = first.result["clients"][0]
    assert len(written["json"]["timeline"]) == 15

    # Nobody is connected: wait until the gateway unloads the room (it keeps only the store).
    await eventually(lambda: gateway.node.room(RoomId(wedding)) is None, timeout=5)

    async with hold_room(f"{gateway.ws_url}/{wedding}"):
        second = await run_script("client.mjs", gateway.ws_url, wedding)
        joined = second.result["clients"][0]
        assert canonical(joined["json"]) == canonical(written["json"])
        assert joined["stateVector"] == written["stateVector"]
        assert_clients_match([written, joined], server_doc(gateway, wedding))


async def test_yjs_awareness_reaches_others_and_is_removed_when_a_client_leaves(
    gateway: RunningGateway,
) -> None:
    wedding = new_wedding()
    async with hold_room(f"{gateway.ws_url}/{wedding}"):
        run = await run_script("awareness.mjs", gateway.ws_url, wedding)
        ids = run.result["clientIds"]
        for observer in ("b", "c"):
            seen = run.result["awareness"][observer]
            assert str(ids["a"]) not in seen, f"{observer} still sees the destroyed client"
            assert str(ids["crash"]) not in seen, f"{observer} still sees the killed client"
            assert seen[str(ids["b"])]["user"]["name"] == "Bea"
            assert seen[str(ids["c"])]["user"]["name"] == "Cy"
        room = gateway.node.room(RoomId(wedding))
        assert room is not None
        # Every script client is gone: the server forgot their awareness states too.
        await eventually(lambda: room.statistics().awareness_entries == 0, timeout=5)


async def test_yjs_client_holding_a_connection_sees_another_yjs_clients_edits(
    gateway: RunningGateway,
) -> None:
    """Two scripts in separate Node processes: nothing is shared but the gateway."""
    wedding = new_wedding()
    async with script_running(
        "client.mjs", gateway.ws_url, wedding, "--name", "x", "--edits", "x",
        "--await-mark", "y-done", "--mark", "x-done", "--hold",
    ) as holder:  # fmt: skip
        await read_event(holder, "synced")
        other = await run_script(
            "client.mjs", gateway.ws_url, wedding, "--name", "y", "--edits", "y",
            "--await-mark", "x-done", "--mark", "y-done",
        )  # fmt: skip
        doc = server_doc(gateway, wedding)  # x is still connected: the room is loaded
        held = await finish_script(holder, "client.mjs (holder)")
    clients = [held.result["clients"][0], other.result["clients"][0]]
    assert_converged(clients)
    ids = {entry["id"] for entry in clients[0]["json"]["timeline"]}
    assert {"x-9", "y-9", "x-done", "y-done"} <= ids
    assert clients[0]["json"]["core"]["venue"] in {"x-venue-9", "y-venue-9"}
    assert_clients_match(clients, doc)


@pytest.fixture
def reference_server(tmp_path: Path) -> Iterator[RunningGateway]:
    """The reference Node server (@y/websocket-server), to check the scripts' own expectations."""
    node = require_node()
    server = ROOT / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
    if not server.is_file():
        pytest.fail(f"{server} is missing: run `npm ci` in {ROOT} (`make test` does it)")
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    env.pop("YPERSISTENCE", None)  # in memory, like the gateway's rooms under test
    process = subprocess.Popen(
        [node, str(server)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield RunningGateway(port=port, data_dir=tmp_path, process=process)
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize(
    "script", ["concurrent.mjs", "offline.mjs", "late_joiner.mjs", "awareness.mjs"]
)
async def test_scenario_holds_against_the_reference_server(
    reference_server: RunningGateway, script: str
) -> None:
    """The scenarios describe stock Yjs behaviour: the reference server passes them too."""
    await wait_listening(reference_server, timeout=10)
    url = f"ws://127.0.0.1:{reference_server.port}"  # serves every path as a room
    run = await run_script(script, url, new_wedding())
    if "clients" in run.result:
        assert_converged(run.result["clients"])
