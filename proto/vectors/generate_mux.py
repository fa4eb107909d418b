"""Write proto/vectors/mux.json: binary test vectors for the ``/mux`` framing (proto/spec.md §10).

Run by hand after changing §10: ``.venv/bin/python proto/vectors/generate_mux.py``.

As generate.py, the bytes are assembled here from the spec with a lib0 writer of our own, never
by ``wedsync_protocol.mux``, whose output they check. Each vector: ``name``, ``sender``
(``client`` / ``server``), ``hex``; a valid one has ``document``, ``type`` (the §10.1 name) and
its fields; an invalid client one has ``"error": true`` (4500). ``ws_hex``: the ``/ws`` message
(§2, §4) it carries, for SDKs that frame those (clients/ts/src/mux.ts).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("mux.json")


def var_uint(n: int) -> bytes:
    out = bytearray()
    while True:
        group, n = n & 0x7F, n >> 7
        out.append(group | 0x80 if n else group)
        if not n:
            return bytes(out)


def var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return var_uint(len(raw)) + raw


def doc(name: str) -> bytes:
    return var_string(name)


HELLO_ACKS_REJECTS = bytes((100, 1, 3))
STEP1_EMPTY = bytes((0, 0, 1, 0))
AWARENESS_EMPTY = bytes((1, 1, 0))


def vectors() -> list[dict[str, Any]]:
    wrapped = "wedsync:" + base64.b64encode(HELLO_ACKS_REJECTS).decode()
    return [
        {
            "name": "token with the provider's version",
            "sender": "client",
            "hex": (doc("wed-1") + bytes((2, 0)) + var_string("tok") + var_string("4.8.0")).hex(),
            "document": "wed-1",
            "type": "token",
            "token": "tok",
            "version": "4.8.0",
        },
        {
            "name": "token without version",
            "sender": "client",
            "hex": (doc("wed-1") + bytes((2, 0)) + var_string("tok")).hex(),
            "ws_hex": (bytes((2, 1)) + var_string("tok")).hex(),
            "document": "wed-1",
            "type": "token",
            "token": "tok",
            "version": "",
        },
        {
            "name": "sync step 1, empty state vector",
            "sender": "client",
            "hex": (doc("wed-1") + STEP1_EMPTY).hex(),
            "ws_hex": STEP1_EMPTY.hex(),
            "document": "wed-1",
            "type": "sync",
        },
        {
            "name": "awareness, no entries, a non-ASCII name",
            "sender": "client",
            "hex": (doc("wéd") + AWARENESS_EMPTY).hex(),
            "ws_hex": AWARENESS_EMPTY.hex(),
            "document": "wéd",
            "type": "awareness",
        },
        {
            "name": "HELLO(1, ACKS|REJECTS) wrapped in a stateless message",
            "sender": "client",
            "hex": (doc("wed-1") + bytes((5,)) + var_string(wrapped)).hex(),
            "ws_hex": HELLO_ACKS_REJECTS.hex(),
            "document": "wed-1",
            "type": "stateless",
            "payload": wrapped,
        },
        {
            "name": "close",
            "sender": "client",
            "hex": (doc("wed-1") + bytes((7,))).hex(),
            "document": "wed-1",
            "type": "close",
        },
        {"name": "pong", "sender": "client", "hex": "0a", "document": "", "type": "pong"},
        {
            "name": "authenticated, readonly",
            "sender": "server",
            "hex": (doc("wed-1") + bytes((2, 2)) + var_string("readonly")).hex(),
            "document": "wed-1",
            "type": "authenticated",
            "scope": "readonly",
        },
        {
            "name": "permission denied",
            "sender": "server",
            "hex": (doc("wed-2") + bytes((2, 1)) + var_string("no access")).hex(),
            "document": "wed-2",
            "type": "permission-denied",
            "reason": "no access",
        },
        {
            "name": "sync status, applied",
            "sender": "server",
            "hex": (doc("wed-1") + bytes((8, 1))).hex(),
            "document": "wed-1",
            "type": "sync-status",
            "applied": True,
        },
        {
            "name": "sync status, not applied",
            "sender": "server",
            "hex": (doc("wed-1") + bytes((8, 0))).hex(),
            "document": "wed-1",
            "type": "sync-status",
            "applied": False,
        },
        {"name": "ping", "sender": "server", "hex": "09", "document": "", "type": "ping"},
        {
            "name": "invalid: broadcast-stateless from a client",
            "sender": "client",
            "hex": (doc("w") + bytes((6,)) + var_string("x")).hex(),
            "error": True,
        },
        {
            "name": "invalid: an extension not wrapped",
            "sender": "client",
            "hex": (doc("w") + HELLO_ACKS_REJECTS).hex(),
            "error": True,
        },
        {
            "name": "invalid: trailing byte after a token and version",
            "sender": "client",
            "hex": (doc("w") + bytes((2, 0)) + var_string("t") + var_string("v") + b"\x00").hex(),
            "error": True,
        },
        {
            "name": "invalid: the name runs past the end",
            "sender": "client",
            "hex": "0577",
            "error": True,
        },
    ]


if __name__ == "__main__":
    OUT.write_text(json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
