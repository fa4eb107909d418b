"""wedsync_protocol.codec against proto/vectors/messages.json, plus fuzzing (STYLE.md habit 1)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wedsync_protocol import codec
from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import (
    Ack,
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    CatchUp,
    Drain,
    Feature,
    Hello,
    Message,
    Position,
    QueryAwareness,
    Reject,
    Resume,
    Status,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

VECTORS_PATH = Path(__file__).resolve().parents[2] / "proto" / "vectors" / "messages.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VALID = [v for v in VECTORS if "decoded" in v]
INVALID = [v for v in VECTORS if "error" in v]

# What the codec must say for each error category: proves a vector fails for its stated reason.
ERROR_PATTERNS = {
    "truncated": r"ends inside a varUint",
    "varuint_too_long": r"varUint longer than 10 bytes",
    "varuint_too_large": r"above 2\^53 - 1",
    "length_exceeds_message": r"length prefix \d+ exceeds",
    "trailing_bytes": r"trailing bytes after",
    "unknown_type": r"unknown message type",
    "unknown_sync_type": r"unknown sync message type",
    "server_only": r"sent by the server only",
    "invalid_utf8": r"not valid UTF-8",
    "invalid_state_vector": r"state vector|ends inside a varUint",
}

FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def to_message(decoded: dict[str, Any]) -> Message:
    """Build the message a vector's ``decoded`` object describes (proto/vectors/README.md)."""
    fields = {k: v for k, v in decoded.items() if k != "type"}
    match decoded["type"]:
        case "SyncStep1":
            return SyncStep1(bytes.fromhex(fields["state_vector"]))
        case "SyncStep2":
            return SyncStep2(bytes.fromhex(fields["update"]))
        case "SyncUpdate":
            return SyncUpdate(bytes.fromhex(fields["update"]))
        case "AwarenessUpdate":
            return AwarenessUpdate(bytes.fromhex(fields["payload"]))
        case "Auth":
            return Auth(fields["auth_type"], fields["text"])
        case "QueryAwareness":
            return QueryAwareness()
        case "Hello":
            return Hello(fields["version"], Feature(fields["features"]))
        case "Ack":
            return Ack(fields["seq"])
        case "Reject":
            return Reject(fields["seq"], fields["field"], fields["reason"])
        case "Drain":
            return Drain(fields["retry_ms"])
        case "Status":
            return Status(fields["flags"])
        case "Resume":
            return Resume(fields["epoch"], fields["offset"], bytes.fromhex(fields["state_vector"]))
        case "CatchUp":
            update = bytes.fromhex(fields["update"])
            return CatchUp(fields["epoch"], fields["offset"], fields["flags"], update)
        case "Position":
            return Position(fields["epoch"], fields["offset"])
    raise AssertionError(f"unknown decoded type {decoded['type']!r}")


def decoders_for(sender: str) -> list[Any]:
    """The decoders that must agree with a vector sent by ``sender``."""
    return {
        "client": [codec.decode],
        "server": [codec.decode_server_message],
        "any": [codec.decode, codec.decode_server_message],
    }[sender]


def by_name(vectors: list[dict[str, Any]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("vector", vectors, ids=[v["name"] for v in vectors])


# -- the vectors file itself ---------------------------------------------------------------------


def test_vectors_cover_every_message_type_and_error_category() -> None:
    types = {v["decoded"]["type"] for v in VALID}
    assert types == {
        "SyncStep1",
        "SyncStep2",
        "SyncUpdate",
        "AwarenessUpdate",
        "Auth",
        "QueryAwareness",
        "Hello",
        "Ack",
        "Reject",
        "Drain",
        "Status",
        "Resume",
        "CatchUp",
        "Position",
    }
    assert {v["error"] for v in INVALID} == set(ERROR_PATTERNS)


def test_vector_names_are_unique_and_fields_are_well_formed() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    for vector in VECTORS:
        assert vector["sender"] in ("client", "server", "any"), vector["name"]
        assert re.fullmatch(r"(?:[0-9a-f]{2})*", vector["hex"]), vector["name"]
        assert ("decoded" in vector) != ("error" in vector), vector["name"]


# -- valid vectors -------------------------------------------------------------------------------


@by_name(VALID)
def test_valid_vector_decodes_to_its_decoded_value(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = to_message(vector["decoded"])
    for decode in decoders_for(vector["sender"]):
        assert decode(data) == expected


@by_name(VALID)
def test_valid_vector_re_encodes_to_the_same_bytes(vector: dict[str, Any]) -> None:
    assert codec.encode(to_message(vector["decoded"])).hex() == vector["hex"]


@by_name([v for v in VALID if v["sender"] == "server"])
def test_server_only_message_from_a_client_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match=ERROR_PATTERNS["server_only"]):
        codec.decode(bytes.fromhex(vector["hex"]))


@by_name([v for v in VALID if v["decoded"]["type"] == "AwarenessUpdate"])
def test_awareness_vector_payload_decodes_to_its_entries(vector: dict[str, Any]) -> None:
    decoded = vector["decoded"]
    expected = [AwarenessEntry(e["client_id"], e["clock"], e["state"]) for e in decoded["entries"]]
    payload = bytes.fromhex(decoded["payload"])
    assert codec.decode_awareness(payload, max_entries=64) == expected
    assert codec.encode_awareness(expected) == payload


# -- invalid vectors -----------------------------------------------------------------------------


@by_name(INVALID)
def test_invalid_vector_raises_protocol_error_for_its_stated_reason(
    vector: dict[str, Any],
) -> None:
    data = bytes.fromhex(vector["hex"])
    for decode in decoders_for(vector["sender"]):
        with pytest.raises(ProtocolError, match=ERROR_PATTERNS[vector["error"]]):
            decode(data)


def test_protocol_error_closes_with_4500() -> None:
    with pytest.raises(ProtocolError) as caught:
        codec.decode(b"\x04")
    assert caught.value.close_code == 4500
    assert caught.value.retryable is False


# -- varUint edges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2**32 - 1, "ffffffff0f"),
        (2**53 - 1, "ffffffffffffff0f"),
    ],
)
def test_varuint_encoding_matches_lib0(value: int, encoded: str) -> None:
    assert codec.write_varuint(value).hex() == encoded
    reader = codec.Reader(bytes.fromhex(encoded))
    assert reader.read_varuint() == value
    assert reader.remaining == 0


def test_varuint_with_ten_bytes_and_a_small_value_is_accepted() -> None:
    reader = codec.Reader(bytes([0x81] + [0x80] * 8 + [0x00]))
    assert reader.read_varuint() == 1


def test_state_vector_claiming_more_clients_than_bytes_is_refused_before_reading_them() -> None:
    with pytest.raises(ProtocolError, match="claims 1000000 clients"):
        codec.check_state_vector(codec.write_varuint(1_000_000) + b"\x01\x01")


def test_awareness_with_more_entries_than_the_limit_is_refused() -> None:
    entries = [AwarenessEntry(i, 1, "{}") for i in range(1, 5)]
    payload = codec.encode_awareness(entries)
    assert codec.decode_awareness(payload, max_entries=4) == entries
    with pytest.raises(ProtocolError, match="4 entries; the limit is 3"):
        codec.decode_awareness(payload, max_entries=3)


@pytest.mark.parametrize(
    "payload",
    [
        "02010102" + "7b7d",  # claims two entries, holds one
        "0101010a7b7d",  # state length prefix longer than the payload
        "010101027b7d00",  # trailing byte
        "01010102c328",  # state is not UTF-8
    ],
)
def test_malformed_awareness_payload_is_refused(payload: str) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_awareness(bytes.fromhex(payload), max_entries=64)


# -- fuzzing: ProtocolError or a message, never anything else ------------------------------------


def decode_or_refuse(data: bytes) -> None:
    """Every decoder must return a message or raise ProtocolError: nothing else escapes."""
    for decode in (codec.decode, codec.decode_server_message):
        try:
            message = decode(data)
        except ProtocolError:
            continue
        # Whatever decodes must survive a round trip (the bytes may differ: overlong varUints).
        assert decode(codec.encode(message)) == message
    for check in (codec.check_state_vector, lambda b: codec.decode_awareness(b, max_entries=64)):
        with contextlib.suppress(ProtocolError):
            check(data)


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    decode_or_refuse(data)


@st.composite
def mutated_vectors(draw: st.DrawFn) -> bytes:
    data = bytearray.fromhex(draw(st.sampled_from(VECTORS))["hex"])
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        at = draw(st.integers(0, len(data)))
        byte = draw(st.integers(0, 255))
        if action == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and at < len(data):
            data[at] = byte
        elif action == "insert":
            data.insert(at, byte)
        elif action == "delete" and at < len(data):
            del data[at]
        elif action == "truncate":
            del data[at:]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=12))
    return bytes(data)


@FUZZ
@given(mutated_vectors())
def test_mutated_vectors_decode_or_raise_protocol_error(data: bytes) -> None:
    decode_or_refuse(data)
