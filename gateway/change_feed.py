"""``GET /v1/changes/stream``: Server-Sent Events of the change feed of a token's weddings.

Each event is one change set (gateway/history_api.py ``change_set_json``, plus ``wedding_id``)::

    id: v1.eyJ3LTEiOjQyfQ
    event: change
    data: {"wedding_id":"w-1","offset":42,"at":"...","subject":"...","role":"...","via":null,
           "changes":[{"field":"core.venue","old":"A","new":"B"}]}

The ``id`` is the stream's position in every wedding at once: ``v1.`` and the base64url of a
JSON object, wedding id → the last offset sent. A client that reconnects with it in
``Last-Event-ID`` (EventSource does so by itself) gets every change after those offsets, in
offset order per wedding, nothing twice; a wedding the id does not name starts at its newest
offset when the stream opens. Without the header the stream starts now.

Weddings: the token's (every role may read); ``?wedding=`` (repeatable) narrows them to some of
those. Development mode (no keys) has no token to read them from: ``?wedding=`` is required.
The stream polls the store (``GATEWAY_CHANGES_POLL_SECONDS``: one query for which weddings
changed, then one per changed wedding), so it sees the changes of every node; a comment line
is sent every ``GATEWAY_SSE_KEEPALIVE_SECONDS`` so proxies keep the connection. A draining node
ends its streams (EventSource reconnects by itself, with its ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import history
from gateway.gatekeeper import Gatekeeper
from gateway.history_api import HistoryConfig, change_set_json
from gateway.http_errors import HttpError
from gateway.ports import Versions
from gateway.tokens import NoToken
from gateway.types import RoomId, parse_room_id

CLOCK_SLACK_SECONDS = 5.0
"""How far back each poll looks before the previous one: a commit's time is taken before it
becomes visible, so a row may show up a little after a poll that began later than its time."""
MAX_WEDDINGS = 1000
"""Most weddings one stream may follow (a token naming more is refused with 400)."""


@dataclass(frozen=True, slots=True)
class FeedConfig:
    poll_seconds: float
    keepalive_seconds: float
    batch_max: int


def encode_position(cursors: dict[RoomId, int]) -> str:
    raw = orjson.dumps(dict(sorted(cursors.items())))
    return "v1." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_position(text: str) -> dict[RoomId, int]:
    """The cursors of a ``Last-Event-ID``; 400 when it is not one this stream sent."""
    if not text.startswith("v1.") or len(text) > 1 << 16:
        raise HttpError(400, "Last-Event-ID is not a position of this stream")
    digits = text[3:]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(digits + "=" * (-len(digits) % 4)))
    except (binascii.Error, ValueError):
        raise HttpError(400, "Last-Event-ID is not a position of this stream") from None
    if not isinstance(data, dict):
        raise HttpError(400, "Last-Event-ID is not a position of this stream")
    cursors: dict[RoomId, int] = {}
    for wedding, offset in data.items():
        room = parse_room_id(wedding)
        if room is None or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise HttpError(400, "Last-Event-ID is not a position of this stream")
        cursors[room] = offset
    return cursors


async def change_stream(request: Request) -> Response:
    """``GET /v1/changes/stream`` (module docstring)."""
    weddings = _weddings(request)
    store = request.state.node.store
    if not isinstance(store, Versions):
        raise HttpError(501, "this store keeps no version history")
    resumed = request.headers.get("last-event-id")
    cursors = decode_position(resumed) if resumed else {}
    for room in weddings:
        if room not in cursors:
            newest = await store.audit_range(room, limit=1, newest_first=True)
            cursors[room] = newest[0].offset if newest else 0
    feed: FeedConfig = request.state.feed
    stopping: asyncio.Event = request.state.node.rooms.stopping
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(store, feed, cursors, stopping), media_type="text/event-stream", headers=headers
    )


def _weddings(request: Request) -> list[RoomId]:
    gatekeeper: Gatekeeper = request.state.gatekeeper
    asked = request.query_params.getlist("wedding")
    unknown = sorted(set(request.query_params.keys()) - {"wedding", "token"})
    if unknown:
        raise HttpError(400, f"unknown parameter {unknown[0]!r}: expected wedding, token")
    rooms = []
    for wedding in asked:
        room = parse_room_id(wedding)
        if room is None:
            raise HttpError(400, f"{wedding[:70]!r} is not a wedding id")
        rooms.append(room)
    if gatekeeper.development:
        if not rooms:
            raise HttpError(400, "development mode has no token to list weddings: add ?wedding=")
    else:
        token = gatekeeper.token_in(request.scope)
        if token is None:
            raise NoToken("a token is required: Authorization: Bearer or ?token=")
        claims = gatekeeper.claims(token)
        for room in rooms:
            claims.grant_for(room)  # Forbidden for one it does not cover
        rooms = rooms or [RoomId(w) for w in claims.weddings]
    if len(set(rooms)) > MAX_WEDDINGS:
        raise HttpError(400, f"a stream follows at most {MAX_WEDDINGS} weddings")
    return sorted(set(rooms))


async def _events(
    store: Versions, feed: FeedConfig, cursors: dict[RoomId, int], stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    """The stream's bytes until the client goes or the node drains (then the stream ends: the
    client reconnects, to another node, with its ``Last-Event-ID``)."""
    yield b"retry: 2000\n\n"
    since = time.time()
    quiet_since = time.monotonic()
    while not stopping.is_set():
        started = time.time()
        changed = await store.rooms_changed_since(since - CLOCK_SLACK_SECONDS)
        since = started
        for room in sorted(changed & cursors.keys()):
            async for event in _room_events(store, feed, cursors, room):
                quiet_since = time.monotonic()
                yield event
        if time.monotonic() - quiet_since >= feed.keepalive_seconds:
            quiet_since = time.monotonic()
            yield b": keepalive\n\n"
        with contextlib.suppress(TimeoutError):  # the poll interval, cut short by a drain
            await asyncio.wait_for(stopping.wait(), feed.poll_seconds)


async def _room_events(
    store: Versions, feed: FeedConfig, cursors: dict[RoomId, int], room: RoomId
) -> AsyncIterator[bytes]:
    while True:
        try:
            sets = await history.changes_after(store, room, cursors[room], feed.batch_max)
        except history.HistoryGone as exc:
            yield b"event: gone\ndata: " + orjson.dumps({"wedding_id": room, "error": str(exc)})
            yield b"\n\n"
            del cursors[room]
            return
        for change_set in sets:
            cursors[room] = change_set.entry.offset
            data = orjson.dumps({"wedding_id": room, **change_set_json(change_set)})
            yield f"id: {encode_position(cursors)}\nevent: change\ndata: ".encode() + data + b"\n\n"
        if len(sets) < feed.batch_max:
            return


__all__ = ["FeedConfig", "HistoryConfig", "change_stream", "decode_position", "encode_position"]
