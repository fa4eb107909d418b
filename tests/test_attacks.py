"""The attack suite (issue 6): tokens, isolation, roles and the schema, through a live gateway.

Every refused attempt is checked three ways: what the attacker got (a close code, a REJECT, its
own document converging to the state without its change), what the other clients received
(nothing of it: their every incoming transaction is recorded), and what reached the store
(nothing of it: the refused value's bytes are in no stored blob).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pycrdt import Array, Doc, Map, TransactionEvent
from starlette.datastructures import Secret
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway import audit
from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.settings import Settings
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway, start_in_process, stop_in_process
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    AUTH_PERMISSION_DENIED,
    AUTH_TOKEN,
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    SyncStep1,
)

SECRET = "attack-suite-secret-0123456789-abcdef"
WEDDING = "wed-1"
ISSUER, AUDIENCE = Settings().jwt_issuer, Settings().jwt_audience
WAIT = 10.0
"""Seconds before a wait for the gateway's answer fails the test (a hang is a failure)."""


def token(
    role: Role = Role.PLANNER,
    *,
    wedding: str = WEDDING,
    subject: str | None = None,
    vendor_id: str | None = None,
    ttl: float = 600,
    admin: bool = False,
    secret: str = SECRET,
) -> str:
    return issue_token(
        secret,
        subject=subject or f"{role.value}-user",
        weddings={wedding: role},
        vendor_id=vendor_id,
        ttl_seconds=ttl,
        issuer=ISSUER,
        audience=AUDIENCE,
        admin=admin,
    )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway that checks tokens (HS256 shared secret)."""
    running = await start_in_process(
        tmp_path / "data", room_idle_seconds=0.2, jwt_secret=Secret(SECRET)
    )
    try:
        yield running
    finally:
        await stop_in_process(running)


@dataclass
class Watcher:
    """A client whose every incoming transaction is recorded (what reached it)."""

    client: GatewayClient
    received: list[bytes] = field(default_factory=list)

    def saw(self, needle: bytes) -> bool:
        return any(needle in update for update in self.received)


@pytest.fixture
async def wedding(secured: RunningGateway) -> AsyncIterator[Watcher]:
    """A created wedding with two vendors' entries, and a planner watching it."""
    doc: Doc[Any] = Doc()
    watcher = Watcher(GatewayClient(secured.ws_url, WEDDING, doc=doc, token=token()))

    def record(event: TransactionEvent) -> None:
        watcher.received.append(event.update)

    async with watcher.client as planner:
        await planner.wait_synced()
        planner.create_wedding("Ana", "Bea", "confirmed", venue="Villa Rosa", guest_count=120)
        planner.add_timeline_entry(
            id="dinner", title="Dinner", start="19:00", vendor_id="caterer-42"
        )
        planner.add_timeline_entry(
            id="flowers", title="Flowers", start="12:00", vendor_id="florist-7"
        )
        await planner.wait_durable()
        doc.observe(record)  # from now on: only what other clients cause
        yield watcher


async def stored_blobs(running: RunningGateway, room: str = WEDDING) -> list[bytes]:
    history = await running.node.store.load(RoomId(room))
    return list(history.blobs())


async def stored_state(running: RunningGateway, room: str = WEDDING) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    for blob in await stored_blobs(running, room):
        doc.apply_update(blob)
    return {
        "core": doc.get("core", type=Map).to_py() or {},
        "timeline": doc.get("timeline", type=Array).to_py() or [],
    }


def state(client: GatewayClient) -> dict[str, Any]:
    return {"core": client.core(), "timeline": client.timeline()}


async def attempt(
    secured: RunningGateway,
    watcher: Watcher,
    role: Role,
    edit: Callable[[GatewayClient], object],
    *,
    bad: bytes,
    field_name: str,
    vendor_id: str | None = None,
) -> GatewayClient:
    """Connect as ``role``, make ``edit``, and check that it was refused everywhere."""
    before = state(watcher.client)
    attacker = GatewayClient(
        secured.ws_url, WEDDING, token=token(role, vendor_id=vendor_id), reconnect=False
    )
    async with attacker:
        await attacker.wait_synced()
        edit(attacker)
        async with asyncio.timeout(WAIT):
            await attacker.wait_durable()  # the ACK follows the stored compensation
            rejects = await attacker.wait_rejected()
        assert field_name in [r.field for r in rejects], rejects
        await eventually(lambda: state(attacker) == before, message="attacker converges")
        assert attacker.last_close is None, "a refused change does not close the connection"
    assert state(watcher.client) == before
    assert not watcher.saw(bad), "the refused value reached another client"
    assert all(bad not in blob for blob in await stored_blobs(secured))
    assert await stored_state(secured) == before
    return attacker


# -- roles -------------------------------------------------------------------------------------


async def test_viewer_writes_are_undone_everywhere(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.set_core(venue="Viewer Hall")

    await attempt(secured, wedding, Role.VIEWER, edit, bad=b"Viewer Hall", field_name="core.venue")


async def test_viewer_cannot_add_a_timeline_entry(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.add_timeline_entry(id="sneaky", title="Sneaky", start="10:00")

    await attempt(secured, wedding, Role.VIEWER, edit, bad=b"Sneaky", field_name="timeline[sneaky]")


async def test_vendor_cannot_write_a_core_field(secured: RunningGateway, wedding: Watcher) -> None:
    def edit(c: GatewayClient) -> None:
        c.set_core(wedding_date="2099-01-01")

    await attempt(
        secured,
        wedding,
        Role.VENDOR,
        edit,
        bad=b"2099-01-01",
        field_name="core.wedding_date",
        vendor_id="caterer-42",
    )


async def test_vendor_cannot_edit_another_vendors_entry(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.update_timeline_entry("flowers", notes="Cancelled by the caterer")

    await attempt(
        secured,
        wedding,
        Role.VENDOR,
        edit,
        bad=b"Cancelled by the caterer",
        field_name="timeline[flowers].notes",
        vendor_id="caterer-42",
    )


async def test_vendor_cannot_delete_another_vendors_entry(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.remove_timeline_entry("flowers")

    # a deletion carries no value; the entry must come back on every replica
    await attempt(
        secured,
        wedding,
        Role.VENDOR,
        edit,
        bad=b"\xff-no-value-\xff",
        field_name="timeline[flowers]",
        vendor_id="caterer-42",
    )


async def test_vendor_cannot_add_an_entry_for_another_vendor(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.add_timeline_entry(id="cake", title="Cake", start="20:00", vendor_id="baker-9")

    await attempt(
        secured,
        wedding,
        Role.VENDOR,
        edit,
        bad=b"baker-9",
        field_name="timeline[cake]",
        vendor_id="caterer-42",
    )


async def test_vendor_allowed_edits_go_through_in_the_same_session_as_refused_ones(
    secured: RunningGateway, wedding: Watcher
) -> None:
    vendor = GatewayClient(
        secured.ws_url,
        WEDDING,
        token=token(Role.VENDOR, subject="chef", vendor_id="caterer-42"),
    )
    async with vendor:
        await vendor.wait_synced()
        vendor.update_timeline_entry("dinner", notes="Two vegan menus")
        vendor.set_core(status="cancelled")  # refused
        vendor.add_timeline_entry(id="cake", title="Cake", start="21:00", vendor_id="caterer-42")
        await vendor.wait_durable()
        assert [r.field for r in vendor.rejected] == ["core.status"]
    planner = wedding.client
    await eventually(lambda: [e["id"] for e in planner.timeline()] == ["dinner", "flowers", "cake"])
    assert planner.timeline()[0]["notes"] == "Two vegan menus"
    assert planner.core()["status"] == "confirmed"
    assert not wedding.saw(b"cancelled")
    entries = await secured.node.store.audit(RoomId(WEDDING))
    by_chef = [e for e in entries if e.subject == "chef"]
    assert [e.role for e in by_chef] == ["vendor"] * len(by_chef)
    changed = {f for e in by_chef for f in e.fields}
    assert {"timeline[dinner].notes", "timeline[cake]"} <= changed
    assert "core.status" not in changed


async def test_awareness_from_a_viewer_reaches_nobody(secured: RunningGateway) -> None:
    url = f"{secured.ws_url}/{WEDDING}"
    async with (
        connect(f"{url}?token={token(Role.PLANNER)}") as observer,
        connect(f"{url}?token={token(Role.VIEWER)}") as viewer,
        connect(f"{url}?token={token(Role.COUPLE)}") as couple,
    ):
        for ws in (observer, viewer, couple):
            await ws.send(codec.encode(SyncStep1(b"\x00")))
        viewer_state = codec.encode_awareness([AwarenessEntry(777, 1, '{"user":"viewer"}')])
        couple_state = codec.encode_awareness([AwarenessEntry(888, 1, '{"user":"couple"}')])
        await viewer.send(codec.encode(AwarenessUpdate(viewer_state)))
        await couple.send(codec.encode(AwarenessUpdate(couple_state)))
        # the room handles messages in order: once the couple's state arrives, the viewer's
        # would have arrived before it
        seen = []
        while True:
            message = codec.decode_server_message(await observer.recv())
            if isinstance(message, AwarenessUpdate):
                entries = codec.decode_awareness(message.payload, max_entries=64)
                seen.extend(e.client_id for e in entries)
                if 888 in seen:
                    break
        assert 777 not in seen


# -- the schema --------------------------------------------------------------------------------

CORE_VIOLATIONS = [
    ("partner_a", "", "core.partner_a"),
    ("status", "eloped", "core.status"),
    ("wedding_date", "2027-02-30", "core.wedding_date"),
    ("ceremony_time", "25:00", "core.ceremony_time"),
    ("timezone", "Mars/Olympus_Mons", "core.timezone"),
    ("venue", "V" * 201, "core.venue"),
    ("venue_address", "", "core.venue_address"),
    ("guest_count", 5001, "core.guest_count"),
    ("guest_count", 12.5, "core.guest_count"),
    ("guest_count", "120", "core.guest_count"),
    ("notes", "N" * 5001, "core.notes"),
    ("budget", "lots", "core.budget"),
]


@pytest.mark.parametrize(("key", "value", "label"), CORE_VIOLATIONS, ids=lambda v: str(v)[:12])
async def test_core_schema_violations_are_refused(
    secured: RunningGateway, wedding: Watcher, key: str, value: Any, label: str
) -> None:
    def edit(c: GatewayClient) -> None:
        c.set_core(**{key: value})

    # numbers and empty strings have no bytes to look for: the state checks cover them
    bad = value.encode() if isinstance(value, str) and value else b"\xff-no-bytes-\xff"
    await attempt(secured, wedding, Role.PLANNER, edit, bad=bad, field_name=label)


ENTRY_VIOLATIONS = [
    ({"id": "x1", "title": "No start"}, "timeline[x1]"),
    ({"id": "bad id!", "title": "Bad id", "start": "10:00"}, "timeline[#2]"),
    ({"id": "x2", "title": "", "start": "10:00"}, "timeline[x2]"),
    ({"id": "x3", "title": "Backwards", "start": "10:00", "end": "09:00"}, "timeline[x3]"),
    ({"id": "x4", "title": "Late", "start": "24:00"}, "timeline[x4]"),
    ({"id": "x5", "title": "Long", "start": "10:00", "notes": "n" * 2001}, "timeline[x5]"),
    ({"id": "x6", "title": "Far", "start": "10:00", "location": "l" * 201}, "timeline[x6]"),
    ({"id": "x7", "title": "Who", "start": "10:00", "vendor_id": "no spaces"}, "timeline[x7]"),
    ({"id": "x8", "title": "Extra", "start": "10:00", "color": "red"}, "timeline[x8]"),
    ({"id": "dinner", "title": "Second dinner", "start": "20:00"}, "timeline[dinner]"),
]


@pytest.mark.parametrize(("entry", "label"), ENTRY_VIOLATIONS, ids=lambda v: str(v)[:20])
async def test_timeline_schema_violations_are_refused(
    secured: RunningGateway, wedding: Watcher, entry: dict[str, Any], label: str
) -> None:
    def edit(c: GatewayClient) -> None:
        with c.doc.transaction():
            c.timeline_array.append(Map(entry))
        c._flush()

    await attempt(
        secured,
        wedding,
        Role.PLANNER,
        edit,
        bad=entry["title"].encode() or b"\xff-an-empty-title-has-no-bytes-\xff",
        field_name=label,
    )


async def test_an_entry_id_never_changes_and_end_never_precedes_start(
    secured: RunningGateway, wedding: Watcher
) -> None:
    def edit(c: GatewayClient) -> None:
        c.update_timeline_entry("dinner", id="renamed", end="08:00")

    await attempt(
        secured, wedding, Role.PLANNER, edit, bad=b"renamed", field_name="timeline[dinner].id"
    )


# -- tokens and isolation ----------------------------------------------------------------------


@dataclass
class Refusal:
    code: int
    messages: list[Any]


async def refused(url: str, first: bytes | None = None) -> Refusal:
    """Open ``url``, optionally send ``first``, and read until the server closes."""
    messages: list[Any] = []
    try:
        async with connect(url) as ws:
            # ask for the document, as a client would; the server may have closed already
            with contextlib.suppress(ConnectionClosed):
                if first is not None:
                    await ws.send(first)
                await ws.send(codec.encode(SyncStep1(b"\x00")))
            while True:
                messages.append(codec.decode_server_message(await ws.recv()))
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else 1006
        return Refusal(code, messages)


def forged(payload_changes: dict[str, Any], *, alg: str = "HS256", key: str = SECRET) -> str:
    claims = jwt.decode(token(), options={"verify_signature": False})
    claims.update(payload_changes)
    return jwt.encode(claims, key, algorithm=alg)


def unsigned() -> str:
    claims = jwt.decode(token(), options={"verify_signature": False})

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "missing": None,
    "garbage": "not-a-jwt",
    "expired": forged({"exp": int(time.time()) - 3600}),
    "alg-none": unsigned(),
    "wrong-key": token(secret="another-secret-of-enough-length-1234"),
    "wrong-audience": forged({"aud": "someone-else"}),
    "wrong-issuer": forged({"iss": "evil"}),
    "no-jti": forged({"jti": None}),
    "unknown-role": forged({"weddings": {WEDDING: "owner"}}),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_bad_tokens_are_refused_before_anything_is_sent(
    secured: RunningGateway, name: str
) -> None:
    bad = BAD_TOKENS[name]
    query = f"?token={bad}" if bad is not None else ""
    result = await refused(f"{secured.ws_url}/{WEDDING}{query}")
    assert result.code == 4401
    assert len(result.messages) == 1, "nothing of the wedding before admission"
    assert result.messages[0].auth_type == AUTH_PERMISSION_DENIED
    assert await stored_blobs(secured) == []


async def test_a_bad_token_in_the_auth_message_is_refused_too(secured: RunningGateway) -> None:
    expired = BAD_TOKENS["expired"]
    assert expired is not None
    result = await refused(f"{secured.ws_url}/{WEDDING}", codec.encode(Auth(AUTH_TOKEN, expired)))
    assert result.code == 4401
    assert [type(m) for m in result.messages] == [Auth]


async def test_a_first_message_that_is_not_an_auth_message_is_refused(
    secured: RunningGateway,
) -> None:
    result = await refused(f"{secured.ws_url}/{WEDDING}")
    assert result.code == 4401
    assert [type(m) for m in result.messages] == [Auth]


async def test_a_token_in_the_auth_message_admits(secured: RunningGateway) -> None:
    async with connect(f"{secured.ws_url}/{WEDDING}") as ws:
        await ws.send(codec.encode(Auth(AUTH_TOKEN, token(Role.VIEWER))))
        await ws.send(codec.encode(SyncStep1(b"\x00")))
        first = codec.decode_server_message(await ws.recv())
        assert isinstance(first, SyncStep1)


async def test_a_token_for_one_wedding_opens_no_other(secured: RunningGateway) -> None:
    result = await refused(f"{secured.ws_url}/wed-2?token={token()}")
    assert result.code == 4503
    assert [type(m) for m in result.messages] == [Auth]
    assert await stored_blobs(secured, "wed-2") == []


@pytest.mark.parametrize("spelling", ["WED-1", "Wed-1", "wed_1", "wed-10", "wed-"])
async def test_other_spellings_of_the_id_are_other_weddings(
    secured: RunningGateway, spelling: str
) -> None:
    result = await refused(f"{secured.ws_url}/{spelling}?token={token()}")
    assert result.code == 4503


@pytest.mark.parametrize(
    "spelling", ["wed-1%20", "wed%E2%80%931", "wed-1%2F", "w%C3%A9d-1", "wed-1/"]
)
async def test_invalid_spellings_are_refused_before_the_upgrade(
    secured: RunningGateway, spelling: str
) -> None:
    with pytest.raises(InvalidStatus, match="403"):
        async with connect(f"{secured.ws_url}/{spelling}?token={token()}"):
            pass


# -- lifecycle ---------------------------------------------------------------------------------


async def test_an_expired_token_closes_its_connection(secured: RunningGateway) -> None:
    client = GatewayClient(
        secured.ws_url, WEDDING, token=token(Role.VIEWER, ttl=1), reconnect=False
    )
    async with client:
        await client.wait_synced()
        await eventually(lambda: client.last_close is not None, timeout=10)
    assert client.last_close is not None
    assert client.last_close[0] == 4401
    assert "expired" in client.last_close[1]


async def test_a_revoked_token_is_closed_and_refused(secured: RunningGateway) -> None:
    doomed = token(Role.COUPLE)
    claims = jwt.decode(doomed, options={"verify_signature": False})
    client = GatewayClient(secured.ws_url, WEDDING, token=doomed, reconnect=False)
    bystander = GatewayClient(secured.ws_url, WEDDING, token=token(Role.PLANNER))
    async with client, bystander:
        await client.wait_synced()
        await bystander.wait_synced()
        async with httpx.AsyncClient(base_url=secured.http_url) as http:
            answer = await http.post(
                "/v1/revocations",
                json={"jti": claims["jti"], "expires_at": claims["exp"]},
                headers={"Authorization": f"Bearer {token(admin=True, subject='ops')}"},
            )
            assert answer.status_code == 200, answer.text
            not_admin = await http.post(
                "/v1/revocations",
                json={"jti": "x", "expires_at": claims["exp"]},
                headers={"Authorization": f"Bearer {token()}"},
            )
            assert not_admin.status_code == 403
        await eventually(lambda: client.last_close is not None)
        assert client.last_close is not None
        assert client.last_close[0] == 4401
        assert bystander.last_close is None
        assert bystander.connections == 1
    result = await refused(f"{secured.ws_url}/{WEDDING}?token={doomed}")
    assert result.code == 4401


async def test_a_role_change_applies_without_reconnecting(
    secured: RunningGateway, wedding: Watcher
) -> None:
    client = GatewayClient(
        secured.ws_url,
        WEDDING,
        token=token(Role.VENDOR, subject="sam", vendor_id="caterer-42"),
    )
    async with client:
        await client.wait_synced()
        client.set_core(venue="Sam's Barn")
        await client.wait_durable()
        await client.wait_rejected(1)
        client.refresh_token(token(Role.PLANNER, subject="sam"))
        client.set_core(venue="Sam's Barn")
        await client.wait_durable()
        await eventually(lambda: wedding.client.core()["venue"] == "Sam's Barn")
        assert len(client.rejected) == 1
        assert client.connections == 1
        assert wedding.client.connections == 1
        other = token(Role.PLANNER, subject="someone-else")
        client.refresh_token(other)  # another subject: refused, connection closed
        await eventually(lambda: client.last_close is not None)
        assert client.last_close is not None
        assert client.last_close[0] == 4401


async def test_audit_lists_who_changed_which_field(
    secured: RunningGateway, wedding: Watcher, capsys: pytest.CaptureFixture[str]
) -> None:
    couple = GatewayClient(secured.ws_url, WEDDING, token=token(Role.COUPLE, subject="ana"))
    async with couple:
        await couple.wait_synced()
        couple.set_core(guest_count=130)
        await couple.wait_durable()
    settings = Settings(data_dir=secured.data_dir)
    assert await asyncio.to_thread(audit.run, settings, WEDDING, as_json=True) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in out if line.startswith("{")]  # not the gateway's logs
    mine = [line for line in lines if line["subject"] == "ana"]
    assert mine
    assert mine[-1]["role"] == "couple"
    assert mine[-1]["fields"] == ["core.guest_count"]
    assert any(line["subject"] == "planner-user" for line in lines)


async def test_a_revocation_on_one_node_closes_the_token_on_another(
    tmp_path: Path, redis_url: str
) -> None:
    """Two nodes sharing Redis: revoked through node A, the token's connection on B closes."""
    prefix = f"attacks-{uuid.uuid4().hex[:8]}"
    shared = {
        "jwt_secret": Secret(SECRET),
        "redis_url": Secret(redis_url),
        "redis_prefix": prefix,
    }
    a = await start_in_process(tmp_path / "a", **shared)
    b = await start_in_process(tmp_path / "b", **shared)
    try:
        doomed = token(Role.COUPLE)
        claims = jwt.decode(doomed, options={"verify_signature": False})
        client = GatewayClient(b.ws_url, WEDDING, token=doomed, reconnect=False)
        async with client:
            await client.wait_synced()
            async with httpx.AsyncClient(base_url=a.http_url) as http:
                answer = await http.post(
                    "/v1/revocations",
                    json={"jti": claims["jti"], "expires_at": claims["exp"]},
                    headers={"Authorization": f"Bearer {token(admin=True, subject='ops')}"},
                )
            assert answer.status_code == 200, answer.text
            await eventually(lambda: client.last_close is not None)
        assert client.last_close is not None
        assert client.last_close[0] == 4401
        assert (await refused(f"{b.ws_url}/{WEDDING}?token={doomed}")).code == 4401
    finally:
        await stop_in_process(b)
        await stop_in_process(a)
