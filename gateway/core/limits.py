"""Limits the core enforces. Built by the node from Settings; the core never reads Settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what one client may send (each documented in README 'Configuration')."""

    max_message_bytes: int = 1 << 20
    max_awareness_entries: int = 64
    max_awareness_state_bytes: int = 16 << 10
