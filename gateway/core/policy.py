"""Who may do what in a wedding: the one policy object (proto/spec.md §7).

A connection holds a ``Grant`` (from its token, ``gateway/auth.py``); the room asks ``RIGHTS``
what the grant's role may write. Schema checks (``gateway/core/schema.py``) apply to every role.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    COUPLE = "couple"
    PLANNER = "planner"
    VENDOR = "vendor"
    VIEWER = "viewer"
    SERVICE = "service"


class Timeline(enum.Enum):
    """What a role may do to the timeline."""

    NONE = "read"
    OWN = "add entries for itself; edit or delete only entries whose vendor_id is its own"
    ALL = "read, write"


class Awareness(enum.Enum):
    NONE = "none"  # neither publishes nor receives presence
    RECEIVE = "receive only"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class Rights:
    core: bool
    """May write the core fields."""
    timeline: Timeline
    awareness: Awareness

    @property
    def writes(self) -> bool:
        return self.core or self.timeline is not Timeline.NONE


RIGHTS: dict[Role, Rights] = {
    Role.COUPLE: Rights(core=True, timeline=Timeline.ALL, awareness=Awareness.PUBLISH),
    Role.PLANNER: Rights(core=True, timeline=Timeline.ALL, awareness=Awareness.PUBLISH),
    Role.VENDOR: Rights(core=False, timeline=Timeline.OWN, awareness=Awareness.PUBLISH),
    Role.VIEWER: Rights(core=False, timeline=Timeline.NONE, awareness=Awareness.RECEIVE),
    Role.SERVICE: Rights(core=True, timeline=Timeline.ALL, awareness=Awareness.NONE),
}
"""The policy table of proto/spec.md §7; every check reads it, nothing else encodes a role."""


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote an update: the token's subject and the role it held in the wedding."""

    subject: str
    role: str
    via: str | None = None
    """How the gateway made the update on the subject's behalf (``restore``, ``undo``,
    ``patch``: gateway/history_write.py); None for the subject's own client."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one connection may do in one wedding, from its token (or development mode)."""

    subject: str
    role: Role
    vendor_id: str | None = None
    """The vendor this subject acts for (role vendor): the timeline entries it may edit."""
    token_id: str | None = None
    """The token's ``jti``: what a revocation names."""
    expires_at: float | None = None
    """The token's ``exp`` (Unix seconds); None in development mode."""
    via: str | None = None
    """Set on the gateway's own writes for the subject (``Author.via``)."""

    @property
    def rights(self) -> Rights:
        return RIGHTS[self.role]

    @property
    def author(self) -> Author:
        return Author(self.subject, self.role.value, self.via)


DEVELOPMENT_GRANT = Grant(subject="dev", role=Role.PLANNER)
"""Every connection's grant when no keys are configured (development mode, logged loudly)."""
