"""Telemetry: what explains latency, observed on the hot path, exported by gateway/metrics.py.

The instruments here are written to on every edit, so they cost as little as Python allows:

- ``Histogram`` is a list of bucket counts and ``bisect``; one observation measured 0.8 us
  against 9.9 us for ``prometheus_client.Histogram.observe`` (its lock and per-bucket loop) on
  the project machine. Single-threaded by design: only the event loop writes it.
- Every labelled series is a separate, pre-bound object (``phase_guard``, not
  ``phases.labels("guard")``): no label lookup per message.
- Times are ``time.monotonic()`` / ``time.perf_counter()`` pairs; the clocks come from the
  callers that already read them (``Session.last_receive`` is the frame's arrival).

Labels stay low-cardinality (Prometheus conventions): a phase, a close code from a fixed set, a
refusal class, a platform from a fixed set. Never a wedding, a client or a token.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.enforcer import Refusal
from gateway.core.room import PhaseTimers

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds, for what a user waits on (sync, ack, relay, bus, store): 50 ms and 200 ms, the
platform's targets (DESIGN.md §1), are bucket bounds, so their ratios are exact."""
PHASE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
)  # fmt: skip
"""Seconds, for the CPU work of one edit (guard, apply, enforcement: tens of microseconds)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Appends per store transaction (GATEWAY_COMMIT_BATCH_MAX caps it, 512 by default)."""
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PHASE_SAMPLE_EVERY = 16
"""Each room times the guard, apply and enforcement of one judged update in this many
(gateway_update_phase_seconds counts the sampled ones): measured on loadtest/bench_hotpath,
timing every update cost more instructions per edit than all the other metrics together."""

PLATFORMS = ("web", "pwa", "ios", "android", "integration")
"""What a client may declare with ``?platform=`` (proto/spec.md §1); anything else: unknown."""
UNKNOWN_PLATFORM = "unknown"
CLOSE_CODES = frozenset(
    {1000, 1001, 1005, 1006, 1008, 1009, 1011, 1012}
    | {4001, 4002, 4003, 4004, 4401, 4408, 4409, 4429, 4500, 4503}
)
"""The close codes counted by their number (proto/spec.md §6, RFC 6455); any other: "other"."""


class Histogram:
    """Fixed buckets, cumulative on export. ``observe`` is the only hot-path call."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts a value equal to a
        # bound in that bound's bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """Observations so far (summed at read time: one addition less per observation)."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as the exposition wants them, +Inf last."""
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (None: no observation; inf:
        beyond the last bound). A bucket's bound, as ``histogram_quantile`` is close to."""
        if not self.count:
            return None
        rank, running = q * self.count, 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            if running >= rank:
                return bound
        return float("inf")


@dataclass(slots=True)
class Telemetry:
    """Every hot-path instrument of one node; gateway/metrics.py exports them at scrape time."""

    edit_broadcast: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """A client's document update: frame received → broadcast queued to the room's members
    (on the owner; a held broadcast, GATEWAY_BROADCAST_BATCH_MS, waits its batch on top)."""
    edit_ack: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """A client's update: frame received → its durable ACK queued (on the client's node)."""
    store_commit: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    store_batch: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    bus_lag: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """Publish on another node → received here (wall clocks: as good as their sync)."""
    relay_ack: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """A relayed update: forwarded to the owner → the owner's ACK back here."""
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS))
    """How late the node's probe timer fires (gateway/overload.py LoopLag, every 100 ms)."""
    phase_guard: Histogram = field(default_factory=lambda: Histogram(PHASE_BUCKETS))
    phase_apply: Histogram = field(default_factory=lambda: Histogram(PHASE_BUCKETS))
    phase_enforce: Histogram = field(default_factory=lambda: Histogram(PHASE_BUCKETS))
    closes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys([*map(str, sorted(CLOSE_CODES)), "other"], 0)
    )
    """Connections closed, by close code (a string: one of CLOSE_CODES, or "other"); every
    series exists from the start, so that ``rate()`` sees the first one."""
    slow_client_closes: int = 0
    refusals: dict[tuple[str, str], int] = field(
        default_factory=lambda: {
            (area, reason): 0
            for area in ("core", "timeline", "document")
            for reason in ("permission", "schema")
        }
    )
    """Refused changes by (area, reason): area core | timeline | document, reason
    permission | schema."""
    platforms: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*PLATFORMS, UNKNOWN_PLATFORM), 0)
    )
    """Open connections by declared platform."""

    def phase_timers(self) -> PhaseTimers:
        """What the rooms time their guard, apply and enforcement with (gateway/core/room.py)."""
        return PhaseTimers(
            clock=time.perf_counter,
            guard=self.phase_guard,
            apply=self.phase_apply,
            enforce=self.phase_enforce,
            every=PHASE_SAMPLE_EVERY,
        )

    # -- per connection (not per message) -------------------------------------------------------

    def joined(self, platform: str) -> None:
        """A client of ``platform`` joined its room (``left`` follows, once)."""
        self.platforms[platform] = self.platforms.get(platform, 0) + 1

    def left(self, platform: str) -> None:
        self.platforms[platform] -= 1

    def closed(self, code: int) -> None:
        """A connection ended with close ``code`` (sent by either side, or refused)."""
        key = str(code) if code in CLOSE_CODES else "other"
        self.closes[key] = self.closes.get(key, 0) + 1
        if code == 4001:  # SlowClient (gateway/errors.py)
            self.slow_client_closes += 1

    def refused(self, refusals: Iterable[Refusal]) -> None:
        for refusal in refusals:
            key = refusal_class(refusal)
            self.refusals[key] = self.refusals.get(key, 0) + 1


def platform_of(declared: str | None) -> str:
    """The platform label of a client's ``?platform=`` value (proto/spec.md §1)."""
    return declared if declared is not None and declared in PLATFORMS else UNKNOWN_PLATFORM


def refusal_label(key: tuple[str, str]) -> str:
    """``area/reason`` of a refusal class, for people (the ops page)."""
    return "/".join(key)


def refusal_class(refusal: Refusal) -> tuple[str, str]:
    """(area, reason) of a refused change: where, and whether the role forbade it or the schema
    (gateway/core/enforcer.py phrases every role refusal as "role ..." or "vendor ...")."""
    label = refusal.field
    area = "document"
    if label.startswith("core"):
        area = "core"
    elif label.startswith("timeline"):
        area = "timeline"
    reason = "permission" if refusal.reason.startswith(("role ", "vendor ")) else "schema"
    return area, reason
