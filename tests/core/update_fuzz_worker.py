"""Child process of the update fuzz test: guard, then apply, one input at a time.

Reads frames from stdin: u32 base length, base update, u32 input length, input. For each, builds
a fresh Doc and DocIndex from the base, checks the input against them as a room would and, if
the guard accepts it, applies it and reads the Doc back. Writes one line per input:

    ready (once, at start) | rejected | applied | error <exception type>: <message>

A crash (SIGSEGV, abort) ends the process; the parent sees EOF and keeps the input. With
``--no-guard`` the input goes straight to pycrdt: used to show that corpus entries crash it.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, BinaryIO

from pycrdt import Array, Doc, Map

from gateway.core.update_check import DocIndex, check_update
from gateway.errors import InvalidUpdate
from wedsync_protocol.codec import Reader


def state_of(doc: Doc[Any]) -> dict[int, int]:
    """The Doc's state vector as {client: next clock}."""
    reader = Reader(doc.get_state())
    return {reader.read_varuint(): reader.read_varuint() for _ in range(reader.read_varuint())}


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack(">I", header)
    return stream.read(size)


def run_one(base: bytes, update: bytes, *, guard: bool) -> str:
    doc: Doc[Any] = Doc()
    if base:
        doc.apply_update(base)
    if guard:
        try:
            index = DocIndex.from_history([base] if base else [])
            check_update(update, state_of(doc), index=index)
        except InvalidUpdate:
            return "rejected"
        except Exception as exc:  # the guard itself must only ever raise InvalidUpdate
            return f"error in guard {type(exc).__name__}: {str(exc)[:200]}".replace("\n", " ")
    try:
        doc.apply_update(update)
        # Read everything back: a half-applied Doc shows itself here (DESIGN.md §7).
        doc.get_update()
        str(doc.get("core", type=Map))
        str(doc.get("timeline", type=Array))
    except BaseException as exc:  # PanicException is a BaseException
        return f"error {type(exc).__name__}: {str(exc)[:200]}".replace("\n", " ")
    return "applied"


def main() -> None:
    guard = "--no-guard" not in sys.argv
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    while True:
        base = read_frame(stdin)
        update = read_frame(stdin)
        if base is None or update is None:
            return
        stdout.write(run_one(base, update, guard=guard) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
