"""Webhooks (issue 17): a receiver started here on 127.0.0.1, down for a while and then back, gets
every change batch, in order per wedding, signed; a tampered signature is detected; an endpoint
that keeps failing is dead-lettered in /metrics; the admin API registers endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.datastructures import Secret
from starlette.types import Receive, Scope, Send

from gateway.adapters.postgres_store import migrate
from gateway.core.policy import Role
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.types import RoomId
from gateway.webhooks import configured_id, signature, verify_signature
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, free_port, start_in_process, stop_in_process
from tests.helpers import eventually
from tests.test_attacks import SECRET, token

HOOK_SECRET = "webhook-secret-0123456789abcdef"
WEDDINGS = ("hook-a", "hook-b")


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1:port that records every POST and answers 200."""

    port: int
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.posts.append((headers, body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def start(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.task = asyncio.get_running_loop().create_task(self.server.serve())
        server = self.server
        await eventually(lambda: server.started, timeout=10, message="the receiver listens")

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task


def planner(wedding: str) -> str:
    return token(Role.PLANNER, wedding=wedding, subject="ada")


async def write(gateway: RunningGateway, wedding: str, count: int) -> None:
    async with GatewayClient(gateway.ws_url, wedding, token=planner(wedding)) as client:
        await client.wait_synced()
        if not client.core():
            client.create_wedding("Ana Silva", "Bea Costa")
        for n in range(count):
            client.set_core(guest_count=10 + n)
            await client.wait_durable()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver(free_port())


@pytest.fixture
async def hooked(tmp_path: Path, receiver: Receiver) -> AsyncIterator[RunningGateway]:
    async with hooked_gateway(tmp_path, receiver) as running:
        yield running


@pytest.fixture
async def hooked_postgres(
    tmp_path: Path, receiver: Receiver, postgres_dsn: str, postgres_schema: str
) -> AsyncIterator[RunningGateway]:
    await migrate(postgres_dsn, schema=postgres_schema)
    store = {"database_url": Secret(postgres_dsn), "database_schema": postgres_schema}
    async with hooked_gateway(tmp_path, receiver, **store) as running:
        yield running


@asynccontextmanager
async def hooked_gateway(
    tmp_path: Path, receiver: Receiver, **store: Any
) -> AsyncIterator[RunningGateway]:
    running = await start_in_process(
        tmp_path / "data",
        **store,
        room_idle_seconds=0.2,
        jwt_secret=Secret(SECRET),
        changes_poll_seconds=0.05,
        webhook_urls=receiver.url,
        webhook_secret=Secret(HOOK_SECRET),
        webhook_batch_max=3,
        webhook_retry_max_seconds=0.2,
        webhook_timeout_seconds=2.0,
    )
    try:
        yield running
    finally:
        await stop_in_process(running)
        await receiver.stop()


def failed_attempts(gateway: RunningGateway, endpoint: str) -> int:
    stats = gateway.node.webhooks.stats.endpoints.get(endpoint)
    return stats.failed_attempts if stats is not None else 0


async def test_a_receiver_down_for_a_while_then_back_gets_every_batch_in_order_signed(
    hooked: RunningGateway, receiver: Receiver
) -> None:
    await down_then_back(hooked, receiver)


@pytest.mark.postgres
async def test_the_same_delivery_from_a_gateway_on_postgres(
    hooked_postgres: RunningGateway, receiver: Receiver
) -> None:
    await down_then_back(hooked_postgres, receiver)


async def down_then_back(hooked: RunningGateway, receiver: Receiver) -> None:
    """The receiver is down while weddings change, then up: every batch arrives, in order."""
    endpoint = configured_id(receiver.url)
    await write(hooked, "hook-a", 4)  # the receiver is down: nothing listens on its port
    await write(hooked, "hook-b", 2)
    await eventually(lambda: failed_attempts(hooked, endpoint) >= 3, timeout=20)
    await receiver.start()
    await write(hooked, "hook-a", 2)  # and more while it is up
    every = {w: [e.offset for e in await hooked.node.store.audit(RoomId(w))] for w in WEDDINGS}

    def delivered() -> dict[str, list[int]]:
        offsets: dict[str, list[int]] = {w: [] for w in WEDDINGS}
        for _, body in receiver.posts:
            batch = orjson.loads(body)
            offsets[batch["wedding_id"]] += [c["offset"] for c in batch["changes"]]
        return offsets

    def complete() -> bool:
        got = delivered()
        return all(set(got[w]) == set(every[w]) for w in WEDDINGS)

    await eventually(complete, timeout=30, message="every change delivered")
    last: dict[str, int] = dict.fromkeys(WEDDINGS, 0)
    deliveries: set[str] = set()
    for headers, body in receiver.posts:
        assert verify_signature(
            HOOK_SECRET, body, headers["x-wedsync-timestamp"], headers["x-wedsync-signature"]
        )
        batch = orjson.loads(body)
        wedding, offsets = batch["wedding_id"], [c["offset"] for c in batch["changes"]]
        assert offsets == sorted(offsets)
        assert (batch["from_offset"], batch["to_offset"]) == (offsets[0], offsets[-1])
        assert headers["x-wedsync-delivery"] == f"{wedding}:{offsets[0]}-{offsets[-1]}"
        if headers["x-wedsync-delivery"] in deliveries:
            continue  # a documented duplicate: the same batch again, same delivery id
        deliveries.add(headers["x-wedsync-delivery"])
        expected = [o for o in every[wedding] if o > last[wedding]][: len(offsets)]
        assert offsets == expected, f"{wedding}: in order, nothing skipped"
        last[wedding] = offsets[-1]
    assert last == {w: every[w][-1] for w in WEDDINGS}
    first = orjson.loads(receiver.posts[0][1])["changes"][0]
    assert (first["subject"], first["role"]) == ("ada", "planner")
    store = hooked.node.store

    async def cursors_stored() -> bool:
        return await store.cursors(endpoint) == {RoomId(w): every[w][-1] for w in WEDDINGS}

    await eventually(cursors_stored, message="the cursor of each wedding is in the store")


def test_a_tampered_signature_or_an_old_timestamp_is_detected() -> None:
    body = b'{"wedding_id":"w","changes":[]}'
    sent = signature(HOOK_SECRET, "1700000000", body)
    expected = hmac.new(HOOK_SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sent == f"v1={expected}"  # what a receiver in any language recomputes
    now = 1700000010.0
    assert verify_signature(HOOK_SECRET, body, "1700000000", sent, now=now)
    assert not verify_signature(HOOK_SECRET, body + b" ", "1700000000", sent, now=now)
    assert not verify_signature(HOOK_SECRET, body, "1700000001", sent, now=now)
    tampered = sent[:-1] + ("0" if sent[-1] != "0" else "1")
    assert not verify_signature(HOOK_SECRET, body, "1700000000", tampered, now=now)
    assert not verify_signature("another-secret-0123456789", body, "1700000000", sent, now=now)
    assert not verify_signature(HOOK_SECRET, body, "1700000000", sent, now=now + 3600)  # replay
    assert not verify_signature(HOOK_SECRET, body, "soon", sent, now=now)


async def test_an_endpoint_failing_past_the_dead_letter_time_is_dead_in_metrics(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody"
    running = await start_in_process(
        tmp_path / "data",
        jwt_secret=Secret(SECRET),
        changes_poll_seconds=0.05,
        webhook_urls=url,
        webhook_secret=Secret(HOOK_SECRET),
        webhook_retry_max_seconds=0.1,
        webhook_dead_letter_seconds=0.5,
        webhook_timeout_seconds=0.4,
    )
    try:
        await write(running, "hook-a", 1)
        line = f'gateway_webhook_dead{{endpoint="{configured_id(url)}"}} 1.0'
        async with httpx.AsyncClient(base_url=running.http_url) as http:

            async def dead() -> bool:
                return line in (await http.get("/metrics")).text

            await eventually(dead, timeout=20, message="dead-lettered")
        (endpoint,) = await running.node.store.endpoints()
        assert endpoint.dead_since is not None
    finally:
        await stop_in_process(running)


async def test_the_admin_api_registers_lists_and_removes_endpoints(tmp_path: Path) -> None:
    running = await start_in_process(tmp_path / "data", jwt_secret=Secret(SECRET))
    admin = {"Authorization": "Bearer " + token(Role.VIEWER, subject="root", admin=True)}
    planner_headers = {"Authorization": "Bearer " + token(Role.PLANNER)}
    body: dict[str, Any] = {"url": "https://crm.example/hook", "secret": HOOK_SECRET}
    try:
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            put = await http.put("/v1/webhooks/crm", json=body, headers=admin)
            assert put.status_code == 200, put.text
            listed = (await http.get("/v1/webhooks", headers=admin)).json()["webhooks"]
            assert listed == [{"id": "crm", "url": "https://crm.example/hook", "dead": False}]
            refused = await http.put("/v1/webhooks/crm", json=body, headers=planner_headers)
            assert refused.status_code == 403
            for bad in (
                {"url": "ftp://x", "secret": HOOK_SECRET},
                {"url": "https://x", "secret": "short"},
                {**body, "events": ["all"]},
            ):
                answer = await http.put("/v1/webhooks/crm", json=bad, headers=admin)
                assert answer.status_code == 400, (bad, answer.text)
            assert (await http.delete("/v1/webhooks/crm", headers=admin)).status_code == 204
            assert (await http.delete("/v1/webhooks/crm", headers=admin)).status_code == 404
    finally:
        await stop_in_process(running)


def test_configured_webhooks_need_a_secret_to_sign_with() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_WEBHOOK_SECRET"):
        Settings.from_env({"GATEWAY_WEBHOOK_URLS": "http://127.0.0.1:9/hook"})
    settings = Settings.from_env(
        {"GATEWAY_WEBHOOK_URLS": " http://a/h , http://b/h ", "GATEWAY_WEBHOOK_SECRET": "s" * 16}
    )
    assert settings.webhook_url_list == ("http://a/h", "http://b/h")
