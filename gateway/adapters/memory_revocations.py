"""In-process Revocations: the embedded default (one node), and shared by Nodes in one process."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import structlog

log = structlog.get_logger(__name__)

DEFAULT_GRACE = 300.0
"""Seconds an entry outlives its token's ``exp``: covers the verifier's leeway (at most 300)."""


class RevocationBoard:
    """The shared medium of every MemoryRevocations in one process."""

    def __init__(self, *, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.revoked: dict[str, float] = {}  # token id → expires_at
        self.members: set[MemoryRevocations] = set()

    def prune(self, now: float) -> None:
        """Forget tokens that expired more than ``grace`` seconds ago: nothing accepts them."""
        cutoff = now - self.grace
        for token_id in [t for t, expires_at in self.revoked.items() if expires_at < cutoff]:
            del self.revoked[token_id]


class MemoryRevocations:
    """Revocations kept in this process. Enter it (``async with``) to hear revocations.

    Instances sharing one ``RevocationBoard`` behave like nodes sharing one Redis; without a
    board each instance has its own. Callbacks run once per token id, in the ``revoke`` call.
    """

    def __init__(
        self, board: RevocationBoard | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.board = board or RevocationBoard()
        self._clock = clock
        self._callbacks: list[Callable[[str], None]] = []

    async def __aenter__(self) -> Self:
        self.board.members.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.board.members.discard(self)

    def is_revoked(self, token_id: str) -> bool:
        expires_at = self.board.revoked.get(token_id)
        return expires_at is not None and expires_at >= self._clock() - self.board.grace

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Record the revocation and tell every member; a token long expired is ignored.

        Revoking a token id again only extends its entry (to the later ``expires_at``).
        """
        now = self._clock()
        self.board.prune(now)
        known = self.board.revoked.get(token_id)
        if known is not None:
            self.board.revoked[token_id] = max(known, expires_at)
            return
        if expires_at < now - self.board.grace:
            return
        self.board.revoked[token_id] = expires_at
        for member in list(self.board.members | {self}):
            member._notify(token_id)

    def on_revoked(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def _notify(self, token_id: str) -> None:
        for callback in self._callbacks:
            try:
                callback(token_id)
            except Exception:  # one consumer's bug must not hide the revocation from the rest
                log.exception("revocation_callback_failed", token_id=token_id)
