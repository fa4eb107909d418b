"""Bounded encoding and decoding of protocol messages (proto/spec.md §2).

Client bytes are decoded here, never by pycrdt's ``handle_sync_message``, which trusts length
prefixes and ignores trailing bytes (DESIGN.md §7). Every read checks that the bytes it needs are
present; every message must be consumed exactly.
"""

from __future__ import annotations

from typing import assert_never

from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import (
    ALL_FEATURES,
    Ack,
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    CatchUp,
    Drain,
    Feature,
    Hello,
    Message,
    MessageType,
    Position,
    QueryAwareness,
    Reject,
    Resume,
    Status,
    SyncStep1,
    SyncStep2,
    SyncType,
    SyncUpdate,
)

MAX_VARUINT_BYTES = 10
MAX_SAFE_INTEGER = 2**53 - 1
"""Yjs numbers are JavaScript numbers: nothing above 2^53 - 1 is representable."""


class Reader:
    """Reads lib0 encodings from ``data``; every read is bounded by what remains."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def read_varuint(self) -> int:
        """Read a lib0 varUint: at most 10 bytes, at most 2^53 - 1."""
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # fast path: one byte
            self.pos = pos + 1
            return data[pos]
        result = shift = 0
        end = min(len(data), pos + MAX_VARUINT_BYTES)
        while pos < end:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                if result > MAX_SAFE_INTEGER:
                    raise ProtocolError(f"varUint {result} is above 2^53 - 1")
                self.pos = pos
                return result
            shift += 7
        if end == len(data):
            raise ProtocolError("message ends inside a varUint")
        raise ProtocolError(f"varUint longer than {MAX_VARUINT_BYTES} bytes")

    def read_bytes(self, n: int) -> bytes:
        if n > self.remaining:
            raise ProtocolError(f"length prefix {n} exceeds the {self.remaining} bytes left")
        start = self.pos
        self.pos = start + n
        return self.data[start : self.pos]

    def read_var_bytes(self) -> bytes:
        """Read a varUint length, then that many bytes."""
        return self.read_bytes(self.read_varuint())

    def read_var_string(self) -> str:
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string is not valid UTF-8 at byte {exc.start}") from None

    def expect_end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.remaining} trailing bytes after {what}")


def write_varuint(n: int) -> bytes:
    """Encode a lib0 varUint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_varuint(len(data)) + data


def write_var_string(text: str) -> bytes:
    return write_var_bytes(text.encode("utf-8"))


def decode(data: bytes) -> Message:
    """Decode one WebSocket message; raise ProtocolError unless it is exactly one valid message."""
    reader = Reader(data)
    kind = reader.read_varuint()
    message: Message
    if kind == MessageType.SYNC:
        message = _decode_sync(reader)
    elif kind == MessageType.AWARENESS:
        message = AwarenessUpdate(reader.read_var_bytes())
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MessageType.AUTH:
        message = Auth(reader.read_varuint(), reader.read_var_string())
    elif kind == MessageType.HELLO:
        message = Hello(reader.read_varuint(), Feature(reader.read_varuint() & ALL_FEATURES))
    elif kind == MessageType.RESUME:
        epoch, offset, state_vector = (
            reader.read_varuint(),
            reader.read_varuint(),
            reader.read_var_bytes(),
        )
        check_state_vector(state_vector)
        message = Resume(epoch, offset, state_vector)
    elif kind in SERVER_ONLY:
        raise ProtocolError(f"message type {kind} is sent by the server only")
    else:
        raise ProtocolError(f"unknown message type {kind}")
    reader.expect_end(type(message).__name__)
    return message


def decode_server_message(data: bytes) -> Message:
    """Decode one message sent by a server (used by clients and the load-test kit)."""
    reader = Reader(data)
    kind = reader.read_varuint()
    message: Message
    if kind == MessageType.ACK:
        message = Ack(reader.read_varuint())
    elif kind == MessageType.REJECT:
        message = Reject(reader.read_varuint(), reader.read_var_string(), reader.read_var_string())
    elif kind == MessageType.DRAIN:
        message = Drain(reader.read_varuint())
    elif kind == MessageType.STATUS:
        message = Status(reader.read_varuint())
    elif kind == MessageType.CATCH_UP:
        epoch, offset, flags = reader.read_varuint(), reader.read_varuint(), reader.read_varuint()
        message = CatchUp(epoch, offset, flags, reader.read_var_bytes())
    elif kind == MessageType.POSITION:
        message = Position(reader.read_varuint(), reader.read_varuint())
    else:
        return decode(data)
    reader.expect_end(type(message).__name__)
    return message


SERVER_ONLY = frozenset(
    {
        MessageType.ACK,
        MessageType.REJECT,
        MessageType.DRAIN,
        MessageType.STATUS,
        MessageType.CATCH_UP,
        MessageType.POSITION,
    }
)


def _decode_sync(reader: Reader) -> Message:
    sync_type = reader.read_varuint()
    payload = reader.read_var_bytes()
    if sync_type == SyncType.STEP1:
        check_state_vector(payload)
        return SyncStep1(payload)
    if sync_type == SyncType.STEP2:
        return SyncStep2(payload)
    if sync_type == SyncType.UPDATE:
        return SyncUpdate(payload)
    raise ProtocolError(f"unknown sync message type {sync_type}")


def check_state_vector(data: bytes) -> None:
    """Check that ``data`` is exactly one encoded state vector (count, then client/clock pairs)."""
    reader = Reader(data)
    count = reader.read_varuint()
    if count * 2 > reader.remaining:
        raise ProtocolError(f"state vector claims {count} clients in {reader.remaining} bytes")
    for _ in range(count):
        reader.read_varuint()
        reader.read_varuint()
    reader.expect_end("state vector")


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    """A Yjs state vector ({client: next clock}), as ``Doc.get_state`` encodes it."""
    parts = [write_varuint(len(clocks))]
    for client, clock in clocks.items():
        parts.append(write_varuint(client))
        parts.append(write_varuint(clock))
    return b"".join(parts)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """{client: next clock} from an encoded state vector; ProtocolError unless it is exactly
    one (check it first with ``check_state_vector`` when it comes from a peer)."""
    reader = Reader(data)
    return {reader.read_varuint(): reader.read_varuint() for _ in range(reader.read_varuint())}


def decode_awareness(payload: bytes, *, max_entries: int) -> list[AwarenessEntry]:
    """Decode the entries of an awareness update (y-protocols awareness encoding)."""
    reader = Reader(payload)
    count = reader.read_varuint()
    if count > max_entries:
        raise ProtocolError(f"awareness update has {count} entries; the limit is {max_entries}")
    if count * 3 > reader.remaining:
        raise ProtocolError(f"awareness update claims {count} entries in {reader.remaining} bytes")
    entries = [
        AwarenessEntry(reader.read_varuint(), reader.read_varuint(), reader.read_var_string())
        for _ in range(count)
    ]
    reader.expect_end("awareness update")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_varuint(len(entries))]
    for entry in entries:
        parts += (
            write_varuint(entry.client_id),
            write_varuint(entry.clock),
            write_var_string(entry.state),
        )
    return b"".join(parts)


_SYNC = write_varuint(MessageType.SYNC)
SYNC_UPDATE_PREFIX = _SYNC + write_varuint(SyncType.UPDATE)


def encode(message: Message) -> bytes:
    """Encode one message for the wire."""
    match message:
        case SyncStep1(state_vector):
            return _SYNC + bytes((SyncType.STEP1,)) + write_var_bytes(state_vector)
        case SyncStep2(update):
            return _SYNC + bytes((SyncType.STEP2,)) + write_var_bytes(update)
        case SyncUpdate(update):
            return SYNC_UPDATE_PREFIX + write_var_bytes(update)
        case AwarenessUpdate(payload):
            return bytes((MessageType.AWARENESS,)) + write_var_bytes(payload)
        case Auth(auth_type, text):
            return bytes((MessageType.AUTH,)) + write_varuint(auth_type) + write_var_string(text)
        case QueryAwareness():
            return bytes((MessageType.QUERY_AWARENESS,))
        case Hello(version, features):
            return bytes((MessageType.HELLO,)) + write_varuint(version) + write_varuint(features)
        case Ack(seq):
            return bytes((MessageType.ACK,)) + write_varuint(seq)
        case Reject(seq, field, reason):
            return (
                bytes((MessageType.REJECT,))
                + write_varuint(seq)
                + write_var_string(field)
                + write_var_string(reason)
            )
        case Drain(retry_ms):
            return bytes((MessageType.DRAIN,)) + write_varuint(retry_ms)
        case Status(flags):
            return bytes((MessageType.STATUS,)) + write_varuint(flags)
        case Resume(epoch, offset, state_vector):
            return (
                bytes((MessageType.RESUME,))
                + write_varuint(epoch)
                + write_varuint(offset)
                + write_var_bytes(state_vector)
            )
        case CatchUp(epoch, offset, flags, update):
            return (
                bytes((MessageType.CATCH_UP,))
                + write_varuint(epoch)
                + write_varuint(offset)
                + write_varuint(flags)
                + write_var_bytes(update)
            )
        case Position(epoch, offset):
            return bytes((MessageType.POSITION,)) + write_varuint(epoch) + write_varuint(offset)
        case _:
            assert_never(message)
