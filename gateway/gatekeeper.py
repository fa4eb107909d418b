"""Who a connection is and what it may do, for as long as its token says (proto/spec.md §2.4).

The gatekeeper turns a token into the connection's ``Grant`` for its wedding, and watches each
grant while the connection is open: it closes the connection when the token expires or is
revoked (on any node: ``Revocations`` shares revocations), and a refreshed token replaces the
grant in place, so a role change reaches one connection without reconnecting the others.

It is also the one place a token is found in a request (``token_in``, gateway/tokens.py) and
verified (``claims``): the WebSocket, the HTTP reads and the admin endpoints all go through it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gateway import tokens
from gateway.auth import Claims, TokenVerifier
from gateway.core.policy import DEVELOPMENT_GRANT, Grant
from gateway.errors import Forbidden, GatewayError, Unauthorized
from gateway.ports import Revocations
from gateway.types import RoomId

log = structlog.get_logger(__name__)

CloseConnection = Callable[[GatewayError], None]


class Watch:
    """One open connection's grant: its expiry timer and its place in the revocation index."""

    __slots__ = ("_gatekeeper", "_timer", "close", "grant")

    def __init__(self, gatekeeper: Gatekeeper, grant: Grant, close: CloseConnection) -> None:
        self._gatekeeper = gatekeeper
        self.close = close
        self.grant = grant
        self._timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gatekeeper.forget(self)


class Gatekeeper:
    """Checks tokens against the verifier (None: development mode) and the revocation list."""

    def __init__(self, verifier: TokenVerifier | None, revocations: Revocations) -> None:
        self.verifier = verifier
        self.revocations = revocations
        self._watches: defaultdict[str, set[Watch]] = defaultdict(set)
        revocations.on_revoked(self._revoked)

    @property
    def development(self) -> bool:
        return self.verifier is None

    @staticmethod
    def token_in(scope: Mapping[str, Any], *, query: bool = True) -> str | None:
        """The token of an ASGI request (HTTP or WebSocket): ``Authorization: Bearer``, else
        ``?token=``; None when it has none. Raises ProtocolError when ``token`` is repeated.

        ``query=False`` reads the header only (admin tokens never travel in a URL).
        Pass the result to ``grant`` or ``claims``.
        """
        authorization = tokens.authorization_header(scope)
        if not query:
            return tokens.bearer(authorization)
        return tokens.token_in(scope.get("query_string", b""), authorization)

    def grant(self, token: str | None, room: RoomId) -> Grant:
        """The grant ``token`` gives in ``room``; raises Unauthorized or Forbidden.

        In development mode (no keys configured) every connection is DEVELOPMENT_GRANT and a
        token, which cannot be checked, is ignored.
        """
        if self.verifier is None:
            return DEVELOPMENT_GRANT
        if token is None:
            raise tokens.NoToken("no token: pass ?token= or send an auth message first")
        return self.claims(token).grant_for(room)

    def claims(self, token: str) -> Claims:
        """The verified claims of ``token``, which is not revoked; raises Unauthorized.

        In development mode there is nothing to verify with: Forbidden (the caller decides
        whether development mode may do what it asks without a token).
        """
        if self.verifier is None:
            raise Forbidden("no keys configured: development mode cannot verify a token")
        claims = self.verifier.verify(token)
        if self.revocations.is_revoked(claims.token_id):
            raise Unauthorized("token revoked")
        return claims

    def watch(self, grant: Grant, close: CloseConnection, previous: Watch | None = None) -> Watch:
        """Close the connection when ``grant`` expires or its token is revoked; replaces
        ``previous`` (a refreshed token)."""
        if previous is not None:
            previous.cancel()
        watch = Watch(self, grant, close)
        if grant.expires_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, grant.expires_at - time.time())
            watch._timer = loop.call_later(delay, close, Unauthorized("token expired"))
        if grant.token_id is not None:
            self._watches[grant.token_id].add(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        token_id = watch.grant.token_id
        if token_id is None:
            return
        watches = self._watches.get(token_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[token_id]

    def _revoked(self, token_id: str) -> None:
        watches = self._watches.pop(token_id, set())
        for watch in watches:
            watch.close(Unauthorized("token revoked"))
        if watches:
            log.info("token_revoked", token_id=token_id, connections=len(watches))
