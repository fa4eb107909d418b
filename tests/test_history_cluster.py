"""Restore, PATCH and the change feed on two nodes sharing Postgres and Redis (issue 17): a write
that arrives at a node that does not own the wedding is judged by its owner (one judge per
wedding, DESIGN.md §2), and every node's clients converge. Both nodes run in this process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from starlette.datastructures import Secret

from gateway.adapters.postgres_store import migrate
from gateway.change_feed import decode_position
from gateway.core.policy import Role
from gateway.history import iso_time
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from tests.test_attacks import SECRET, token
from tests.test_change_feed import WEDDINGS as FEED
from tests.test_change_feed import edit, read_events, vendor_token

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WEDDING = "wed-1"


@pytest.fixture
async def nodes(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str, redis_url: str
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    await migrate(postgres_dsn, schema=postgres_schema)
    common = {
        "database_url": Secret(postgres_dsn),
        "database_schema": postgres_schema,
        "redis_url": Secret(redis_url),
        "redis_prefix": f"test-{uuid4().hex[:12]}",
        "jwt_secret": Secret(SECRET),
        "changes_poll_seconds": 0.05,
        "room_idle_seconds": 0.2,
    }
    one = await start_in_process(tmp_path / "one", node_id="one", **common)
    two = await start_in_process(tmp_path / "two", node_id="two", **common)
    try:
        yield one, two
    finally:
        await stop_in_process(two)
        await stop_in_process(one)


def bearer(role: Role) -> dict[str, str]:
    return {"Authorization": "Bearer " + token(role, subject=f"{role.value}-1")}


async def test_writes_through_a_node_that_does_not_own_the_wedding_are_judged_by_its_owner(
    nodes: tuple[RunningGateway, RunningGateway],
) -> None:
    one, two = nodes
    planner = token(Role.PLANNER, subject="ada")
    async with GatewayClient(one.ws_url, WEDDING, token=planner) as owner_side:
        await owner_side.wait_synced()
        owner_side.create_wedding("Ana Silva", "Bea Costa", venue="Villa Rosa")
        for entry in ("ceremony", "dinner"):
            owner_side.add_timeline_entry(id=entry, title=entry.title(), start="15:00")
        await owner_side.wait_durable()
        async with (
            httpx.AsyncClient(base_url=one.http_url) as http_one,
            httpx.AsyncClient(base_url=two.http_url, timeout=30) as http_two,
            GatewayClient(two.ws_url, WEDDING, token=planner) as relayed_side,
        ):
            owner = (await http_one.get(f"/v1/weddings/{WEDDING}/owner", headers=_admin())).json()
            assert owner["owner"] == "one"
            await relayed_side.wait_synced()
            forwards = two.node.relay.forwards

            patched = await http_two.patch(
                f"/v1/weddings/{WEDDING}/core",
                json={"venue": "Lighthouse"},
                headers=bearer(Role.SERVICE),
            )
            assert patched.status_code == 200, patched.text
            assert two.node.relay.forwards > forwards  # sent to the owner, not judged on two
            assert two.node.room(RoomId(WEDDING)).judging is False
            await eventually(lambda: owner_side.core().get("venue") == "Lighthouse")

            before_wipe = iso_time(time.time())
            relayed_side.remove_timeline_entry("ceremony")
            relayed_side.remove_timeline_entry("dinner")
            await relayed_side.wait_durable()
            await eventually(lambda: owner_side.timeline() == [])
            restored = await http_two.post(
                f"/v1/weddings/{WEDDING}/restore",
                json={"at": before_wipe},
                headers=bearer(Role.COUPLE),
            )
            assert restored.status_code == 200, restored.text
            for side in (owner_side, relayed_side):
                await eventually(
                    lambda s=side: [e["id"] for e in s.timeline()] == ["ceremony", "dinner"]
                )
            refused = await http_two.patch(
                f"/v1/weddings/{WEDDING}/core",
                json={"venue": "Nope"},
                headers={"Authorization": "Bearer " + token(Role.VENDOR, vendor_id="v-1")},
            )
            assert refused.status_code == 422
            changes = await http_two.get(
                f"/v1/weddings/{WEDDING}/changes", headers=bearer(Role.VIEWER)
            )
    vias = [(c["subject"], c["via"]) for c in changes.json()["changes"]]
    assert ("service-1", "patch") in vias
    assert vias[-1] == ("couple-1", "restore")
    assert not any("Nope" in str(c) for c in changes.json()["changes"])


def _admin() -> dict[str, str]:
    return {"Authorization": "Bearer " + token(Role.VIEWER, wedding="x", admin=True)}


async def test_a_state_from_before_compactions_is_restorable_on_postgres(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str
) -> None:
    await migrate(postgres_dsn, schema=postgres_schema)
    running = await start_in_process(
        tmp_path / "pg",
        database_url=Secret(postgres_dsn),
        database_schema=postgres_schema,
        jwt_secret=Secret(SECRET),
        snapshot_every=2,
    )
    planner = token(Role.PLANNER, subject="ada")
    try:
        async with (
            GatewayClient(running.ws_url, WEDDING, token=planner) as client,
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
        ):
            await client.wait_synced()
            client.create_wedding("Ana Silva", "Bea Costa", venue="Villa Rosa")
            client.add_timeline_entry(id="ceremony", title="Ceremony", start="15:00")
            await client.wait_durable()
            early = (await running.node.store.audit(RoomId(WEDDING)))[-1].offset
            for n in range(6):
                client.set_core(guest_count=10 + n)
                await client.wait_durable()
            await eventually(lambda: running.node.statistics().compactions >= 2)
            newest = await running.node.store.load(RoomId(WEDDING))
            assert newest.snapshot_offset > early
            answer = await http.post(
                f"/v1/weddings/{WEDDING}/restore",
                json={"offset": early},
                headers=bearer(Role.PLANNER),
            )
            assert answer.status_code == 200, answer.text
            await eventually(lambda: "guest_count" not in client.core())
            assert [e["id"] for e in client.timeline()] == ["ceremony"]
    finally:
        await stop_in_process(running)


async def test_a_change_stream_resumed_on_the_other_node_misses_nothing_and_repeats_nothing(
    nodes: tuple[RunningGateway, RunningGateway],
) -> None:
    """A dashboard's stream from node one breaks; it resumes with Last-Event-ID on node two (a
    load balancer may send it anywhere): the position is the store's, not a node's."""
    one, two = nodes
    headers = {"Authorization": f"Bearer {vendor_token()}"}
    async with (
        httpx.AsyncClient(base_url=one.http_url, timeout=30) as http_one,
        httpx.AsyncClient(base_url=two.http_url, timeout=30) as http_two,
    ):
        async with http_one.stream("GET", "/v1/changes/stream", headers=headers) as stream:
            assert stream.status_code == 200
            await edit(one, "feed-a", "One")
            await edit(two, "feed-b", "Two")  # judged on whichever node owns feed-b
            first = await read_events(stream, 2)
        last_id = first[-1][0]
        await edit(two, "feed-a", "Three")  # while nobody listens, through the other node
        await edit(one, "feed-b", "Four")
        cursor = decode_position(last_id)
        every = {w: [e.offset for e in await one.node.store.audit(RoomId(w))] for w in FEED}
        missing = {w: [o for o in every[w] if o > cursor.get(RoomId(w), 0)] for w in FEED}
        resumed = {**headers, "Last-Event-ID": last_id}
        async with http_two.stream("GET", "/v1/changes/stream", headers=resumed) as stream:
            assert stream.status_code == 200
            rest = await read_events(stream, sum(map(len, missing.values())))
    for wedding in FEED:
        again = [d["offset"] for _, d in rest if d["wedding_id"] == wedding]
        assert again == missing[wedding], "complete, in offset order, nothing twice"
        seen = [d["offset"] for _, d in first if d["wedding_id"] == wedding]
        assert not set(seen) & set(again)
    venues = {d["wedding_id"]: c["new"] for _, d in rest for c in d["changes"]}
    assert venues == {"feed-a": "Three", "feed-b": "Four"}
