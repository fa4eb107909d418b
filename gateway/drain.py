"""The drain spread: a stopping node tells its clients to reconnect over a window, not at once.

A node that closed 10,000 clients in one tick would hand the other nodes 10,000 reconnects (each
a token check, a sync and maybe a room load) in the same second: the storm the drain exists to
avoid. So each client gets a uniformly random delay in ``[0, window]``; clients whose delays fall
in the same tick are closed together (one wake-up per tick, not per client). Until its turn a
client is served as before: its edits are judged, made durable and acknowledged. Before each
group is closed the node waits for the store (every edit acknowledged before the close is
durable, and its ACK is written before the close frame).

Pure: the caller sleeps; tests drive it with a fake clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

TICK_SECONDS = 0.05
"""Clients whose delays fall within one tick are closed together."""


@dataclass(frozen=True, slots=True)
class Group(Generic[T]):
    """Clients to close ``at`` seconds after the spread starts."""

    at: float
    clients: list[T]


def schedule(
    clients: Sequence[T], window: float, rng: random.Random, *, tick: float = TICK_SECONDS
) -> list[Group[T]]:
    """``clients`` in groups, soonest first, each client at a random time within ``window``.

    A window of 0 closes everyone at once (one group at 0)."""
    if not clients:
        return []
    if window <= 0:
        return [Group(0.0, list(clients))]
    ticks = max(1, math.ceil(window / tick))
    buckets: dict[int, list[T]] = {}
    for client in clients:
        buckets.setdefault(min(int(rng.uniform(0, window) / tick), ticks - 1), []).append(client)
    return [Group(min(i * tick, window), buckets[i]) for i in sorted(buckets)]
