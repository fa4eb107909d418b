"""Overload: when the node is behind, new connections to weddings far off are refused first.

Two signals say the node is behind: appends waiting for the store (``shed_pending_appends``,
below ``max_pending_appends``, where writers of every wedding start being refused with 4002) and
event-loop lag (``shed_loop_lag_seconds``: how late the last timer of ``LoopLag`` below fired,
every ``LAG_PROBE_SECONDS``). While either is above its threshold, a new connection to a
wedding outside the priority window (gateway/warm.py: the next 48 h by default) is closed with
1013 (try again later, proto/spec.md §6) before it costs a room load and a sync. Members already
connected, and every connection to a priority wedding, are untouched: the thresholds sit below
the limits at which the node starts refusing anybody, so a wedding-day member is affected only
after the shedding could not help.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

LAG_PROBE_SECONDS = 0.1
"""How often the loop-lag probe wakes (not a limit: the resolution of the measurement)."""


class LoopLag:
    """How late the event loop runs timers: the lag of the last probe, in seconds. The node's
    one probe: ``observe`` (the telemetry's histogram, gateway_event_loop_lag_seconds) gets
    every measurement."""

    def __init__(self, observe: Callable[[float], None] | None = None) -> None:
        self.seconds = 0.0
        self.observe = observe

    async def run(self, interval: float = LAG_PROBE_SECONDS) -> None:
        clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
        while True:
            started = clock()
            await asyncio.sleep(interval)
            self.seconds = max(0.0, clock() - started - interval)
            if self.observe is not None:
                self.observe(self.seconds)


@dataclass(frozen=True, slots=True)
class ShedSettings:
    pending_appends: int = 5000
    loop_lag_seconds: float = 0.25


class Overload:
    """Says whether (and why) the node sheds new connections to non-priority weddings."""

    def __init__(
        self, settings: ShedSettings, pending: Callable[[], int], lag: Callable[[], float]
    ) -> None:
        """``pending``: appends waiting for the store; ``lag``: the loop's last lag (s)."""
        self.settings = settings
        self._pending = pending
        self._lag = lag
        self.shed: dict[str, int] = {"pending_appends": 0, "loop_lag": 0}
        """Connections refused, by the signal that was over its threshold."""

    def reason(self) -> str | None:
        """``pending_appends`` or ``loop_lag`` while overloaded, else None."""
        if self._pending() >= self.settings.pending_appends:
            return "pending_appends"
        if self._lag() >= self.settings.loop_lag_seconds:
            return "loop_lag"
        return None
