"""``/mux`` on several nodes (issue 15): a document's writes on a node that does not own its
wedding are relayed to the owner and judged there (one judge per wedding), its sync-status
follows the owner's durable ACK, and a refused change is undone and never reaches Postgres."""

from __future__ import annotations

import httpx
import pytest
from pycrdt import Array, Map

from gateway.core.policy import Role
from gateway_client import GatewayClient
from tests.helpers import eventually
from tests.test_attacks import SECRET
from tests.test_cluster import LOADED, ROOM, ClusterFactory, make_cluster
from tests.test_mux_attacks import mux_peer, token
from wedsync_protocol import mux
from wedsync_protocol.messages import SyncUpdate

__all__ = ["make_cluster"]  # the fixture

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def test_a_mux_document_on_another_node_is_judged_by_the_owner(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(count=2, GATEWAY_JWT_SECRET=SECRET)
    owner_node, other_node = cluster.nodes
    planner = token({ROOM: Role.PLANNER}, subject="planner")
    async with GatewayClient(owner_node.ws_url, ROOM, token=planner) as owner_side:
        await owner_side.wait_synced()
        owner_side.create_wedding("Ana", "Bea", "planning")
        owner_side.add_timeline_entry(id="flowers", title="Flowers", start="12:00", vendor_id="v1")
        await owner_side.wait_durable()
        async with httpx.AsyncClient() as http:
            admin = token({}, subject="ops", admin=True)
            answer = await http.get(
                f"{other_node.http_url}/v1/weddings/{ROOM}/owner",
                headers={"Authorization": f"Bearer {admin}"},
            )
        assert answer.json()["owner"] == "node-0"

        vendor = token({ROOM: Role.VENDOR}, subject="florist", vendor_id="v1")
        async with mux_peer(other_node) as p:
            await p.open(ROOM, vendor)
            await p.synced(ROOM)
            doc = p.docs[ROOM]
            await eventually(lambda: len(doc.get("timeline", type=Array)) == 1, timeout=LOADED)
            await p.write(ROOM, venue="Vendor Hall")  # a core field: refused by the owner
            before = doc.get_state()
            with doc.transaction():
                doc.get("timeline", type=Array)[0]["notes"] = "Peonies"  # its own entry
            await p.ws.send(mux.encode_message(ROOM, SyncUpdate(doc.get_update(before))))
            await eventually(lambda: p.statuses(ROOM)[-2:] == [False, True], timeout=LOADED)
            await eventually(
                lambda: owner_side.timeline()[0].get("notes") == "Peonies", timeout=LOADED
            )
            await eventually(lambda: doc.get("core", type=Map).get("venue") is None, timeout=LOADED)
            assert "venue" not in owner_side.core()
            assert p.close_code is None
    stored = await cluster.stored_doc()
    assert stored.get("timeline", type=Array)[0]["notes"] == "Peonies"
    assert "venue" not in stored.get("core", type=Map)
