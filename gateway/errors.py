"""Errors of the gateway. Each one knows the WebSocket close code it maps to.

    GatewayError
    ├── ProtocolError        peer broke proto/spec.md    4500 terminal
    │   ├── MessageTooBig                                1009 terminal
    │   ├── InvalidUpdate    refused by the update guard  4500 terminal
    │   │   └── MissingReference  refers to unknown item  4004 reconnect
    │   └── RoomPoisoned     pycrdt failed applying it   4500 terminal (the room is reset)
    ├── RoomReset            room rebuilt from the store 4003 reconnect
    ├── Unauthorized         missing or expired token    4401 reconnect after refreshing the token
    ├── Forbidden            no access to the room       4503 terminal
    ├── SlowClient           outbound queue full         4001 reconnect
    ├── RateLimited          too many messages or bytes  4429 reconnect with backoff
    ├── ClientIdInUse        another connection owns it  4409 reconnect with backoff
    ├── HandshakeTimeout     no sync step 1 in time      4408 reconnect
    ├── BackendUnavailable   store or bus down           4002 reconnect
    ├── ShuttingDown         node is draining            1012 reconnect (to another node)
    ├── Overloaded           node behind; far wedding    1013 reconnect with backoff
    ├── ConfigError          bad GATEWAY_* setting       (start-up only)
    └── InvalidState(GatewayError, AssertionError)       our bug → 1011

Close codes 4000-4499 mean "reconnect with backoff", 4500-4999 mean "do not reconnect"
(proto/spec.md §6). Errors are raised where they are detected and mapped to close frames in one
place, ``gateway/connection.py``.
"""

from __future__ import annotations

from wedsync_protocol.errors import ProtocolError as WireProtocolError

__all__ = ["WireProtocolError"]  # re-exported: the protocol package's error, caught with ours


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""

    close_code: int = 1011
    retryable: bool = True


class ProtocolError(GatewayError, WireProtocolError):
    """The peer sent bytes that break proto/spec.md.

    Also a ``wedsync_protocol.ProtocolError``, which the protocol package's codec raises:
    ``except WireProtocolError`` catches both, ``as_gateway_error`` turns the latter into this.
    """

    close_code = 4500
    retryable = False


class InvalidUpdate(ProtocolError):
    """An update that breaks the Yjs v1 encoding, the room's clock rules or the room's schema.

    Raised by the update guard (gateway/core/update_reader.py, update_check.py), and defined
    here with MissingReference, outside the modules tools/compile_guard.py compiles: mypyc does
    not keep a class attribute's override on an exception subclass it compiles.
    """


class MissingReference(InvalidUpdate):
    """The update refers to an item this room does not have (yet).

    Retryable (close 4004): the node may lack a peer's update (a failed-over client resends
    edits that depend on it), so it repairs the room from the store, and a reconnecting client
    sends, in its sync step 2, everything the room lacks, dependencies first.
    """

    close_code = 4004
    retryable = True


class MessageTooBig(ProtocolError):
    """A frame was larger than the configured limit."""

    close_code = 1009


class RoomPoisoned(ProtocolError):
    """pycrdt failed while applying this update: the room's Doc can no longer be trusted."""

    def __init__(self, message: str, update: bytes) -> None:
        super().__init__(message)
        self.update = update


class RoomReset(GatewayError):
    """The room was dropped and is rebuilt from the store; reconnect to sync again."""

    close_code = 4003


class Unauthorized(GatewayError):
    """The token is missing, malformed, expired, revoked, or its signature does not verify.

    Retryable: the client gets a fresh token, then reconnects. ``str(exc)`` says why (``token
    expired``, ``wrong audience``, ...) and never repeats the token.
    """

    close_code = 4401


class Forbidden(GatewayError):
    """The token is valid but does not name this wedding (exact match of the id): terminal."""

    close_code = 4503
    retryable = False


class SlowClient(GatewayError):
    """The client's outbound queue overflowed: it does not read fast enough."""

    close_code = 4001


class RateLimited(GatewayError):
    """The client sent more messages or bytes per second than its limit allows."""

    close_code = 4429


class ClientIdInUse(GatewayError):
    """The update or awareness entry uses a client id another open connection writes with.

    Retryable: after a network switch the client's old connection may still be open on the
    server until its keepalive fails; the reconnect succeeds once it is gone.
    """

    close_code = 4409


class HandshakeTimeout(GatewayError):
    """The client did not complete the sync handshake (send its step 1) in time."""

    close_code = 4408


class LeaseLost(GatewayError):
    """The store refused an append: another node owns the room now (its lease was taken over)."""

    close_code = 4003


class BackendUnavailable(GatewayError):
    """The store or the bus cannot be reached."""

    close_code = 4002


class ShuttingDown(GatewayError):
    """This node is draining; the client should reconnect, reaching another node."""

    close_code = 1012


class Overloaded(GatewayError):
    """The node is behind (appends pending or event-loop lag over their thresholds) and the
    wedding is not within the priority window: try again later (gateway/overload.py).

    1013 is WebSocket's own "Try Again Later" (RFC 6455 §7.4.1's registry)."""

    close_code = 1013


class ConfigError(GatewayError, ValueError):
    """One or more GATEWAY_* settings are invalid; the message lists every bad key.

    ``problems`` holds each one on its own (``gateway check-config`` prints one per line)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class InvalidState(GatewayError, AssertionError):
    """The gateway broke one of its own invariants (a bug)."""

    close_code = 1011


def as_gateway_error(exc: WireProtocolError) -> ProtocolError:
    """The gateway's ProtocolError for an error of the protocol package's codec."""
    return exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc))
