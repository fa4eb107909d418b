"""The update guard: the only gate between client bytes and ``Doc.apply_update``.

``Guard`` keeps, beside a room's Doc, what the checks need: the room's ``DocIndex`` (where every
item lives), the highest clock seen per client, and which connection owns which client id. It
refuses anything that breaks ``gateway/core/update_check.py``'s rules (``InvalidUpdate``, close
4500) or writes with a client id another open connection owns (``ClientIdInUse``, close 4409).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.session import Session
from gateway.core.update_check import (
    DEFAULT_LIMITS,
    DocIndex,
    UpdateLimits,
    UpdateSummary,
    check_update,
    summarize_trusted,
)
from gateway.errors import ClientIdInUse, ProtocolError
from wedsync_protocol.codec import decode_state_vector

CLAIM_WINDOW_SECONDS = 3600.0


class Guard:
    """What the guard knows of one room. Call it from the room's task only."""

    __slots__ = ("clocks", "index", "limits", "max_new_client_ids", "owners")

    def __init__(
        self,
        history: Iterable[bytes],
        state_vector: bytes,
        *,
        limits: UpdateLimits = DEFAULT_LIMITS,
        max_new_client_ids: int = 32,
    ) -> None:
        self.limits = limits
        self.max_new_client_ids = max_new_client_ids
        self.index = DocIndex.from_history(history, limits)
        self.clocks = decode_state_vector(state_vector)
        self.owners: dict[int, Session] = {}
        """client id -> the open connection that writes with it (until it closes)."""

    def check_client_update(
        self, session: Session, update: bytes, now: float, *, catch_up: bool = False
    ) -> UpdateSummary:
        """Refuse ``update`` unless it is well formed, fits the room and uses ``session``'s own
        client ids; returns its summary, to ``record`` once applied.

        ``catch_up`` marks a sync step 2: it may carry other clients' edits the room lacks (a
        relay), so it claims no client id, but it may not bring new clocks of an id another
        open connection writes with.
        """
        if len(update) < 2:
            raise ProtocolError(f"update of {len(update)} bytes is shorter than an empty update")
        summary = check_update(update, self.clocks, self.limits, index=self.index)
        # Writing with a client id means adding clocks the room does not have yet; structs the
        # room already holds are relays or echoes (pycrdt's provider echoes every update).
        clocks = self.clocks
        written = [c for c, (_, end) in summary.clients.items() if end > clocks.get(c, 0)]
        if catch_up:
            self.check_unowned(session, written)
        else:
            self.claim(session, written, now)
        return summary

    def check_structure(self, update: bytes) -> None:
        """Refuse ``update`` unless it is well formed and near the clocks the room knows: the
        check of a node that relays updates to the room's owner, which runs every other rule.
        Claims nothing (the owner decides who writes with which client id)."""
        if len(update) < 2:
            raise ProtocolError(f"update of {len(update)} bytes is shorter than an empty update")
        check_update(update, self.clocks, self.limits)

    def check_unowned(self, session: Session, client_ids: Iterable[int]) -> None:
        """Refuse if another open connection writes with one of ``client_ids``."""
        for client_id in client_ids:
            owner = self.owners.get(client_id)
            if owner is not None and owner is not session:
                raise ClientIdInUse(f"client id {client_id} belongs to another connection")

    def claim(self, session: Session, client_ids: Iterable[int], now: float) -> None:
        """Make ``session`` the owner of ``client_ids``, or refuse if another connection owns one
        or ``session`` claimed too many new ids in the last hour."""
        client_ids = list(client_ids)
        self.check_unowned(session, client_ids)
        new = [c for c in client_ids if c not in self.owners]
        if not new:
            return
        since = now - CLAIM_WINDOW_SECONDS
        claims = session.client_id_claims = [t for t in session.client_id_claims if t > since]
        if len(claims) + len(new) > self.max_new_client_ids:
            raise ProtocolError(
                f"more than {self.max_new_client_ids} new client ids in an hour from one connection"
            )
        for client_id in new:
            self.owners[client_id] = session
            claims.append(now)
            session.owned_client_ids.add(client_id)

    def release(self, session: Session) -> None:
        """``session`` closed: its client ids may be claimed again (a reconnecting client)."""
        for client_id in session.owned_client_ids:
            if self.owners.get(client_id) is session:
                del self.owners[client_id]
        session.owned_client_ids.clear()

    def adds_structs(self, summary: UpdateSummary) -> bool:
        """Whether the update brings clocks the room has not seen (new, possibly pending)."""
        clocks = self.clocks
        return any(end > clocks.get(c, 0) for c, (_, end) in summary.clients.items())

    def deletes_in(self, summary: UpdateSummary, parent: str) -> bool:
        """Whether the update deletes an element of the root sequence ``parent`` (an item the
        room holds directly in it, e.g. a timeline entry; not a value inside one)."""
        place = (parent, None)
        covers = self.index.covers
        return any(
            covers(client, clock, length, place)
            for client, ranges in summary.deletes.items()
            for clock, length in ranges
        )

    def record(self, summary: UpdateSummary) -> None:
        """The update of ``summary`` was applied: remember its items and clocks."""
        self.index.record(summary)
        clocks = self.clocks
        for client, (_, end) in summary.clients.items():
            if end > clocks.get(client, 0):
                clocks[client] = end

    def summarize_trusted(self, update: bytes) -> UpdateSummary:
        """The summary of an update checked elsewhere (a peer node, the store)."""
        return summarize_trusted(update, self.index, self.limits)
