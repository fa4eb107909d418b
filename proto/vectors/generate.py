"""Write proto/vectors/messages.json: binary test vectors for proto/spec.md §2-§5.

Run by hand after changing the spec: ``.venv/bin/python proto/vectors/generate.py``.

The bytes are assembled here from the spec, with a lib0 writer of our own, and never by
``wedsync_protocol.codec``: the vectors check the codec, so they must not be its output. Document
updates are hand-encoded Yjs v1 updates (proto/schema.md roots), then applied to a pycrdt Doc
to prove they are real updates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("messages.json")
MAX_SAFE_INTEGER = 2**53 - 1

# Message types and sync sub-types (proto/spec.md §2, §4).
SYNC, AWARENESS, AUTH, QUERY_AWARENESS = 0, 1, 2, 3
HELLO, ACK, REJECT, DRAIN, RESUME, CATCH_UP, POSITION = 100, 101, 102, 103, 104, 105, 106
STATUS = 107
STEP1, STEP2, UPDATE = 0, 1, 2
GZIPPED_EMPTY = bytes.fromhex("1f8b080000000000040363600000ff12d94102000000")
"""gzip (level 1, mtime 0) of the empty update 00 00, fixed bytes: the codec never decompresses."""


# -- lib0 writer -------------------------------------------------------------------------------


def var_uint(n: int) -> bytes:
    """lib0 varUint: 7 bits per byte, least significant group first, high bit = 'more'."""
    if n < 0:
        raise ValueError(n)
    out = bytearray()
    while True:
        group = n & 0x7F
        n >>= 7
        if n:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def var_bytes(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    return var_bytes(text.encode("utf-8"))


# -- Yjs v1 updates (only the shapes the vectors need) -----------------------------------------

ANY_STRING = 119  # lib0 "any" encoding tag for a string
CONTENT_ANY = 8  # Yjs content ref
PARENT_SUB = 0x20  # Yjs item info bit: the item is a map entry (a key follows the parent)


def map_set_update(client: int, root: str, key: str, value: str) -> bytes:
    """One item setting ``root[key] = value`` (a Y.Map root), no deletions."""
    item = (
        bytes((PARENT_SUB | CONTENT_ANY,))
        + var_uint(1)  # parent is a root type, named by the next string
        + var_string(root)
        + var_string(key)
        + var_uint(1)  # one value in ContentAny
        + bytes((ANY_STRING,))
        + var_string(value)
    )
    structs = var_uint(1) + var_uint(1) + var_uint(client) + var_uint(0) + item
    return structs + var_uint(0)  # empty delete set


EMPTY_UPDATE = var_uint(0) + var_uint(0)  # no structs, empty delete set

VENUE_UPDATE = map_set_update(42, "core", "venue", "Hall")
NOTES_UPDATE = map_set_update(1_234_567_890, "core", "notes", "Cake at four, " * 12)


def state_vector(pairs: list[tuple[int, int]]) -> bytes:
    return var_uint(len(pairs)) + b"".join(var_uint(c) + var_uint(k) for c, k in pairs)


def awareness_payload(entries: list[tuple[int, int, str]]) -> bytes:
    body = b"".join(var_uint(c) + var_uint(k) + var_string(s) for c, k, s in entries)
    return var_uint(len(entries)) + body


# -- messages ----------------------------------------------------------------------------------


def sync(sub_type: int, payload: bytes) -> bytes:
    return var_uint(SYNC) + var_uint(sub_type) + var_bytes(payload)


def valid(name: str, sender: str, data: bytes, decoded: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "sender": sender, "hex": data.hex(), "decoded": decoded}


def invalid(name: str, sender: str, data: bytes, error: str) -> dict[str, Any]:
    return {"name": name, "sender": sender, "hex": data.hex(), "error": error}


def valid_vectors() -> list[dict[str, Any]]:
    sv = state_vector([(1_234_567_890, 300), (7, 0)])
    two = [(1, 1, '{"user":{"name":"Ana","color":"#e91e63"}}'), (300, 2, "null")]
    return [
        valid(
            "sync step1, empty state vector",
            "any",
            sync(STEP1, state_vector([])),
            {"type": "SyncStep1", "state_vector": "00"},
        ),
        valid(
            "sync step1, two clients with multi-byte client id and clock",
            "any",
            sync(STEP1, sv),
            {"type": "SyncStep1", "state_vector": sv.hex()},
        ),
        valid(
            "sync step2, empty update",
            "any",
            sync(STEP2, EMPTY_UPDATE),
            {"type": "SyncStep2", "update": EMPTY_UPDATE.hex()},
        ),
        valid(
            "sync step2, one map entry",
            "any",
            sync(STEP2, VENUE_UPDATE),
            {"type": "SyncStep2", "update": VENUE_UPDATE.hex()},
        ),
        valid(
            "sync update, core.venue = 'Hall'",
            "any",
            sync(UPDATE, VENUE_UPDATE),
            {"type": "SyncUpdate", "update": VENUE_UPDATE.hex()},
        ),
        valid(
            "sync update, empty update",
            "any",
            sync(UPDATE, EMPTY_UPDATE),
            {"type": "SyncUpdate", "update": EMPTY_UPDATE.hex()},
        ),
        valid(
            "sync update, two-byte length prefix",
            "any",
            sync(UPDATE, NOTES_UPDATE),
            {"type": "SyncUpdate", "update": NOTES_UPDATE.hex()},
        ),
        valid(
            "awareness, two entries (one removal)",
            "any",
            var_uint(AWARENESS) + var_bytes(awareness_payload(two)),
            {
                "type": "AwarenessUpdate",
                "payload": awareness_payload(two).hex(),
                "entries": [{"client_id": c, "clock": k, "state": s} for c, k, s in two],
            },
        ),
        valid(
            "awareness, no entries",
            "any",
            var_uint(AWARENESS) + var_bytes(awareness_payload([])),
            {"type": "AwarenessUpdate", "payload": "00", "entries": []},
        ),
        valid(
            "auth, permission denied",
            "any",
            var_uint(AUTH) + var_uint(0) + var_string("permission denied"),
            {"type": "Auth", "auth_type": 0, "text": "permission denied"},
        ),
        valid(
            "auth, non-ASCII UTF-8 text",
            "any",
            var_uint(AUTH) + var_uint(1) + var_string("café ✓ 💍"),
            {"type": "Auth", "auth_type": 1, "text": "café ✓ 💍"},
        ),
        valid(
            "query awareness",
            "any",
            var_uint(QUERY_AWARENESS),
            {"type": "QueryAwareness"},
        ),
        valid(
            "hello, version 1, ACKS",
            "any",
            var_uint(HELLO) + var_uint(1) + var_uint(1),
            {"type": "Hello", "version": 1, "features": 1},
        ),
        valid(
            "hello, version 1, no features",
            "any",
            var_uint(HELLO) + var_uint(1) + var_uint(0),
            {"type": "Hello", "version": 1, "features": 0},
        ),
        valid("ack, seq 1", "server", var_uint(ACK) + var_uint(1), {"type": "Ack", "seq": 1}),
        valid(
            "ack, seq 300 (two-byte varUint)",
            "server",
            var_uint(ACK) + var_uint(300),
            {"type": "Ack", "seq": 300},
        ),
        valid(
            "ack, seq 2^53 - 1 (largest varUint)",
            "server",
            var_uint(ACK) + var_uint(MAX_SAFE_INTEGER),
            {"type": "Ack", "seq": MAX_SAFE_INTEGER},
        ),
        valid(
            "reject, seq 3 with a field and a reason",
            "server",
            var_uint(REJECT)
            + var_uint(3)
            + var_string("core.guest_count")
            + var_string("must be 0-5000, not 6000"),
            {
                "type": "Reject",
                "seq": 3,
                "field": "core.guest_count",
                "reason": "must be 0-5000, not 6000",
            },
        ),
        valid(
            "resume, epoch 2 offset 300 with a state vector",
            "client",
            var_uint(RESUME) + var_uint(2) + var_uint(300) + var_bytes(sv),
            {"type": "Resume", "epoch": 2, "offset": 300, "state_vector": sv.hex()},
        ),
        valid(
            "resume, first contact (epoch 0, offset 0, empty state vector)",
            "client",
            var_uint(RESUME) + var_uint(0) + var_uint(0) + var_bytes(var_uint(0)),
            {"type": "Resume", "epoch": 0, "offset": 0, "state_vector": "00"},
        ),
        valid(
            "catch-up, epoch 2 offset 301, empty update",
            "server",
            var_uint(CATCH_UP) + var_uint(2) + var_uint(301) + var_uint(0) + var_bytes(b"\x00\x00"),
            {"type": "CatchUp", "epoch": 2, "offset": 301, "flags": 0, "update": "0000"},
        ),
        valid(
            "catch-up with the reset flag",
            "server",
            var_uint(CATCH_UP) + var_uint(3) + var_uint(0) + var_uint(1) + var_bytes(b"\x00\x00"),
            {"type": "CatchUp", "epoch": 3, "offset": 0, "flags": 1, "update": "0000"},
        ),
        valid(
            "catch-up with the gzip flag (the update is a gzip member)",
            "server",
            var_uint(CATCH_UP) + var_uint(1) + var_uint(7) + var_uint(2) + var_bytes(GZIPPED_EMPTY),
            {"type": "CatchUp", "epoch": 1, "offset": 7, "flags": 2, "update": GZIPPED_EMPTY.hex()},
        ),
        valid(
            "position, epoch 1 offset 128",
            "server",
            var_uint(POSITION) + var_uint(1) + var_uint(128),
            {"type": "Position", "epoch": 1, "offset": 128},
        ),
        valid(
            "drain, retry now",
            "server",
            var_uint(DRAIN) + var_uint(0),
            {"type": "Drain", "retry_ms": 0},
        ),
        valid(
            "drain, retry after 1500 ms",
            "server",
            var_uint(DRAIN) + var_uint(1500),
            {"type": "Drain", "retry_ms": 1500},
        ),
        valid(
            "status, acks paused",
            "server",
            var_uint(STATUS) + var_uint(1),
            {"type": "Status", "flags": 1},
        ),
        valid(
            "status, all well",
            "server",
            var_uint(STATUS) + var_uint(0),
            {"type": "Status", "flags": 0},
        ),
    ]


def invalid_vectors() -> list[dict[str, Any]]:
    too_long = bytes([0x80] * 10) + b"\x00"  # 11 bytes, value 0
    return [
        invalid("empty message", "any", b"", "truncated"),
        invalid("message type varUint cut short", "any", b"\xff", "truncated"),
        invalid("sync length prefix cut short", "any", b"\x00\x02\x85", "truncated"),
        invalid("hello without its feature flags", "any", var_uint(HELLO) + b"\x01", "truncated"),
        invalid("message type as an 11-byte varUint", "any", too_long, "varuint_too_long"),
        invalid(
            "auth type of 2^53",
            "any",
            var_uint(AUTH) + var_uint(2**53) + var_string(""),
            "varuint_too_large",
        ),
        invalid(
            "ack seq of 2^64 - 1 in 10 bytes",
            "server",
            var_uint(ACK) + bytes([0xFF] * 9) + b"\x01",
            "varuint_too_large",
        ),
        invalid(
            "sync update length prefix longer than the message",
            "any",
            b"\x00\x02\x05" + EMPTY_UPDATE,
            "length_exceeds_message",
        ),
        invalid(
            "awareness length prefix longer than the message",
            "any",
            b"\x01\x0a\x00",
            "length_exceeds_message",
        ),
        invalid(
            "auth string length longer than the message",
            "any",
            b"\x02\x00\x04ab",
            "length_exceeds_message",
        ),
        invalid(
            "sync update followed by a trailing byte",
            "any",
            sync(UPDATE, EMPTY_UPDATE) + b"\x00",
            "trailing_bytes",
        ),
        invalid(
            "query awareness followed by a trailing byte",
            "any",
            var_uint(QUERY_AWARENESS) + b"\x00",
            "trailing_bytes",
        ),
        invalid(
            "hello followed by a trailing byte",
            "any",
            var_uint(HELLO) + b"\x01\x01\x00",
            "trailing_bytes",
        ),
        invalid("ack followed by a trailing byte", "server", b"\x65\x01\x00", "trailing_bytes"),
        invalid("message type 4", "any", var_uint(4), "unknown_type"),
        invalid("message type 127 (reserved)", "any", var_uint(127), "unknown_type"),
        invalid("message type 200 (two-byte varUint)", "any", var_uint(200), "unknown_type"),
        invalid("sync sub-type 3", "any", sync(3, b""), "unknown_sync_type"),
        invalid("ack sent by a client", "client", var_uint(ACK) + var_uint(1), "server_only"),
        invalid(
            "reject sent by a client",
            "client",
            var_uint(REJECT) + var_uint(1) + var_string("core") + var_string("no"),
            "server_only",
        ),
        invalid("drain sent by a client", "client", var_uint(DRAIN) + var_uint(0), "server_only"),
        invalid("status sent by a client", "client", var_uint(STATUS) + var_uint(0), "server_only"),
        invalid(
            "position sent by a client",
            "client",
            var_uint(POSITION) + var_uint(1) + var_uint(1),
            "server_only",
        ),
        invalid(
            "resume whose state vector claims more clients than it has bytes",
            "client",
            var_uint(RESUME) + var_uint(1) + var_uint(1) + var_bytes(var_uint(5) + b"\x01"),
            "invalid_state_vector",
        ),
        invalid(
            "auth text is not UTF-8",
            "any",
            var_uint(AUTH) + var_uint(0) + var_bytes(b"\xc3\x28"),
            "invalid_utf8",
        ),
        invalid(
            "reject reason is not UTF-8",
            "server",
            var_uint(REJECT) + var_uint(1) + var_string("core") + var_bytes(b"ok\xff"),
            "invalid_utf8",
        ),
        invalid(
            "step1 state vector claims more clients than it holds",
            "any",
            sync(STEP1, var_uint(2) + var_uint(1) + var_uint(1)),
            "invalid_state_vector",
        ),
        invalid(
            "step1 state vector with a trailing byte",
            "any",
            sync(STEP1, state_vector([(1, 1)]) + b"\x00"),
            "invalid_state_vector",
        ),
        invalid(
            "step1 state vector cut inside a clock",
            "any",
            sync(STEP1, var_uint(1) + var_uint(5) + b"\x80"),
            "invalid_state_vector",
        ),
    ]


def check_updates() -> None:
    """Apply every hand-encoded update to a pycrdt Doc (pycrdt is a dev dependency)."""
    from pycrdt import Doc, Map

    for update, key in ((VENUE_UPDATE, "venue"), (NOTES_UPDATE, "notes")):
        doc: Doc[Any] = Doc()
        doc.apply_update(update)
        if key not in doc.get("core", type=Map).to_py():
            raise SystemExit(f"hand-encoded update for core.{key} did not apply")


def main() -> int:
    check_updates()
    vectors = valid_vectors() + invalid_vectors()
    names = [v["name"] for v in vectors]
    if len(set(names)) != len(names):
        raise SystemExit("vector names must be unique")
    OUT.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
