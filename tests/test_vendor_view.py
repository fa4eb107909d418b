"""``GET /v1/vendor/weddings`` (issue 15 item 5): a vendor's small view of the weddings it
follows — the public core fields, its own entries whole, the others' reduced to the schedule."""

from __future__ import annotations

import httpx

from gateway.core.policy import Role
from gateway_client import GatewayClient
from tests.conftest import RunningGateway
from tests.test_attacks import secured
from tests.test_mux_attacks import token

__all__ = ["secured"]  # the fixture


async def make_wedding(running: RunningGateway, wedding: str) -> None:
    planner = token({wedding: Role.PLANNER}, subject="planner")
    async with GatewayClient(running.ws_url, wedding, token=planner) as client:
        await client.wait_synced()
        client.create_wedding("Ana", "Bea", "confirmed", venue="Quinta", notes="Private notes")
        client.add_timeline_entry(
            id="flowers", title="Flowers", start="12:00", vendor_id="v1", notes="Peonies"
        )
        client.add_timeline_entry(
            id="dinner", title="Dinner", start="19:00", vendor_id="v2", notes="Secret menu"
        )
        await client.wait_durable()


async def test_a_vendor_sees_its_weddings_small(secured: RunningGateway) -> None:
    await make_wedding(secured, "wed-1")
    await make_wedding(secured, "wed-2")
    vendor = token({"wed-1": Role.VENDOR, "wed-2": Role.VENDOR}, subject="flo", vendor_id="v1")
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        answer = await http.get(
            "/v1/vendor/weddings", headers={"Authorization": f"Bearer {vendor}"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["vendor_id"] == "v1"
        assert [w["wedding_id"] for w in body["weddings"]] == ["wed-1", "wed-2"]
        one = body["weddings"][0]
        assert one["core"] == {
            "partner_a": "Ana",
            "partner_b": "Bea",
            "status": "confirmed",
            "venue": "Quinta",
        }
        own, other = one["timeline"]
        assert own["notes"] == "Peonies"
        assert other == {"id": "dinner", "start": "19:00", "title": "Dinner", "vendor_id": "v2"}
        assert b"Secret menu" not in answer.content
        assert b"Private notes" not in answer.content
        assert one["offset"] > 0

        outside = await http.get(
            "/v1/vendor/weddings?wedding=wed-3", headers={"Authorization": f"Bearer {vendor}"}
        )
        assert outside.status_code == 403
        assert (await http.get("/v1/vendor/weddings")).status_code == 401
        many = "&".join(f"wedding=w{i}" for i in range(101))
        too_many = await http.get(
            f"/v1/vendor/weddings?{many}", headers={"Authorization": f"Bearer {vendor}"}
        )
        assert too_many.status_code == 400
