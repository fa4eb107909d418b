"""Containment (DESIGN.md §7): if pycrdt fails inside a room's Doc anyway, the room is dropped and
rebuilt from the store, the input is quarantined and denied, and nobody loses an acked edit."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.core.guard import Guard
from gateway.core.update_check import check_update
from gateway.crash_journal import CrashJournal
from gateway.types import RoomId
from gateway_client import GatewayClient
from tests.conftest import RunningGateway
from tests.core import update_builder as ub
from tests.helpers import eventually
from wedsync_protocol import codec
from wedsync_protocol.messages import SyncUpdate


async def read_until_closed(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def test_a_panic_inside_pycrdt_resets_only_that_room(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        GatewayClient(gateway.ws_url, "poison") as member,
        GatewayClient(gateway.ws_url, "other") as elsewhere,
    ):
        await member.wait_synced()
        await elsewhere.wait_synced()
        await member.wait_durable(member.create_wedding("Ana Silva", "Bea Costa", venue="Hall"))
        room = gateway.node.room(RoomId("poison"))
        nothing = check_update(b"\x00\x00", {})

        def let_everything_through(
            self: Guard, session: Any, update: bytes, now: float, **_: Any
        ) -> Any:
            return nothing  # as if the guard had a gap

        monkeypatch.setattr(Guard, "check_client_update", let_everything_through)
        # DESIGN.md §7: a known client id with a clock 2^31 ahead panics yrs mid-apply
        poison = ub.update(
            [ub.section(member.doc.client_id, 2**31 + 5, [ub.map_set("core", "notes", "b")])]
        )
        async with connect(f"{gateway.ws_url}/poison") as attacker:
            await attacker.recv()
            await attacker.send(codec.encode(SyncUpdate(poison)))
            with pytest.raises(ConnectionClosed):
                await read_until_closed(attacker)
            assert attacker.close_code == 4500
            assert "PanicException" in (attacker.close_reason or "")

        # the member was told to reconnect (4003) and comes back to a room rebuilt from the store
        await eventually(lambda: member.connections == 2, timeout=10)
        await member.wait_synced()
        assert member.last_close is not None
        assert member.last_close[0] == 4003
        assert gateway.node.room(RoomId("poison")) is not room
        await member.wait_durable(member.set_core(guest_count=80))
        assert member.core() == {
            "partner_a": "Ana Silva",
            "partner_b": "Bea Costa",
            "status": "planning",
            "venue": "Hall",
            "guest_count": 80,
        }
        assert elsewhere.connections == 1  # other rooms never noticed

    stats = gateway.node.statistics()
    assert stats.resets == 1
    quarantined = list((gateway.data_dir / "quarantine").glob("*.bin"))
    assert [p.read_bytes() for p in quarantined] == [poison]
    assert gateway.node.journal.is_denied(CrashJournal.digest(poison))
