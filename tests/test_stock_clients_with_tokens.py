"""Stock yjs + y-websocket clients with tokens (issue 6 "done when"): they sync unmodified, and a
vendor's forbidden edit is undone on every replica, its own included, while its allowed edits in
the same session go through. The script is tests/js/stock_roles.mjs (Node 20, `npm ci`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.auth import issue_token
from gateway.core.policy import Role
from gateway.types import RoomId
from tests.conftest import RunningGateway
from tests.interop import require_node
from tests.test_attacks import AUDIENCE, ISSUER, SECRET, WEDDING, secured

__all__ = ["secured"]  # the fixture

SCRIPT = Path(__file__).resolve().parent / "js" / "stock_roles.mjs"
SCRIPT_DEADLINE = 60.0
"""Seconds before a hung script is killed: protection against hangs, not a performance bound."""


def stock_token(role: Role, vendor_id: str | None = None) -> str:
    return issue_token(
        SECRET,
        subject=f"stock-{role.value}",
        weddings={WEDDING: role},
        vendor_id=vendor_id,
        ttl_seconds=600,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


async def test_stock_clients_with_tokens_converge_without_the_vendors_refused_edits(
    secured: RunningGateway,
) -> None:
    process = await asyncio.create_subprocess_exec(
        require_node(),
        str(SCRIPT),
        secured.ws_url,
        WEDDING,
        stock_token(Role.PLANNER),
        stock_token(Role.VENDOR, vendor_id="caterer-42"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(SCRIPT_DEADLINE):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["planner"] == result["vendor"]
    core, timeline = result["vendor"]["core"], result["vendor"]["timeline"]
    assert "wedding_date" not in core
    dinner, flowers = timeline
    assert dinner["notes"] == "Two vegan menus"
    assert dinner["location"] == "Terrace"
    assert "notes" not in flowers
    assert result["closes"] == [], "no client was disconnected"
    stored = b"".join((await secured.node.store.load(RoomId(WEDDING))).blobs())
    assert b"2099-01-01" not in stored
    assert b"Cancelled!" not in stored
