"""Where a request's token is: one rule for the WebSocket and HTTP alike (proto/spec.md §2.4).

``Authorization: Bearer <token>`` first, else the ``token`` query parameter. A ``token``
parameter given more than once is refused with ProtocolError (WebSocket close 4500, HTTP 400)
whether or not a header is present: two tokens in one URL make the request ambiguous, and a
proxy, a log and the gateway could each pick another one. An empty value counts as no token.

The gatekeeper (``Gatekeeper.token_in``) is the caller; nothing here verifies a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from gateway.errors import ProtocolError, Unauthorized

__all__ = ["NoToken", "authorization_header", "bearer", "query_token", "token_in"]


class NoToken(Unauthorized):
    """No token was presented at all (close 4401 like every Unauthorized).

    HTTP answers it with a bare ``WWW-Authenticate: Bearer`` challenge: a request that carried
    no credentials gets no error code (RFC 6750 §3.1).
    """


def token_in(query_string: bytes, authorization: str | None) -> str | None:
    """The request's token, or None when it carries none; raises ProtocolError on a duplicate.

    The query string is checked first, so a duplicated parameter is refused even when the
    header would win.
    """
    from_query = query_token(query_string)
    return bearer(authorization) or from_query


def bearer(authorization: str | None) -> str | None:
    """The credentials of ``Authorization: Bearer <token>`` (scheme case-insensitive), else None."""
    scheme, _, credentials = (authorization or "").partition(" ")
    token = credentials.strip()
    return token if scheme.lower() == "bearer" and token else None


def query_token(query_string: bytes) -> str | None:
    """The one ``token`` parameter of a raw query string; raises ProtocolError if repeated."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    tokens = [value for name, value in pairs if name == "token"]
    if len(tokens) > 1:
        raise ProtocolError("token is given more than once")
    return tokens[0] if tokens and tokens[0] else None


def authorization_header(scope: Mapping[str, Any]) -> str | None:
    """The ``Authorization`` header of an ASGI scope (HTTP or WebSocket); the first if several."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None
