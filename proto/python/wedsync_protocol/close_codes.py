"""WebSocket close codes and what a client does after each (proto/spec.md §6)."""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """Every close code the gateway sends. Values are the wire values."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SHUTTING_DOWN = 1012
    SLOW_CLIENT = 4001
    BACKEND_UNAVAILABLE = 4002
    ROOM_RESET = 4003
    MISSING_REFERENCE = 4004
    UNAUTHORIZED = 4401
    HANDSHAKE_TIMEOUT = 4408
    CLIENT_ID_IN_USE = 4409
    RATE_LIMITED = 4429
    PROTOCOL_ERROR = 4500
    FORBIDDEN = 4503


RECONNECT_RANGE = range(4000, 4500)
"""Reconnect with backoff."""
TERMINAL_RANGE = range(4500, 5000)
"""Do not reconnect: the same connection would fail again."""


def reconnects(code: int) -> bool:
    """Whether a client should reconnect (with backoff) after the server closed with ``code``.

    4401 reconnects only once the client has a new token: the caller decides whether it has
    one (``needs_new_token``). A connection lost without a close frame (1006) reconnects.
    """
    return code not in TERMINAL_RANGE and code != CloseCode.MESSAGE_TOO_BIG


def needs_new_token(code: int) -> bool:
    """4401: the token is missing, invalid, expired or revoked; reconnecting with the same one
    fails again."""
    return code == CloseCode.UNAUTHORIZED
