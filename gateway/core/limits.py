"""Limits the core enforces. Built by the node from Settings; the core never reads Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.update_reader import DEFAULT_LIMITS, UpdateLimits


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what one client may send (each documented in README 'Configuration')."""

    max_message_bytes: int = 1 << 20
    max_awareness_entries: int = 64
    max_awareness_state_bytes: int = 16 << 10
    max_awareness_depth: int = 16
    max_new_client_ids: int = 32  # per connection per hour
    update: UpdateLimits = field(default_factory=lambda: DEFAULT_LIMITS)
    messages_per_second: float = 200.0
    message_burst: int = 400
    bytes_per_second: float = 2 << 20
    byte_burst: int = 8 << 20
    rate_pacing_seconds: float = 10.0  # a client may be held back this long per window ...
    rate_window_seconds: float = 60.0  # ... before it is closed with 4429


class TokenBucket:
    """A rate with bursts: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, *, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens at time ``now`` (seconds); False, spending none, if too few."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def owe(self, cost: float, now: float) -> float:
        """Spend ``cost`` tokens at ``now`` even if that leaves a debt; return the seconds until
        the debt is paid (0.0 while within the rate): how long to pause the spender."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - cost
        self.stamp = now
        self.tokens = tokens
        return -tokens / self.rate if tokens < 0 else 0.0
