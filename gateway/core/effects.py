"""What the core asks its driver to do; gateway/node.py executes these."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.policy import Author
from gateway.core.session import Session
from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (one encoded message) to one client."""

    session: Session
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Write the same ``data`` to every member of the room (LIVE members only, if ``live_only``)."""

    data: bytes
    exclude: Session | None
    live_only: bool = True
    awareness: bool = False
    """Presence: skipped for members whose role receives none (proto/spec.md §7)."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Hand ``data`` (one encoded message) to the bus for the room's members on other nodes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Persist:
    """Append ``update`` to the durable log; then acknowledge ``seq`` to ``session`` if it opted in.

    ``update`` is None for a message that changed nothing: it is acknowledged once everything
    submitted before it is durable (acks are cumulative and in order, proto/spec.md §4.2).
    """

    update: bytes | None
    session: Session | None
    seq: int
    author: Author | None = None
    fields: tuple[str, ...] = ()
    """What the update changed (the audit), as ``core.venue`` or ``timeline[dinner].notes``."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close one client's connection with the error's close code."""

    session: Session
    error: GatewayError


Effect = Send | Broadcast | Publish | Persist | Close
