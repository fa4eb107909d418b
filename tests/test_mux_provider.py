"""Stock ``@hocuspocus/provider`` on ``/mux`` (issue 15): 50 weddings over one
HocuspocusProviderWebsocket converge with stock y-websocket clients editing them on ``/ws``;
awareness stays per document; a document added late to the open socket syncs; every provider's
changes are acknowledged (its sync-status follows the durable ACK). The script is
tests/js/mux_provider.mjs (Node 20, ``npm ci``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map
from starlette.datastructures import Secret

from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.interop import require_node
from tests.test_attacks import AUDIENCE, ISSUER, SECRET


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway that checks tokens. Overload shedding by loop lag is off: 150 messages of a
    reconnect burst on this shared 2-core machine (the test's own clients included) must not
    make the node refuse the weddings (that outcome has its test in test_mux_attacks.py)."""
    running = await start_in_process(
        tmp_path / "data",
        room_idle_seconds=0.2,
        jwt_secret=Secret(SECRET),
        shed_loop_lag_seconds=60.0,
    )
    try:
        yield running
    finally:
        await stop_in_process(running)


SCRIPT = Path(__file__).resolve().parent / "js" / "mux_provider.mjs"
SCRIPT_DEADLINE = 120.0
"""Seconds before a hung script is killed: protection against hangs, not a performance bound."""
WEDDINGS = [f"mux-wed-{i}" for i in range(50)]
LATE = "mux-wed-late"
OUTSIDE = "mux-wed-outside"
READONLY = "mux-wed-readonly"


def planner_token(subject: str, weddings: list[str], **more: Role) -> str:
    return issue_token(
        SECRET,
        subject=subject,
        weddings={**dict.fromkeys(weddings, Role.PLANNER), **more},
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


async def create(running: RunningGateway, wedding: str) -> None:
    planner = planner_token("planner", [wedding])
    async with GatewayClient(running.ws_url, wedding, token=planner) as client:
        await client.wait_synced()
        client.create_wedding("RO", "Wedding", "planning")
        await client.wait_durable()


async def test_fifty_weddings_over_one_hocuspocus_socket_converge_with_y_websocket(
    secured: RunningGateway,
) -> None:
    config = {
        "weddings": WEDDINGS,
        "late": LATE,
        "outside": OUTSIDE,
        "readonly": READONLY,
        "muxToken": planner_token("vendor-dashboard", [*WEDDINGS, LATE], **{READONLY: Role.VIEWER}),
        "wsToken": planner_token("planner-on-ws", [*WEDDINGS, LATE]),
    }
    await create(secured, READONLY)
    process = await asyncio.create_subprocess_exec(
        require_node(),
        str(SCRIPT),
        f"ws://127.0.0.1:{secured.port}",
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(SCRIPT_DEADLINE):
        out, err = await process.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert process.returncode == 0, json.dumps(result)[:3000] + err.decode()[-2000:]
    assert result["documents"] == 51
    assert result["scopes"] == ["read-write"]
    assert result["leaks"] == [], "an awareness state reached another wedding"
    assert {room for room, _ in result["denied"]} == {OUTSIDE}, "refused alone (again on reconnect)"
    assert OUTSIDE in result["outside"]["denied"]
    assert result["outside"]["scope"] is None
    assert result["readonlyScope"] == "readonly"
    assert result["socketCloses"] == []
    assert result["wsCloses"] == []
    for i, wedding in enumerate(WEDDINGS):
        core = result["states"][wedding]["core"]
        assert core["venue"] == f"Venue {i}"
        assert core["notes"] == f"Notes {i}"
    stored_readonly = b"".join((await secured.node.store.load(RoomId(READONLY))).blobs())
    assert b"Viewer Hall" not in stored_readonly
    # what the store holds: both sides' edits, durable (the providers were acknowledged)
    for i, wedding in enumerate([*WEDDINGS[:5], LATE]):
        doc: Doc = Doc()
        for blob in (await secured.node.store.load(RoomId(wedding))).blobs():
            doc.apply_update(blob)
        core = doc.get("core", type=Map).to_py()
        expected = "Late venue" if wedding == LATE else f"Venue {i}"
        assert core["venue"] == expected
