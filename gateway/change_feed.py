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
The node polls the store for all its streams at once (``ChangeWatcher``: one query per
``GATEWAY_CHANGES_POLL_SECONDS`` for which weddings changed; a stream then reads only those), so
a stream sees the changes of every node; a comment line
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
from dataclasses import dataclass, field

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


@dataclass(eq=False, slots=True)
class Subscription:
    """One stream's weddings, and those the watcher saw change since the stream last looked."""

    rooms: frozenset[RoomId]
    pending: set[RoomId]
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self, changed: set[RoomId]) -> None:
        hit = changed & self.rooms
        if hit:
            self.pending |= hit
            self.woken.set()


class ChangeWatcher:
    """One query per poll interval for every change stream of this node: which weddings
    changed (``Versions.rooms_changed_since``, so every node's changes count). Streams then
    read only the weddings that changed. Run ``run`` as a job of the node."""

    def __init__(self, store: Versions, poll_seconds: float, stopping: asyncio.Event) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.stopping = stopping
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, rooms: frozenset[RoomId]) -> Subscription:
        """Follow ``rooms``; every one is pending at first (the stream catches up from its
        cursors). Call ``unsubscribe`` when the stream ends."""
        subscription = Subscription(rooms, set(rooms))
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def run(self) -> None:
        since = time.time()
        while True:
            started = time.time()
            if self._subscriptions:
                changed = await self.store.rooms_changed_since(since - CLOCK_SLACK_SECONDS)
                for subscription in list(self._subscriptions):
                    subscription.notify(changed)
            since = started
            if self.stopping.is_set():  # a draining node ends its streams
                for subscription in self._subscriptions:
                    subscription.woken.set()
                return
            with contextlib.suppress(TimeoutError):  # the poll interval, cut short by a drain
                async with asyncio.timeout(self.poll_seconds):
                    await self.stopping.wait()


async def change_stream(request: Request) -> Response:
    """``GET /v1/changes/stream`` (module docstring)."""
    weddings = _weddings(request)
    store = request.state.node.store
    watcher: ChangeWatcher | None = request.state.changes
    if not isinstance(store, Versions) or watcher is None:
        raise HttpError(501, "this store keeps no version history")
    resumed = request.headers.get("last-event-id")
    cursors = decode_position(resumed) if resumed else {}
    cursors = {room: offset for room, offset in cursors.items() if room in weddings}
    for room in weddings:
        if room not in cursors:
            newest = await store.audit_range(room, limit=1, newest_first=True)
            cursors[room] = newest[0].offset if newest else 0
    feed: FeedConfig = request.state.feed
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    events = _events(store, feed, cursors, watcher)
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


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
    store: Versions, feed: FeedConfig, cursors: dict[RoomId, int], watcher: ChangeWatcher
) -> AsyncIterator[bytes]:
    """The stream's bytes until the client goes or the node drains (then the stream ends: the
    client reconnects, to another node, with its ``Last-Event-ID``)."""
    subscription = watcher.subscribe(frozenset(cursors))
    try:
        yield b"retry: 2000\n\n"
        while not watcher.stopping.is_set():
            rooms, subscription.pending = subscription.pending, set()
            subscription.woken.clear()
            for room in sorted(rooms & cursors.keys()):
                async for event in _room_events(store, feed, cursors, room):
                    yield event
            if subscription.pending:
                continue
            try:
                async with asyncio.timeout(feed.keepalive_seconds):
                    await subscription.woken.wait()
            except TimeoutError:
                yield b": keepalive\n\n"
    finally:
        watcher.unsubscribe(subscription)


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


__all__ = [
    "ChangeWatcher",
    "FeedConfig",
    "HistoryConfig",
    "change_stream",
    "decode_position",
    "encode_position",
]
