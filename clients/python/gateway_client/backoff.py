"""Reconnect delays as a pure generator, so tests never sleep (proto/spec.md §6)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def backoff(
    *,
    initial: float = 1.0,
    factor: float = 1.618,
    max_delay: float = 90.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield reconnect delays: a random first one up to ``initial``, then growing by ``factor``."""
    delay = rand() * initial
    yield delay
    delay = max(delay, initial / 10)
    while True:
        delay = min(delay * factor, max_delay)
        yield delay
