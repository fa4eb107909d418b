"""Version history, restore, undo, the change feed and PATCH .../core (issue 17), through a live
gateway on the embedded store with tokens. Stock clients are pycrdt's own ``Provider`` (from
PyPI, tests/interop/test_pycrdt_interop.py); the SDK is gateway_client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc
from starlette.datastructures import Secret

from gateway.core.policy import Role
from gateway.history import iso_time
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from tests.interop import finish_script, read_event, script_running
from tests.interop.test_pycrdt_interop import event_ids, new_doc, online
from tests.test_attacks import SECRET, WEDDING, token

PLANNER = token(Role.PLANNER, subject="ada")
COUPLE = token(Role.COUPLE, subject="grace")
VENDOR = token(Role.VENDOR, subject="carl", vendor_id="caterer-1")
SERVICE = token(Role.SERVICE, subject="crm-sync")
VIEWER = token(Role.VIEWER, subject="vic")
ADMIN = token(Role.VIEWER, wedding="elsewhere", subject="root", admin=True)
ENTRIES = ("ceremony", "photos", "dinner", "dance")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(
        tmp_path / "data", room_idle_seconds=0.2, jwt_secret=Secret(SECRET)
    )
    try:
        yield running
    finally:
        await stop_in_process(running)


@pytest.fixture
async def http(secured: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secured.http_url, timeout=30) as client:
        yield client


def connect(gateway: RunningGateway, as_token: str = PLANNER) -> GatewayClient:
    return GatewayClient(gateway.ws_url, WEDDING, token=as_token)


async def build_wedding(client: GatewayClient) -> None:
    await client.wait_synced()
    client.create_wedding("Ana Silva", "Bea Costa", "confirmed", venue="Villa Rosa")
    for i, entry in enumerate(ENTRIES):
        client.add_timeline_entry(id=entry, title=entry.title(), start=f"1{i}:00")
    await client.wait_durable()


async def audit(gateway: RunningGateway) -> list[Any]:
    return await gateway.node.store.audit(RoomId(WEDDING))


# -- restore --------------------------------------------------------------------------------------


async def test_restore_after_a_planner_deletes_every_entry_brings_the_timeline_back_everywhere(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    url = f"{secured.ws_url}/{WEDDING}?token={COUPLE}"
    stock: Doc[Any] = new_doc()
    async with connect(secured) as planner, online(url, stock) as stock_socket:
        await build_wedding(planner)
        await eventually(lambda: event_ids(stock) == list(ENTRIES), message="stock synced")
        before_wipe = iso_time(time.time())
        for entry in ENTRIES:  # the caterer's tablet wiped the timeline
            planner.remove_timeline_entry(entry)
        await planner.wait_durable()
        await eventually(
            lambda: event_ids(stock) == [], message="the wipe reached the stock client"
        )

        answer = await http.post(
            f"/v1/weddings/{WEDDING}/restore", json={"at": before_wipe}, headers=bearer(PLANNER)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["durable"] is True
        await eventually(lambda: event_ids(stock) == list(ENTRIES), message="stock restored")
        await eventually(lambda: [e["id"] for e in planner.timeline()] == list(ENTRIES))
        assert stock_socket.close_code is None  # no reset, no reconnect
        assert planner.core()["venue"] == "Villa Rosa"
    stored = await http.get(f"/v1/weddings/{WEDDING}", headers=bearer(PLANNER))
    assert [e["id"] for e in stored.json()["timeline"]] == list(ENTRIES)
    history = await secured.node.store.load(RoomId(WEDDING))
    rebuilt: Doc[Any] = Doc()
    for blob in history.blobs():
        rebuilt.apply_update(blob)
    assert event_ids(rebuilt) == list(ENTRIES)  # in the store, not only in the room
    last = (await audit(secured))[-1]
    assert (last.subject, last.role, last.via) == ("ada", "planner", "restore")
    assert "timeline[dinner]" in last.fields


async def test_restore_by_offset_and_the_view_at_that_offset_agree(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
        offset = (await audit(secured))[-1].offset
        planner.set_core(venue="Harbour Hall", guest_count=80)
        await planner.wait_durable()
        past = await http.get(f"/v1/weddings/{WEDDING}?offset={offset}", headers=bearer(VIEWER))
        assert past.status_code == 200, past.text
        assert past.json()["offset"] == offset
        assert past.json()["core"]["venue"] == "Villa Rosa"
        assert "guest_count" not in past.json()["core"]
        answer = await http.post(
            f"/v1/weddings/{WEDDING}/restore", json={"offset": offset}, headers=bearer(COUPLE)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["restored_to"] == offset
        await eventually(lambda: planner.core().get("venue") == "Villa Rosa")
        await eventually(lambda: "guest_count" not in planner.core())
        now = await http.get(f"/v1/weddings/{WEDDING}", headers=bearer(VIEWER))
        assert {k: now.json()[k] for k in ("core", "timeline")} == {
            k: past.json()[k] for k in ("core", "timeline")
        }


async def test_an_admin_may_restore_and_a_vendor_or_viewer_may_not(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
        offset = (await audit(secured))[0].offset
        path = f"/v1/weddings/{WEDDING}/restore"
        for refused in (VENDOR, VIEWER):
            answer = await http.post(path, json={"offset": offset}, headers=bearer(refused))
            assert answer.status_code == 403, answer.text
        answer = await http.post(path, json={"offset": offset}, headers=bearer(ADMIN))
        assert answer.status_code == 200, answer.text
        await eventually(lambda: planner.timeline() == [])
    assert (await audit(secured))[-1].subject == "root"


# -- undo one person's changes ---------------------------------------------------------------------


async def test_undo_of_one_subject_since_a_time_keeps_another_persons_later_edit(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as ada, connect(secured, COUPLE) as grace:
        await build_wedding(ada)
        await grace.wait_synced()
        await eventually(lambda: len(grace.timeline()) == len(ENTRIES))
        since = iso_time(time.time())
        ada.set_core(venue="Harbour Hall")
        ada.update_timeline_entry("dinner", notes="ada's notes")
        ada.remove_timeline_entry("dance")
        ada.add_timeline_entry(id="fireworks", title="Fireworks", start="23:00")
        await ada.wait_durable()
        await eventually(lambda: grace.core().get("venue") == "Harbour Hall")
        grace.update_timeline_entry("dinner", notes="grace's notes")  # later, same field
        grace.set_core(guest_count=150)
        await grace.wait_durable()

        answer = await http.post(
            f"/v1/weddings/{WEDDING}/undo",
            json={"subject": "ada", "since": since},
            headers=bearer(PLANNER),
        )
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["reverted"]) == [
            "core.venue",
            "timeline[dance]",
            "timeline[fireworks]",
        ]

        def undone() -> bool:
            core, entries = grace.core(), {e["id"]: e for e in grace.timeline()}
            return (
                core.get("venue") == "Villa Rosa"
                and "dance" in entries
                and "fireworks" not in entries
                and entries["dinner"].get("notes") == "grace's notes"
                and core.get("guest_count") == 150
            )

        await eventually(undone, message="ada's changes undone, grace's kept")
        assert [e["id"] for e in grace.timeline()] == list(ENTRIES)  # dance back in its place
    assert (await audit(secured))[-1].via == "undo"


# -- the change feed and the versions -------------------------------------------------------------


async def test_the_feed_after_an_offset_is_complete_ordered_and_field_level(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
        for n in range(5):
            planner.set_core(guest_count=100 + n)
            await planner.wait_durable()
    offsets = [e.offset for e in await audit(secured)]
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await http.get(
            f"/v1/weddings/{WEDDING}/changes",
            params={"after": after, "limit": 3},
            headers=bearer(VENDOR),
        )
        assert page.status_code == 200, page.text
        changes = page.json()["changes"]
        if not changes:
            break
        seen.extend(changes)
        after = page.json()["next_after"]
    assert [c["offset"] for c in seen] == offsets
    last = seen[-1]
    assert (last["subject"], last["role"]) == ("ada", "planner")
    assert last["changes"] == [{"field": "core.guest_count", "old": 103, "new": 104}]
    first = seen[0]["changes"]
    assert {"field": "core.venue", "old": None, "new": "Villa Rosa"} in first
    added = [c for c in seen if c["changes"][0]["field"] == "timeline[dinner]"]
    assert added[0]["changes"][0]["old"] is None
    assert added[0]["changes"][0]["new"]["title"] == "Dinner"
    middle = offsets[3]
    rest = await http.get(
        f"/v1/weddings/{WEDDING}/changes", params={"after": middle}, headers=bearer(VENDOR)
    )
    assert [c["offset"] for c in rest.json()["changes"]] == offsets[4:]


async def test_versions_are_listed_newest_first_page_by_page(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
    offsets = [e.offset for e in await audit(secured)]
    listed: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = await http.get(
            f"/v1/weddings/{WEDDING}/versions", params=params, headers=bearer(VIEWER)
        )
        assert page.status_code == 200, page.text
        listed += [v["offset"] for v in page.json()["versions"]]
        if page.json()["next"] is None:
            break
        params = {"limit": 2, **page.json()["next"]}
    assert listed == offsets[::-1]
    first = (await http.get(f"/v1/weddings/{WEDDING}/versions", headers=bearer(VIEWER))).json()
    newest = first["versions"][0]
    assert (newest["subject"], newest["role"], newest["fields"]) == (
        "ada",
        "planner",
        ["timeline[dance]"],
    )


# -- PATCH .../core ------------------------------------------------------------------------------


async def test_patch_by_a_service_is_durable_and_reaches_every_client(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
        answer = await http.patch(
            f"/v1/weddings/{WEDDING}/core",
            json={"venue": "Lighthouse", "guest_count": 64, "notes": "Synced from the CRM"},
            headers=bearer(SERVICE),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["core"]["venue"] == "Lighthouse"
        await eventually(lambda: planner.core().get("venue") == "Lighthouse")
        last = (await audit(secured))[-1]  # durable before the 200
        assert (last.subject, last.role, last.via) == ("crm-sync", "service", "patch")
        assert set(last.fields) == {"core.venue", "core.guest_count", "core.notes"}
        removed = await http.patch(
            f"/v1/weddings/{WEDDING}/core", json={"notes": None}, headers=bearer(SERVICE)
        )
        assert removed.status_code == 200, removed.text
        await eventually(lambda: "notes" not in planner.core())


async def test_patch_of_core_fields_by_a_vendor_is_422_and_stores_nothing(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
        before = await audit(secured)
        answer = await http.patch(
            f"/v1/weddings/{WEDDING}/core", json={"venue": "Elsewhere"}, headers=bearer(VENDOR)
        )
        assert answer.status_code == 422
        assert answer.json()["field"] == "core.venue"
        assert "vendor" in answer.json()["reason"]
        assert await audit(secured) == before
        assert planner.core()["venue"] == "Villa Rosa"


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_input_everywhere_gets_a_clear_4xx(
    secured: RunningGateway, http: httpx.AsyncClient
) -> None:
    async with connect(secured) as planner:
        await build_wedding(planner)
    w = f"/v1/weddings/{WEDDING}"
    long_ago = "2001-01-01T00:00:00Z"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PATCH", "/core", {"venu": "x"}, 400, "unknown field 'venu'"),
        ("PATCH", "/core", {"guest_count": "many"}, 422, "must be an integer"),
        ("PATCH", "/core", {"partner_a": None}, 422, "required"),
        ("PATCH", "/core", ["venue"], 400, "JSON object"),
        ("PATCH", "/core", {}, 400, "names no field"),
        ("POST", "/restore", {"at": long_ago}, 410, "before the history window"),
        ("POST", "/restore", {"at": "yesterday"}, 400, "not an ISO 8601 time"),
        ("POST", "/restore", {"at": "2026-01-01T00:00:00"}, 400, "no time zone"),
        ("POST", "/restore", {"at": "2999-01-01T00:00:00Z"}, 400, "in the future"),
        ("POST", "/restore", {"offset": "3"}, 400, "must be an integer"),
        ("POST", "/restore", {"offset": 1, "at": long_ago}, 400, "exactly one"),
        ("POST", "/restore", {"offset": 999}, 404, "no offset 999"),
        ("POST", "/restore", {"when": 1}, 400, "unknown field 'when'"),
        ("POST", "/undo", {"since": long_ago}, 400, '"subject"'),
        ("POST", "/undo", {"subject": "ada", "since": long_ago}, 410, "history window"),
        ("GET", f"?at={long_ago}", None, 410, "before the history window"),
        ("GET", "?offset=-1", None, 400, "whole number"),
        ("GET", "?at=now&colour=red", None, 400, "unknown parameter 'colour'"),
        ("GET", "/versions?limit=0", None, 400, "between 1 and"),
        ("GET", "/versions?limit=abc", None, 400, "whole number"),
        ("GET", "/changes?after=x", None, 400, "whole number"),
        ("GET", "/changes?since=1", None, 400, "unknown parameter 'since'"),
    ]
    for method, path, body, status, words in cases:
        answer = await http.request(method, w + path, json=body, headers=bearer(PLANNER))
        assert answer.status_code == status, (method, path, body, answer.text)
        assert words in answer.json()["error"], (method, path, answer.json())
    not_json = await http.post(
        f"{w}/restore", content=b"{oops", headers={**bearer(PLANNER), "Content-Type": "text/x"}
    )
    assert not_json.status_code == 400
    stream = await http.get(
        "/v1/changes/stream", headers={**bearer(PLANNER), "Last-Event-ID": "forged"}
    )
    assert stream.status_code == 400
    assert (await http.get(f"{w}/versions")).status_code == 401
    foreign = token(Role.PLANNER, wedding="other-wedding")
    assert (await http.get(f"{w}/changes", headers=bearer(foreign))).status_code == 403


async def test_a_state_from_before_several_compactions_is_still_restorable(
    tmp_path: Path,
) -> None:
    running = await start_in_process(tmp_path / "data", jwt_secret=Secret(SECRET), snapshot_every=2)
    try:
        async with (
            connect(running) as planner,
            httpx.AsyncClient(base_url=running.http_url) as http,
        ):
            await build_wedding(planner)  # 5 updates: compacted twice already
            early = (await audit(running))[1].offset  # the wedding and the first entry
            for n in range(6):
                planner.set_core(guest_count=10 + n)
                await planner.wait_durable()
            await eventually(lambda: running.node.statistics().compactions >= 2)
            newest = await running.node.store.load(RoomId(WEDDING))
            assert newest.snapshot is not None  # loads from the newest snapshot
            assert newest.snapshot_offset > early  # which covers the state restored
            answer = await http.post(
                f"/v1/weddings/{WEDDING}/restore", json={"offset": early}, headers=bearer(PLANNER)
            )
            assert answer.status_code == 200, answer.text
            await eventually(lambda: [e["id"] for e in planner.timeline()] == ["ceremony"])
            assert "guest_count" not in planner.core()
    finally:
        await stop_in_process(running)


@pytest.mark.interop
async def test_a_stock_y_websocket_client_converges_to_a_restore_with_no_reset(
    gateway: RunningGateway,
) -> None:
    async with (
        GatewayClient(gateway.ws_url, WEDDING) as planner,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as http,
    ):
        await build_wedding(planner)
        before_wipe = iso_time(time.time())
        for entry in ENTRIES:
            planner.remove_timeline_entry(entry)
        await planner.wait_durable()
        # npm yjs + y-websocket, unmodified: joins the wiped wedding, waits for "ceremony"
        args = ("--await-mark", "ceremony", "--hold")
        async with script_running("client.mjs", gateway.ws_url, WEDDING, *args) as js:
            await read_event(js, "synced")
            answer = await http.post(f"/v1/weddings/{WEDDING}/restore", json={"at": before_wipe})
            assert answer.status_code == 200, answer.text
            await read_event(js, "holding")  # the restored entries reached it
            run = await finish_script(js, "client.mjs")
    (client,) = run.result["clients"]
    assert [e["id"] for e in client["json"]["timeline"]] == list(ENTRIES)
    assert client["json"]["core"]["venue"] == "Villa Rosa"
    assert client["closes"] == []  # never disconnected, never reset
