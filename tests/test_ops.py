"""gateway/ops.py: the ops page and the status it polls (the page itself: clients/ts
test/browser/ops.test.ts, in Chromium)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.settings import Secret
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process

SECRET = "ops-tests-secret-0123456789abcdef0123456789"


def token(*, admin: bool) -> str:
    return issue_token(
        SECRET,
        subject="ops" if admin else "planner",
        weddings={"w1": Role.PLANNER},
        ttl_seconds=600,
        issuer="wedsync",
        audience="wedsync-gateway",
        admin=admin,
    )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(tmp_path / "data", jwt_secret=Secret(SECRET))
    try:
        yield running
    finally:
        await stop_in_process(running)


async def get(gateway: RunningGateway, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        return await http.get(path, headers=headers)


async def test_the_page_is_plain_html_that_polls_the_status(gateway: RunningGateway) -> None:
    page = await get(gateway, "/ops")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/ops/status" in page.text
    assert '<meta name="viewport"' in page.text  # readable on a phone


async def test_the_status_is_open_in_development_mode(gateway: RunningGateway) -> None:
    response = await get(gateway, "/ops/status")
    assert response.status_code == 200
    status = response.json()
    assert status["node"] == gateway.node.node_id
    [this] = status["nodes"]
    assert this["self"]
    assert this["health"] == "ready"
    assert set(status["connections"]["by_platform"]) == {
        "web", "pwa", "ios", "android", "integration", "unknown",
    }  # fmt: skip
    assert status["latency"]["ack"]["buckets"][-1] == [None, 0]  # +Inf, nothing yet


async def test_the_status_needs_an_admin_token_when_tokens_are_checked(
    secured: RunningGateway,
) -> None:
    assert (await get(secured, "/ops")).status_code == 200  # the page holds nothing
    assert (await get(secured, "/ops/status")).status_code == 401
    assert (await get(secured, "/ops/status", token(admin=False))).status_code == 403
    assert (await get(secured, "/ops/status", token(admin=True))).status_code == 200


async def test_today_s_weddings_are_the_loaded_ones_dated_today_where_they_happen(
    gateway: RunningGateway,
) -> None:
    now = dt.datetime.now(dt.UTC)
    kiritimati = ZoneInfo("Pacific/Kiritimati")  # UTC+14: its today is often UTC's tomorrow
    dates = {
        "today-utc": (now.date().isoformat(), "UTC"),
        "today-far-east": (now.astimezone(kiritimati).date().isoformat(), "Pacific/Kiritimati"),
        "next-week": ((now.date() + dt.timedelta(days=7)).isoformat(), "UTC"),
        "undated": (None, None),
    }
    clients = []
    for wedding, (date, zone) in dates.items():
        client = GatewayClient(gateway.ws_url, wedding, platform="web")
        await client.__aenter__()
        clients.append(client)
        await client.wait_synced()
        fields = {"wedding_date": date, "timezone": zone, "venue": "Quinta"} if date else {}
        await client.wait_durable(client.create_wedding("Ana Silva", "Bea Costa", **fields))
    try:
        status = (await get(gateway, "/ops/status")).json()
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    today = status["weddings_today"]
    assert sorted(w["id"] for w in today["weddings"]) == ["today-far-east", "today-utc"]
    assert today["count"] == 2
    [first, _] = today["weddings"]
    assert first["couple"] == "Ana Silva & Bea Costa"
    assert first["members"] == 1
    assert status["connections"]["by_platform"]["web"] == 4
    assert status["rooms"]["loaded"] == 4
