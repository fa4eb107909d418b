"""Warm weddings and wedding-day priority: a wedding's date decides how a node treats it.

Most of a Saturday's traffic is for the weddings of that weekend and the week before them: the
couple, the planner and a dozen vendors open those documents again and again. So each node
keeps loaded (``warm_max_rooms`` at most) the weddings it may judge whose ``core.wedding_date``
is within ``warm_days``, refreshed every ``warm_refresh_seconds``, soonest first: after a restart
the weddings of today are loaded before those of next Friday. A warm room is *pinned*: it is not
unloaded when its last member leaves (gateway/rooms.py ``_wait_idle``); it is unpinned when its
date leaves the window or another node owns it.

"Today" is the node's UTC date (``today``, injectable: tests never read the real calendar).
A date is a calendar day in the wedding's own timezone, which may be a day off UTC, so windows
start the day before today: a wedding dated yesterday (UTC) may be under way in Hawaii.

The weddings of the next ``priority_hours`` are the *priority* set: under overload
(gateway/overload.py) connections to any other wedding are refused first (1013, retry later).

Where the dates come from: the store's index (``WeddingDates``), which the node writes when a
room loads and when an edit changes ``core.wedding_date`` (``Calendar``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from pycrdt import Map

from gateway.errors import GatewayError
from gateway.ports import WeddingDates
from gateway.slot import RoomSlot
from gateway.types import NodeId, RoomId

log = structlog.get_logger(__name__)

WEDDING_DATE = "core.wedding_date"
"""The field name an Append lists when an edit changed the date (gateway/core/schema.py)."""


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class WarmSettings:
    days: int = 7
    """Weddings dated within this many days from today are kept loaded."""
    max_rooms: int = 2000
    """At most this many warm rooms per node; 0 turns warming off."""
    refresh_seconds: float = 60.0
    priority_hours: float = 48.0
    """Weddings within this many hours keep their connections under overload."""
    priority_max_weddings: int = 100_000
    """The largest priority set a node keeps (one row of the index each)."""

    @property
    def priority_days(self) -> int:
        return max(0, math.ceil(self.priority_hours / 24))


def wedding_date_of(slot: RoomSlot) -> date | None:
    """The loaded room's ``core.wedding_date``, or None (no room, no date, not a date)."""
    room = slot.room
    if room is None:
        return None
    value = room.doc.get("core", type=Map).get("wedding_date")
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


class Calendar:
    """Keeps the store's wedding-date index in step with the rooms this node judges, and
    knows the priority set. Writes are jobs of the node (``spawn``), never on the hot path."""

    def __init__(
        self,
        dates: WeddingDates | None,
        settings: WarmSettings,
        today: Callable[[], date],
        spawn: Callable[[str, Coroutine[Any, Any, None]], Any],
    ) -> None:
        self.dates = dates
        self.settings = settings
        self.today = today
        self.spawn = spawn
        self.priority: frozenset[RoomId] = frozenset()
        """Weddings within ``priority_hours`` (any owner), from the index's last refresh."""
        self._known: dict[RoomId, date | None] = {}
        """The date each loaded room had when last written (so unchanged dates are not);
        forgotten when the room unloads."""

    def window(self, days: int) -> tuple[date, date]:
        today = self.today()
        return today - timedelta(days=1), today + timedelta(days=days)

    def is_priority(self, room_id: RoomId, slot: RoomSlot | None) -> bool:
        """Whether the wedding is within the priority window (index, or the loaded document)."""
        if room_id in self.priority:
            return True
        day = self._known.get(room_id) if slot is None else wedding_date_of(slot)
        if day is None:
            return False
        first, last = self.window(self.settings.priority_days)
        return first <= day <= last

    def noted(self, slot: RoomSlot) -> None:
        """The room loaded, or an edit changed its date: write the date if it changed."""
        day = wedding_date_of(slot)
        if slot.id in self._known and self._known[slot.id] == day:
            return
        self._known[slot.id] = day
        if self.dates is not None and slot.room is not None:
            self.spawn("wedding_date", self._write(slot.id, day))

    def forget(self, room_id: RoomId) -> None:
        self._known.pop(room_id, None)

    async def _write(self, room_id: RoomId, day: date | None) -> None:
        assert self.dates is not None
        try:
            await self.dates.set_wedding_date(room_id, day)
        except GatewayError as exc:  # the next load or date edit writes it again
            self._known.pop(room_id, None)
            log.warning("wedding_date_not_indexed", room=room_id, error=str(exc))

    async def refresh_priority(self) -> None:
        if self.dates is None:
            return
        first, last = self.window(self.settings.priority_days)
        rows = await self.dates.weddings_between(
            first, last, limit=self.settings.priority_max_weddings
        )
        self.priority = frozenset(room for room, _ in rows)


class Warmer:
    """Loads and pins the weddings of the coming days this node may judge (the module doc)."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        calendar: Calendar,
        warm: Callable[[RoomId], Coroutine[Any, Any, bool]],
        unpin: Callable[[RoomId], None],
        settings: WarmSettings,
    ) -> None:
        self.node_id = node_id
        self.calendar = calendar
        self._warm = warm
        self._unpin = unpin
        self.settings = settings
        self.warm: list[RoomId] = []
        """The rooms pinned by the last refresh, in the order they were loaded."""
        self.refreshes = 0
        self.refreshed = asyncio.Event()
        """Set after each refresh (tests wait on it)."""

    async def run(self) -> None:
        """Refresh now (start-up: today's weddings first), then every ``refresh_seconds``."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.settings.refresh_seconds)

    async def refresh(self) -> None:
        calendar = self.calendar
        try:
            await calendar.refresh_priority()
            wanted: list[RoomId] = []
            if calendar.dates is not None and self.settings.max_rooms > 0:
                first, last = calendar.window(self.settings.days)
                rows = await calendar.dates.weddings_between(
                    first, last, limit=self.settings.max_rooms, free_or_held_by=self.node_id
                )
                wanted = [room for room, _ in rows]  # soonest first: the wedding day first
        except GatewayError as exc:  # the store is down: keep what is warm, try again later
            log.warning("warm_refresh_failed", error=str(exc))
            return
        keep = set(wanted)
        for room in self.warm:
            if room not in keep:
                self._unpin(room)
        loaded = []
        for room in wanted:  # one at a time, in order: today's weddings are served first
            if await self._warm(room):
                loaded.append(room)
        self.warm = loaded
        self.refreshes += 1
        self.refreshed.set()
        log.info("warm_refreshed", warm=len(loaded), priority=len(calendar.priority))
