"""Builds Yjs v1 updates byte by byte, for hand-made (often malicious) test inputs.

The layout follows the Yjs update encoding (v1): client sections of structs, then the delete set.
Nothing here validates: the point is to write bytes that real clients never would.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

ID = tuple[int, int]

GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
ARRAY, MAP, TEXT, XML_ELEMENT, XML_FRAGMENT, XML_HOOK, XML_TEXT = range(7)
HAS_ORIGIN, HAS_RIGHT_ORIGIN, HAS_PARENT_SUB = 0x80, 0x40, 0x20


def varuint(n: int) -> bytes:
    """lib0 varUint of any size (no 2^53 cap: tests need the huge ones)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint(n: int) -> bytes:
    """lib0 signed varInt: 6 bits and a sign in the first byte, then 7 bits per byte."""
    sign = 0x40 if n < 0 else 0
    n = abs(n)
    first = (n & 0x3F) | sign
    n >>= 6
    if not n:
        return bytes((first,))
    return bytes((first | 0x80,)) + varuint(n)


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return varuint(len(raw)) + raw


def any_value(value: object) -> bytes:
    """lib0 ``writeAny`` for Python values (ints as varInt, floats as float64)."""
    if value is None:
        return b"\x7e"
    if value is True:
        return b"\x78"
    if value is False:
        return b"\x79"
    if isinstance(value, int):
        return b"\x7d" + varint(value)
    if isinstance(value, float):
        return b"\x7b" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"\x77" + string(value)
    if isinstance(value, bytes):
        return b"\x74" + string(value)
    if isinstance(value, list):
        return b"\x75" + varuint(len(value)) + b"".join(any_value(v) for v in value)
    if isinstance(value, dict):
        parts = (string(k) + any_value(v) for k, v in value.items())
        return b"\x76" + varuint(len(value)) + b"".join(parts)
    raise TypeError(f"cannot encode {value!r}")


def nested_list(depth: int, leaf: object = 0) -> bytes:
    """Any-encoding of ``depth`` nested one-element arrays around ``leaf``."""
    return b"\x75\x01" * depth + any_value(leaf)


def item(
    ref: int,
    content: bytes,
    *,
    parent: str | ID | None = None,
    key: str | None = None,
    origin: ID | None = None,
    right_origin: ID | None = None,
    flags: int = 0,
) -> bytes:
    """One Item struct. ``parent`` is a root name or the ID of the parent type's item."""
    info = ref | flags
    info |= HAS_ORIGIN if origin else 0
    info |= HAS_RIGHT_ORIGIN if right_origin else 0
    info |= HAS_PARENT_SUB if key is not None else 0
    out = bytearray((info,))
    for ref_id in (origin, right_origin):
        if ref_id:
            out += varuint(ref_id[0]) + varuint(ref_id[1])
    if not origin and not right_origin:
        if isinstance(parent, str):
            out += b"\x01" + string(parent)
        elif parent is not None:
            out += b"\x00" + varuint(parent[0]) + varuint(parent[1])
        if key is not None:
            out += string(key)
    return bytes(out) + content


def any_content(*values: object) -> bytes:
    """ContentAny body: a count, then each value."""
    return varuint(len(values)) + b"".join(any_value(v) for v in values)


def map_set(root: str, key: str, value: object, **kwargs: object) -> bytes:
    """An item setting ``key`` of root map ``root`` to one Any value."""
    return item(ANY, any_content(value), parent=root, key=key, **kwargs)  # type: ignore[arg-type]


def type_content(type_ref: int, name: str | None = None) -> bytes:
    return varuint(type_ref) + (string(name) if name is not None else b"")


def gc(length: int) -> bytes:
    return bytes((GC,)) + varuint(length)


def skip(length: int) -> bytes:
    return bytes((SKIP,)) + varuint(length)


def section(client: int, clock: int, structs: Sequence[bytes]) -> bytes:
    return varuint(len(structs)) + varuint(client) + varuint(clock) + b"".join(structs)


def delete_set(ranges: Mapping[int, Iterable[tuple[int, int]]]) -> bytes:
    out = bytearray(varuint(len(ranges)))
    for client, pairs in ranges.items():
        pairs = list(pairs)
        out += varuint(client) + varuint(len(pairs))
        for clock, length in pairs:
            out += varuint(clock) + varuint(length)
    return bytes(out)


def update(
    sections: Sequence[bytes] = (), deletes: Mapping[int, Iterable[tuple[int, int]]] | None = None
) -> bytes:
    """A whole update: the client sections, then the delete set."""
    return varuint(len(sections)) + b"".join(sections) + delete_set(deletes or {})
