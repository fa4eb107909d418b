"""The framing of ``/mux`` (proto/spec.md §10): the message format of ``@hocuspocus/provider`` 4.x.

Every WebSocket message of ``/mux`` but the keepalive is ``varString document, varUint type,
body``. Types 0-3 carry the same bodies as on ``/ws`` (sync, awareness, auth, query-awareness),
so their bodies are decoded by ``codec``'s bounded reader; 5 is a stateless string, 7 closes one
document, 8 is the sync status the server answers a document update with. The keepalive is one
byte with no document: 9 (ping, server → client) or 10 (pong, client → server).

The WedSync extensions (§4: HELLO, ACK, REJECT, RESUME, …) travel inside stateless messages whose
payload is ``EXTENSION_PREFIX`` followed by the base64 of the extension message's §4 bytes
(``wrap_extension`` / ``unwrap_extension``): a stock provider never sends one and is sent one only
after it said HELLO.

Decoding is as strict as ``codec.decode``: every length is bounded by the bytes present and
every message is consumed exactly (the provider's auth message may carry one trailing varString,
its version, which is read and kept).
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

from wedsync_protocol import codec
from wedsync_protocol.codec import Reader, write_var_string
from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import Message, MessageType


class MuxType(enum.IntEnum):
    """The varUint after the document name (the provider's ``MessageType``)."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    STATELESS = 5
    BROADCAST_STATELESS = 6  # a Hocuspocus server-internal type: refused from clients
    CLOSE = 7
    SYNC_STATUS = 8
    PING = 9
    PONG = 10


class MuxAuthType(enum.IntEnum):
    """The varUint of an auth body on ``/mux`` (Hocuspocus ``AuthMessageType``).

    Not the values of ``/ws`` (y-protocols: 0 is permission-denied there)."""

    TOKEN = 0
    PERMISSION_DENIED = 1
    AUTHENTICATED = 2


SCOPE_READ_WRITE = "read-write"
SCOPE_READONLY = "readonly"
EXTENSION_PREFIX = "wedsync:"
"""A stateless payload starting with this carries a WedSync extension message (base64)."""
PING = bytes((MuxType.PING,))
PONG = bytes((MuxType.PONG,))


@dataclass(frozen=True, slots=True)
class MuxToken:
    """Client → server: the token of one document (and the provider's version, if it sent one)."""

    token: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class Stateless:
    """A stateless string (an application payload, or a wrapped extension message)."""

    payload: str


@dataclass(frozen=True, slots=True)
class CloseDocument:
    """Client → server: the provider detached from the document; server → client: the server
    closed the document (``reason`` says why)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Pong:
    """Client → server: the answer to a ping (one byte, no document)."""


MuxMessage = Message | MuxToken | Stateless | CloseDocument
"""What a client may send for one document: the ``/ws`` messages of types 0, 1 and 3, a token,
a stateless string, or a close."""


@dataclass(frozen=True, slots=True)
class MuxFrame:
    """One decoded client message of ``/mux``: its document name and its message."""

    document: str
    message: MuxMessage


def decode_client(data: bytes) -> MuxFrame | Pong:
    """Decode one client WebSocket message of ``/mux``; ProtocolError unless it is exactly one.

    The document name is returned as sent (any UTF-8): the caller checks it is a wedding id.
    """
    if data == PONG:
        return Pong()
    reader = Reader(data)
    document = reader.read_var_string()
    start = reader.pos
    kind = reader.read_varuint()
    message: MuxMessage
    if kind in (MuxType.SYNC, MuxType.AWARENESS, MuxType.QUERY_AWARENESS):
        # the body is a /ws message: decode it with the same bounded reader, exactly
        message = codec.decode(data[start:])
        reader.pos = len(data)
    elif kind == MuxType.AUTH:
        auth_type = reader.read_varuint()
        if auth_type != MuxAuthType.TOKEN:
            raise ProtocolError(f"auth type {auth_type} is sent by the server only")
        token = reader.read_var_string()
        version = reader.read_var_string() if reader.remaining else ""
        message = MuxToken(token, version)
    elif kind == MuxType.STATELESS:
        message = Stateless(reader.read_var_string())
    elif kind == MuxType.CLOSE:
        message = CloseDocument(reader.read_var_string() if reader.remaining else "")
    elif kind == MuxType.BROADCAST_STATELESS:
        raise ProtocolError("broadcast-stateless (6) is not sent by clients")
    elif kind in (MuxType.SYNC_STATUS, MuxType.PING):
        raise ProtocolError(f"message type {kind} is sent by the server only")
    else:
        raise ProtocolError(f"unknown /mux message type {kind}")
    reader.expect_end(type(message).__name__)
    return MuxFrame(document, message)


def prefix(document: str) -> bytes:
    """The bytes every message of ``document`` starts with (prepend them to a ``/ws`` message of
    types 0-3 to get its ``/mux`` form)."""
    return write_var_string(document)


def encode_token(document: str, token: str, version: str = "") -> bytes:
    """Client → server: the document's token (as the provider sends it, version included)."""
    tail = write_var_string(version) if version else b""
    return (
        prefix(document)
        + bytes((MuxType.AUTH, MuxAuthType.TOKEN))
        + (write_var_string(token) + tail)
    )


def encode_authenticated(document: str, scope: str) -> bytes:
    """Server → client: the document is open, ``read-write`` or ``readonly``."""
    body = bytes((MuxType.AUTH, MuxAuthType.AUTHENTICATED)) + write_var_string(scope)
    return prefix(document) + body


def encode_permission_denied(document: str, reason: str) -> bytes:
    """Server → client: the document is refused or closed (the socket stays open)."""
    body = bytes((MuxType.AUTH, MuxAuthType.PERMISSION_DENIED)) + write_var_string(reason)
    return prefix(document) + body


def encode_close(document: str, reason: str = "") -> bytes:
    """A close of one document (client → server without reason; server → client with one)."""
    return (
        prefix(document) + bytes((MuxType.CLOSE,)) + (write_var_string(reason) if reason else b"")
    )


def encode_sync_status(document: str, applied: bool) -> bytes:
    """Server → client: one sync message of the document was handled (lib0 varInt 1 or 0)."""
    return prefix(document) + bytes((MuxType.SYNC_STATUS, 1 if applied else 0))


def encode_stateless(document: str, payload: str) -> bytes:
    return prefix(document) + bytes((MuxType.STATELESS,)) + write_var_string(payload)


def encode_message(document: str, message: Message) -> bytes:
    """A ``/ws`` message of types 0-3 for ``document`` (an extension is wrapped: §10.5)."""
    data = codec.encode(message)
    if data[0] >= MessageType.HELLO:
        return encode_stateless(document, wrap_extension(data))
    return prefix(document) + data


def wrap_extension(data: bytes) -> str:
    """The stateless payload carrying the extension message ``data`` (§4 bytes)."""
    return EXTENSION_PREFIX + base64.b64encode(data).decode("ascii")


def unwrap_extension(payload: str) -> bytes | None:
    """The §4 bytes a stateless payload carries; None when it is not an extension message.
    ProtocolError for a payload with the prefix that is not base64."""
    if not payload.startswith(EXTENSION_PREFIX):
        return None
    try:
        return base64.b64decode(payload[len(EXTENSION_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("a wedsync: stateless payload is not base64") from None


def decode_server(data: bytes) -> tuple[str, MuxType, object]:
    """Decode one server message of ``/mux`` (for clients and tests): (document, type, body).

    The body is: a ``codec`` message for types 0-3 (the auth body as ``(auth type, text)``),
    the payload string for stateless, the reason for close, the bool for sync status; a ping
    is ``("", PING, None)``."""
    if data == PING:
        return "", MuxType.PING, None
    reader = Reader(data)
    document = reader.read_var_string()
    start = reader.pos
    kind = MuxType(reader.read_varuint())
    body: object
    if kind == MuxType.AUTH:
        body = (reader.read_varuint(), reader.read_var_string())
    elif kind in (MuxType.SYNC, MuxType.AWARENESS, MuxType.QUERY_AWARENESS):
        body = codec.decode_server_message(data[start:])
        reader.pos = len(data)
    elif kind == MuxType.STATELESS:
        body = reader.read_var_string()
    elif kind == MuxType.CLOSE:
        body = reader.read_var_string() if reader.remaining else ""
    elif kind == MuxType.SYNC_STATUS:
        body = reader.read_varuint() == 1
    else:
        raise ProtocolError(f"message type {kind} is not sent by servers")
    reader.expect_end(kind.name)
    return document, kind, body


__all__ = [
    "EXTENSION_PREFIX",
    "PING",
    "PONG",
    "SCOPE_READONLY",
    "SCOPE_READ_WRITE",
    "CloseDocument",
    "MuxAuthType",
    "MuxFrame",
    "MuxMessage",
    "MuxToken",
    "MuxType",
    "Pong",
    "Stateless",
    "decode_client",
    "decode_server",
    "encode_authenticated",
    "encode_close",
    "encode_message",
    "encode_permission_denied",
    "encode_stateless",
    "encode_sync_status",
    "encode_token",
    "prefix",
    "unwrap_extension",
    "wrap_extension",
]
