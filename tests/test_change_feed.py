"""``GET /v1/changes/stream`` (issue 17): Server-Sent Events of every wedding a token covers,
resumable with ``Last-Event-ID``; and ``gateway restore`` (the CLI asks a running gateway)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Secret

from gateway.auth import issue_token
from gateway.change_feed import decode_position
from gateway.core.policy import Role
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import ROOT, RunningGateway, start_in_process, stop_in_process
from tests.test_attacks import AUDIENCE, ISSUER, SECRET

WEDDINGS = ("feed-a", "feed-b")
READ_DEADLINE = 20.0
"""Seconds before a stream that stopped sending fails the test (a hang guard, not a bound)."""


def vendor_token() -> str:
    return issue_token(
        SECRET,
        subject="dashboard",
        weddings={w: Role.VENDOR for w in WEDDINGS},
        vendor_id="florist-1",
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


def planner_token(wedding: str) -> str:
    return issue_token(
        SECRET,
        subject="ada",
        weddings={wedding: Role.PLANNER},
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(
        tmp_path / "data",
        room_idle_seconds=0.2,
        jwt_secret=Secret(SECRET),
        changes_poll_seconds=0.05,
    )
    try:
        yield running
    finally:
        await stop_in_process(running)


async def edit(gateway: RunningGateway, wedding: str, *venues: str) -> None:
    async with GatewayClient(gateway.ws_url, wedding, token=planner_token(wedding)) as client:
        await client.wait_synced()
        if not client.core():
            client.create_wedding("Ana Silva", "Bea Costa")
        for venue in venues:
            client.set_core(venue=venue)
            await client.wait_durable()


async def read_events(response: httpx.Response, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` change events of an open stream: (id, data)."""
    events: list[tuple[str, dict[str, Any]]] = []
    event: dict[str, str] = {}
    lines = response.aiter_lines()
    async with asyncio.timeout(READ_DEADLINE):
        while len(events) < count:
            line = await anext(lines)
            if line == "":
                if event.get("event") == "change":
                    events.append((event["id"], json.loads(event["data"])))
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
    return events


async def test_the_stream_covers_the_tokens_weddings_and_resumes_with_last_event_id(
    secured: RunningGateway,
) -> None:
    headers = {"Authorization": f"Bearer {vendor_token()}"}
    async with httpx.AsyncClient(base_url=secured.http_url, timeout=30) as http:
        async with http.stream("GET", "/v1/changes/stream", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            await edit(secured, "feed-a", "One")
            await edit(secured, "feed-b", "Two", "Three")
            first = await read_events(stream, 3)
        last_id = first[-1][0]
        # more changes while nobody listens, then the stream resumes where it stopped
        await edit(secured, "feed-a", "Four")
        await edit(secured, "feed-b", "Five")
        cursor = decode_position(last_id)
        every = {w: [e.offset for e in await secured.node.store.audit(RoomId(w))] for w in WEDDINGS}
        missing = {w: [o for o in every[w] if o > cursor.get(RoomId(w), 0)] for w in WEDDINGS}
        resumed_headers = {**headers, "Last-Event-ID": last_id}
        async with http.stream("GET", "/v1/changes/stream", headers=resumed_headers) as stream:
            rest = await read_events(stream, sum(map(len, missing.values())))
    for wedding in WEDDINGS:
        seen = [d["offset"] for _, d in first if d["wedding_id"] == wedding]
        assert seen == [o for o in every[wedding] if o <= cursor.get(RoomId(wedding), 0)]
        again = [d["offset"] for _, d in rest if d["wedding_id"] == wedding]
        assert again == missing[wedding], "complete, in offset order, nothing twice"
    venues = {d["wedding_id"]: c["new"] for _, d in rest for c in d["changes"]}
    assert venues == {"feed-a": "Four", "feed-b": "Five"}


async def test_a_stream_for_a_wedding_the_token_does_not_cover_is_refused(
    secured: RunningGateway,
) -> None:
    headers = {"Authorization": f"Bearer {vendor_token()}"}
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        foreign = await http.get("/v1/changes/stream?wedding=other", headers=headers)
        assert foreign.status_code == 403
        anonymous = await http.get("/v1/changes/stream")
        assert anonymous.status_code == 401
        unknown = await http.get("/v1/changes/stream?weddings=feed-a", headers=headers)
        assert unknown.status_code == 400


async def test_gateway_restore_asks_the_running_gateway(secured: RunningGateway) -> None:
    await edit(secured, "feed-a", "One", "Two")
    env = {
        "GATEWAY_JWT_SECRET": SECRET,
        "GATEWAY_PORT": str(secured.port),
        "GATEWAY_DATA_DIR": str(secured.data_dir),
        "PATH": "/usr/bin:/bin",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "restore",
        "feed-a",
        "--offset",
        "2",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["restored_to"] == 2
    last = (await secured.node.store.audit(RoomId("feed-a")))[-1]
    assert (last.subject, last.via) == ("gateway-cli", "restore")
    refused = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "restore",
        "feed-a",
        "--at",
        "long ago",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await refused.communicate()
    assert refused.returncode == 1
    assert b"ISO 8601" in err


async def test_a_draining_node_ends_its_streams(tmp_path: Path) -> None:
    running = await start_in_process(
        tmp_path / "data", jwt_secret=Secret(SECRET), changes_poll_seconds=0.05
    )
    headers = {"Authorization": f"Bearer {vendor_token()}"}
    stopping: asyncio.Task[None] | None = None
    try:
        async with (
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
            http.stream("GET", "/v1/changes/stream", headers=headers) as stream,
        ):
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            stopping = asyncio.get_running_loop().create_task(stop_in_process(running))
            async with asyncio.timeout(READ_DEADLINE):
                rest = [line async for line in lines]  # ends: the node closed it
        assert not [line for line in rest if line.startswith("event:")]
        async with asyncio.timeout(READ_DEADLINE):
            await stopping
    finally:
        if stopping is None:
            await stop_in_process(running)
