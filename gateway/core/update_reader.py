"""Bounded reader of the Yjs update encoding (v1): the syntax half of the update guard.

``read_update`` walks every byte with the codec's bounded ``Reader`` and refuses, with
``InvalidUpdate``, anything a stock client would not write or that makes pycrdt (yrs 0.28)
allocate, recurse or overflow (DESIGN.md §7): counts larger than the bytes left, Any or JSON
nesting beyond the limit, clocks and lengths at or above 2^31, unknown content and type refs,
subdocuments, roots outside the schema, invalid UTF-8, trailing bytes. What the structs mean for
the room (clocks against its state, parents, origins) is ``update_check``'s half.

The layout (Yjs ``src/utils/encoding.js``, ``src/structs/*.js``, lib0 ``decoding.js``)::

    update    = n:varUint section{n} deleteSet
    section   = n:varUint client:varUint clock:varUint struct{n}
    struct    = info:u8 [origin:ID] [rightOrigin:ID] [parent [key:varString]] content
                  info: low 5 bits content ref, 0x80 origin, 0x40 right origin, 0x20 key;
                  parent (only without origins): 1 name:varString | 0 ID
    deleteSet = n:varUint (client:varUint m:varUint (clock:varUint len:varUint){m}){n}
"""

from __future__ import annotations

import json
import re
import struct as binary
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.errors import InvalidUpdate, WireProtocolError
from wedsync_protocol.codec import MAX_SAFE_INTEGER, Reader

CLOCK_LIMIT = 2**31
"""yrs computes clock offsets in i32: every clock (and clock + length) must stay below this."""

ID = tuple[int, int]
"""(client, clock) of one struct."""

Parent = str | ID
"""A root name, or the ID of the item whose shared type is the parent."""


class ContentRef(IntEnum):
    """Low 5 bits of a struct's info byte (Yjs ``contentRefs``)."""

    GC = 0
    DELETED = 1
    JSON = 2
    BINARY = 3
    STRING = 4
    EMBED = 5
    FORMAT = 6
    TYPE = 7
    ANY = 8
    DOC = 9
    SKIP = 10


class TypeRef(IntEnum):
    """Shared type of a Type content (Yjs ``typeRefs``)."""

    ARRAY = 0
    MAP = 1
    TEXT = 2
    XML_ELEMENT = 3
    XML_FRAGMENT = 4
    XML_HOOK = 5
    XML_TEXT = 6


KEYED_TYPES = frozenset({TypeRef.MAP, TypeRef.TEXT, TypeRef.XML_ELEMENT, TypeRef.XML_TEXT})
"""Types whose items may carry a key (parentSub): map entries, attributes."""
LISTED_TYPES = frozenset(set(TypeRef) - {TypeRef.MAP, TypeRef.XML_HOOK})
"""Types whose items may be keyless (sequence content)."""

HAS_ORIGIN, HAS_RIGHT_ORIGIN, HAS_PARENT_SUB = 0x80, 0x40, 0x20
_NAMED_TYPES = (TypeRef.XML_ELEMENT, TypeRef.XML_HOOK)  # followed by a node or hook name
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _schema_roots() -> Mapping[str, TypeRef]:
    return MappingProxyType({"core": TypeRef.MAP, "timeline": TypeRef.ARRAY})  # proto/schema.md


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateLimits:
    """Bounds on one update. Each refusal names the limit it hit."""

    max_depth: int = 64
    """Nesting of Any values, of Embed/Format JSON, and of shared types."""
    max_clients: int = 10_000
    """Client sections, and separately delete-set clients, per update."""
    max_structs: int = 200_000
    max_delete_ranges: int = 200_000
    max_clock_jump: int = 1 << 24
    """How far past the room's known clock of a client an update may start or delete."""
    max_string_bytes: int = 1 << 20
    """Any one string, key or binary value."""
    allowed_roots: Mapping[str, TypeRef] = field(default_factory=_schema_roots)


DEFAULT_LIMITS = UpdateLimits()


class Struct(NamedTuple):
    """One struct as encoded. GC and Skip structs have only client, clock, length, content."""

    client: int
    clock: int
    length: int
    parent: Parent | None
    """Root name or parent ID, when the encoding has it (no origins)."""
    key: str | None
    origin: ID | None
    right: ID | None
    content: int
    type_ref: int | None
    at: int = -1
    """Where an Any content (its count of values) starts in the update; -1 for other content."""

    @property
    def id(self) -> ID:
        return self.client, self.clock


@dataclass(slots=True)
class ParsedUpdate:
    """Every struct of an update, in encoding order, and its delete set."""

    structs: list[Struct] = field(default_factory=list)
    sections: dict[int, tuple[int, int]] = field(default_factory=dict)
    """client -> (first clock, end clock) of its section."""
    deletes: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    data: bytes = b""
    """The update these were read from."""


def read_update(update: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> ParsedUpdate:
    """Decode ``update`` within ``limits``; raise InvalidUpdate naming the rule and byte."""
    walker = _Walker(update, limits)
    try:
        return walker.run()
    except InvalidUpdate:
        raise
    except WireProtocolError as exc:  # the Reader's own bounds
        raise InvalidUpdate(f"{exc} (update byte {walker.reader.pos})") from None


def read_any_content(update: bytes, at: int, limits: UpdateLimits = DEFAULT_LIMITS) -> Any:
    """The last value of the Any content at byte ``at`` of ``update`` (a map key's value, as
    yrs reads it), as Python values: objects as dicts, arrays as lists, binary as bytes,
    null and undefined as None.

    For an offset ``read_update`` recorded (``Struct.at``): those bytes passed its bounds, and
    this decoder keeps them anyway (depth, counts, lengths), raising InvalidUpdate.
    """
    decoder = _AnyDecoder(update, limits)
    decoder.reader.pos = at
    try:
        n = decoder.walker.count("Any values", 1)
        if n == 0:
            raise decoder.walker.fail("Any content without a value")
        value = None
        for _ in range(n):
            value = decoder.value(0)
        return value
    except InvalidUpdate:
        raise
    except WireProtocolError as exc:
        raise InvalidUpdate(f"{exc} (update byte {decoder.reader.pos})") from None


def utf16_length(raw: bytes) -> int:
    """Length of valid UTF-8 in UTF-16 units: Yjs and yrs count string clocks this way."""
    if raw.isascii():
        return len(raw)
    astral = sum(raw.count(lead) for lead in (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4"))
    return len(raw.decode("utf-8")) + astral


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _Walker:
    __slots__ = ("limits", "parsed", "reader")

    def __init__(self, update: bytes, limits: UpdateLimits) -> None:
        self.reader = Reader(update)
        self.limits = limits
        self.parsed = ParsedUpdate(data=update)

    def fail(self, reason: str) -> InvalidUpdate:
        return InvalidUpdate(f"{reason} (update byte {self.reader.pos})")

    def run(self) -> ParsedUpdate:
        for _ in range(self.count("client sections", 3, self.limits.max_clients)):
            self.section()
        self.delete_set()
        self.reader.expect_end("the delete set")
        return self.parsed

    def count(self, what: str, min_bytes: int, limit: int | None = None) -> int:
        """Read a count of things of at least ``min_bytes`` each; bound it by bytes and limit."""
        n = self.reader.read_varuint()
        if limit is not None and n > limit:
            raise self.fail(f"update has more {what} than the limit of {limit}")
        if n * min_bytes > self.reader.remaining:
            raise self.fail(f"update claims {n} {what} in {self.reader.remaining} bytes")
        return n

    def section(self) -> None:
        parsed = self.parsed
        n = self.count("structs", 2, self.limits.max_structs - len(parsed.structs))
        client = self.reader.read_varuint()
        start = clock = self.reader.read_varuint()
        if client in parsed.sections:
            raise self.fail(f"client {client} has two sections")
        for _ in range(n):
            clock += self.struct(client, clock)
            if clock >= CLOCK_LIMIT:
                raise self.fail(f"client {client} reaches clock {clock}, not below 2^31")
        if clock == start:  # yrs drops empty items; an empty section then panics it (measured)
            raise self.fail(f"the section of client {client} has no struct of positive length")
        parsed.sections[client] = (start, clock)

    def struct(self, client: int, clock: int) -> int:
        """Read one struct; returns its length (clock units)."""
        info = self.byte("struct")
        ref = info & 0x1F
        if ref == ContentRef.GC or ref == ContentRef.SKIP:
            if info != ref:
                raise self.fail(f"GC or Skip struct with flag bits (info {info:#04x})")
            length = self.length("GC or Skip struct")
            self.parsed.structs.append(
                Struct(client, clock, length, None, None, None, None, ref, None)
            )
            return length
        return self.item(client, clock, info, ref)

    def byte(self, what: str) -> int:
        reader = self.reader
        if reader.pos >= len(reader.data):
            raise self.fail(f"update ends inside a {what}")
        reader.pos += 1
        return reader.data[reader.pos - 1]

    def length(self, what: str) -> int:
        n = self.reader.read_varuint()
        if n == 0 or n >= CLOCK_LIMIT:
            raise self.fail(f"{what} of length {n}, not between 1 and 2^31")
        return n

    def id(self) -> ID:
        client = self.reader.read_varuint()
        clock = self.reader.read_varuint()
        if clock >= CLOCK_LIMIT:
            raise self.fail(f"reference to clock {clock} of client {client}, not below 2^31")
        return client, clock

    def item(self, client: int, clock: int, info: int, ref: int) -> int:
        origin = self.id() if info & HAS_ORIGIN else None
        right_origin = self.id() if info & HAS_RIGHT_ORIGIN else None
        parent: Parent | None = None
        key = None
        if origin is None and right_origin is None:
            parent = self.parent()
            if info & HAS_PARENT_SUB:
                key = self.string("map key")
            if isinstance(parent, str):
                self.check_root_use(parent, key)
        at = self.reader.pos if ref == ContentRef.ANY else -1
        length, type_ref = self.content(ref)
        item = Struct(client, clock, length, parent, key, origin, right_origin, ref, type_ref, at)
        self.parsed.structs.append(item)
        return length

    def parent(self) -> Parent:
        flag = self.reader.read_varuint()
        if flag == 1:
            name = self.string("root name")
            if name not in self.limits.allowed_roots:
                raise self.fail(f"root {name!r} is not in the schema")
            return name
        if flag == 0:
            return self.id()
        raise self.fail(f"parent info {flag} is neither 0 (ID) nor 1 (root name)")

    def check_root_use(self, root: str, key: str | None) -> None:
        """Yjs v1 never encodes a root's type; items show it: keyed in a map, keyless in a list."""
        kind = self.limits.allowed_roots[root]
        if key is None and kind not in LISTED_TYPES:
            raise self.fail(f"keyless (sequence) item in root {root!r}, which is a {kind.name}")
        if key is not None and kind not in KEYED_TYPES:
            raise self.fail(f"item with key {key!r} in root {root!r}, which is a {kind.name}")

    # -- content --------------------------------------------------------------------------------

    def content(self, ref: int) -> tuple[int, int | None]:
        """Read the content of an item; returns (length, type ref or None)."""
        if ref == ContentRef.ANY:
            n = self.count("Any values", 1)
            for _ in range(n):
                self.any(0)
            return n, None
        if ref == ContentRef.DELETED:
            return self.length("Deleted content"), None
        if ref == ContentRef.STRING:
            raw = self.raw_string("string content")
            self.check_utf8(raw, "string content")
            return utf16_length(raw), None
        if ref == ContentRef.TYPE:
            return 1, self.type_ref()
        if ref == ContentRef.BINARY:
            self.raw_string("binary content")
        elif ref == ContentRef.EMBED:
            self.json_value("embed")
        elif ref == ContentRef.FORMAT:
            self.string("format key")
            self.json_value("format value")
        elif ref == ContentRef.JSON:
            # yrs 0.28 reads one more string than Yjs writes here: room and clients would differ.
            raise self.fail("legacy JSON content (ref 2) is refused")
        elif ref == ContentRef.DOC:
            raise self.fail("subdocuments (content ref 9) are not allowed")
        else:
            raise self.fail(f"unknown content ref {ref}")
        return 1, None

    def type_ref(self) -> int:
        value = self.byte("type content")  # one byte: yrs reads a u8 where Yjs reads a varUint
        if value > TypeRef.XML_TEXT:
            raise self.fail(f"unknown type ref {value}")
        if value in _NAMED_TYPES:
            self.string("XML node name")
        return value

    def raw_string(self, what: str) -> bytes:
        n = self.reader.read_varuint()
        if n > self.limits.max_string_bytes:
            raise self.fail(f"{what} of {n} bytes; the limit is {self.limits.max_string_bytes}")
        return self.reader.read_bytes(n)

    def check_utf8(self, raw: bytes, what: str) -> None:
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self.fail(f"{what} is not valid UTF-8 at its byte {exc.start}") from None

    def string(self, what: str) -> str:
        raw = self.raw_string(what)
        self.check_utf8(raw, what)
        return raw.decode("utf-8")

    def any(self, depth: int) -> None:
        """Read one lib0 Any value (``readAny``) nested ``depth`` containers deep."""
        tag = self.byte("Any value")
        if tag in (126, 127, 120, 121):  # null, undefined, true, false
            return
        if tag == 119:
            self.check_utf8(self.raw_string("Any string"), "Any string")
        elif tag == 125:
            self.varint()
        elif tag == 123 or tag == 122:  # float64, bigint64
            self.reader.read_bytes(8)
        elif tag == 124:  # float32
            self.reader.read_bytes(4)
        elif tag == 118 or tag == 117:
            self.any_container(tag == 118, depth + 1)
        elif tag == 116:
            self.raw_string("Any binary")
        else:
            raise self.fail(f"unknown Any tag {tag}")

    def any_container(self, is_object: bool, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self.fail(f"Any value nested deeper than {self.limits.max_depth}")
        n = self.count("Any entries", 2 if is_object else 1)
        for _ in range(n):
            if is_object:
                self.string("Any object key")
            self.any(depth)

    def varint(self) -> None:
        """Skip a lib0 signed varInt: at most 10 bytes, magnitude at most 2^53 - 1."""
        reader = self.reader
        data, pos = reader.data, reader.pos
        end = min(len(data), pos + 10)
        value = shift = 0
        while pos < end:
            byte = data[pos]
            pos += 1
            value |= (byte & (0x3F if shift == 0 else 0x7F)) << shift
            shift += 6 if shift == 0 else 7
            if byte < 0x80:
                if value > MAX_SAFE_INTEGER:
                    raise self.fail(f"Any integer of magnitude {value} is above 2^53 - 1")
                reader.pos = pos
                return
        raise self.fail("Any integer is truncated or longer than 10 bytes")

    def json_value(self, what: str) -> None:
        """Read a JSON text (Embed, Format): bounded depth, valid JSON as yrs parses it."""
        text = self.string(what)
        limit = self.limits.max_depth
        if text.count("[") + text.count("{") > limit:  # else it cannot nest deeper
            depth = 0
            for match in _JSON_TOKEN.finditer(text):
                token = match.group()
                if token in "[{":
                    depth += 1
                    if depth > limit:
                        raise self.fail(f"{what} JSON nested deeper than {limit}")
                elif token in "]}":
                    depth -= 1
        try:
            json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise self.fail(f"{what} is not valid JSON: {exc}") from None

    def delete_set(self) -> None:
        limits, deletes = self.limits, self.parsed.deletes
        total = 0
        for _ in range(self.count("delete-set clients", 2, limits.max_clients)):
            client = self.reader.read_varuint()
            if client in deletes:
                raise self.fail(f"client {client} appears twice in the delete set")
            n = self.count("delete ranges", 2, limits.max_delete_ranges - total)
            total += n
            deletes[client] = tuple(self.delete_range(client) for _ in range(n))

    def delete_range(self, client: int) -> tuple[int, int]:
        clock = self.reader.read_varuint()
        length = self.length("delete range")
        if clock + length >= CLOCK_LIMIT:
            raise self.fail(f"delete range of client {client} ends at {clock + length}")
        return clock, length


_FIXED = {123: (8, ">d"), 122: (8, ">q"), 124: (4, ">f")}  # lib0: float64, bigint64, float32
_CONSTANTS: dict[int, Any] = {126: None, 127: None, 120: True, 121: False}


class _AnyDecoder:
    """lib0 ``readAny`` into Python values, with the walker's bounds (recursion at most
    ``max_depth`` containers deep)."""

    __slots__ = ("reader", "walker")

    def __init__(self, update: bytes, limits: UpdateLimits) -> None:
        self.walker = _Walker(update, limits)
        self.reader = self.walker.reader

    def value(self, depth: int) -> Any:
        walker = self.walker
        tag = walker.byte("Any value")
        if tag in _CONSTANTS:
            return _CONSTANTS[tag]
        if tag == 119:
            return walker.string("Any string")
        if tag == 125:
            return self.integer()
        if tag in _FIXED:
            size, layout = _FIXED[tag]
            return binary.unpack(layout, self.reader.read_bytes(size))[0]
        if tag == 118 or tag == 117:
            if depth + 1 > walker.limits.max_depth:
                raise walker.fail(f"Any value nested deeper than {walker.limits.max_depth}")
            n = walker.count("Any entries", 2 if tag == 118 else 1)
            if tag == 117:
                return [self.value(depth + 1) for _ in range(n)]
            return {walker.string("Any object key"): self.value(depth + 1) for _ in range(n)}
        if tag == 116:
            return walker.raw_string("Any binary")
        raise walker.fail(f"unknown Any tag {tag}")

    def integer(self) -> int:
        """A lib0 signed varInt (bit 0x40 of the first byte is the sign)."""
        start = self.reader.pos
        self.walker.varint()  # bounds: at most 10 bytes, magnitude at most 2^53 - 1
        data = self.reader.data[start : self.reader.pos]
        value, shift = data[0] & 0x3F, 6
        for byte in data[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
        return -value if data[0] & 0x40 else value
