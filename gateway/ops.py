"""The ops page: ``GET /ops`` (a plain HTML page) polls ``GET /ops/status`` (this node as JSON).

The page holds nothing secret and is served to anyone; the status needs an admin token
(``Authorization: Bearer``, as every admin endpoint, gateway/admin.py), which the page asks for
and keeps in the tab's sessionStorage. In development mode (no keys configured: no token can be
checked) the status is open, as the demo at ``/`` is.

What the status says is read at request time from the node's statistics and telemetry
(gateway/telemetry.py): nothing is computed on the hot path for it. Latency comes as the
histograms' cumulative buckets: the page computes the quantiles of what happened between two
polls from their difference (a live p99, not one since start-up).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pycrdt import Map
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin import admin_claims
from gateway.gatekeeper import Gatekeeper
from gateway.node import Node
from gateway.slot import RoomSlot
from gateway.telemetry import Histogram, refusal_label

PAGE = Path(__file__).resolve().parent / "ops.html"
NO_STORE = {"Cache-Control": "no-store"}
WEDDINGS_TODAY_MAX = 200
"""Today's weddings listed at most (the count says how many there are)."""
HEARD_HEALTHY_LEASES = 3.0
"""Another node is "up" while heard from within this many lease intervals (its OWNER heartbeat
comes every lease interval, gateway/ownership.py)."""


def ops_routes() -> list[BaseRoute]:
    return [
        Route("/ops", page, methods=["GET"]),
        Route("/ops/status", status, methods=["GET"]),
    ]


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=NO_STORE)


async def status(request: Request) -> Response:
    """This node's status for the ops page. 401/403 as every admin endpoint, but open in
    development mode (no keys configured)."""
    gatekeeper: Gatekeeper = request.state.gatekeeper
    if not gatekeeper.development:
        admin_claims(request, gatekeeper)  # raises Unauthorized / Forbidden
    node: Node = request.state.node
    return JSONResponse(node_status(node, dt.datetime.now(dt.UTC)), headers=NO_STORE)


def node_status(node: Node, now: dt.datetime) -> dict[str, Any]:
    """Everything the ops page shows, for one node at ``now`` (UTC)."""
    stats = node.statistics()
    telemetry = node.telemetry
    slots = list(node.rooms.slots.values())
    by_state: dict[str, int] = {}
    for slot in slots:
        by_state[slot.state.value] = by_state.get(slot.state.value, 0) + 1
    behind = sum(1 for outlet in node.fanout.outlets.values() if getattr(outlet, "behind", False))
    today = weddings_today(slots, now)
    return {
        "generated_at": now.isoformat(timespec="milliseconds"),
        "node": node.node_id,
        "nodes": cluster_nodes(node, slots),
        "connections": {"total": stats.connections, "by_platform": dict(telemetry.platforms)},
        "rooms": {"loaded": stats.rooms, "owned": stats.owned_rooms, "by_state": by_state},
        "latency": {
            "sync": _histogram(telemetry.edit_broadcast),
            "ack": _histogram(telemetry.edit_ack),
            "relay": _histogram(telemetry.relay_ack),
            "store_commit": _histogram(telemetry.store_commit),
            "bus": _histogram(telemetry.bus_lag),
            "loop_lag": {**_histogram(telemetry.loop_lag), "last": node.loop_lag.seconds},
        },
        "messages_received": stats.messages_received,
        "appends_pending": stats.committer.pending,
        "refusals": {
            "total": stats.refusals,
            "by_class": {refusal_label(k): v for k, v in sorted(telemetry.refusals.items()) if v},
        },
        "slow_clients": {"behind": behind, "closed": telemetry.slow_client_closes},
        "closes": {code: n for code, n in sorted(telemetry.closes.items()) if n},
        "weddings_today": {"count": len(today), "weddings": today[:WEDDINGS_TODAY_MAX]},
    }


def _histogram(histogram: Histogram) -> dict[str, Any]:
    """Count, sum, cumulative buckets (``[le, count]``, +Inf as null) and lifetime p50/p99."""
    return {
        "count": histogram.count,
        "sum": histogram.total,
        "buckets": [
            [None if le == "+Inf" else float(le), count] for le, count in histogram.cumulative()
        ],
        "p50": _finite(histogram.quantile(0.5)),
        "p99": _finite(histogram.quantile(0.99)),
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or value == float("inf") else value


def cluster_nodes(node: Node, slots: list[RoomSlot]) -> list[dict[str, Any]]:
    """This node with its readiness, and every node it shares a loaded wedding with: the
    owners it relays to, the relaying nodes it judges for, each with when it was last heard."""
    loop_now = _loop_time()
    heard: dict[str, float] = {}
    owns: dict[str, int] = {}
    for slot in slots:
        if slot.owner is not None and slot.owner != node.node_id:
            owns[slot.owner] = owns.get(slot.owner, 0) + 1
            heard[slot.owner] = max(heard.get(slot.owner, 0.0), slot.owner_heard)
        for other, at in slot.heard.items():
            heard[other] = max(heard.get(other, 0.0), at)
    checks = node.readiness()
    this = {
        "id": node.node_id,
        "self": True,
        "health": "ready" if all(checks.values()) else "unready",
        "checks": checks,
        "degraded": node.degraded(),
        "rooms_owned": node.ownership.owned(),
        "heard_seconds_ago": 0.0,
    }
    healthy_within = HEARD_HEALTHY_LEASES * node.ownership.lease_seconds
    others = []
    for peer in sorted(heard.keys() - {node.node_id}):
        ago = max(0.0, loop_now - heard[peer]) if heard[peer] else None
        others.append(
            {
                "id": peer,
                "self": False,
                "health": "up" if ago is not None and ago <= healthy_within else "silent",
                "rooms_owned": owns.get(peer, 0),
                "heard_seconds_ago": ago,
            }
        )
    return [this, *others]


def _loop_time() -> float:
    """The event loop's clock, which ``owner_heard`` and ``heard`` are in."""
    return asyncio.get_running_loop().time()


def weddings_today(slots: list[RoomSlot], now: dt.datetime) -> list[dict[str, Any]]:
    """Loaded weddings whose ``wedding_date`` is today where they happen (their ``timezone``,
    else UTC), with members first. Reads one key per room; the rest only for today's."""
    found = []
    near = {(now.date() + dt.timedelta(days=d)).isoformat() for d in (-1, 0, 1)}
    for slot in slots:
        room = slot.room
        if room is None or room.poisoned:
            continue
        core = room.doc.get("core", type=Map)
        date = core.get("wedding_date")
        if date not in near:
            continue
        if date != now.astimezone(_zone(core.get("timezone"))).date().isoformat():
            continue
        found.append(
            {
                "id": slot.id,
                "couple": f"{core.get('partner_a', '?')} & {core.get('partner_b', '?')}",
                "venue": core.get("venue"),
                "ceremony_time": core.get("ceremony_time"),
                "timezone": core.get("timezone"),
                "status": core.get("status"),
                "members": len(room.members),
                "relayed": len(slot.proxies),  # clients of other nodes this node judges for
                "owner": slot.owner,
            }
        )
    found.sort(key=lambda w: (-w["members"], w["ceremony_time"] or "", w["id"]))
    return found


def _zone(name: object) -> dt.tzinfo:
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return dt.UTC
