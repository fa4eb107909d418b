"""Check of one Yjs v1 update against its room, before pycrdt sees it (DESIGN.md §7).

``update_reader`` proves the bytes are a bounded, well-formed update; this module proves the
update fits the room. Each rule below was measured to crash, hang or corrupt pycrdt 0.14.13
(yrs 0.28) when broken, or guards a limit of the issue (tests/core/corpus/README.md):

- a section starts at most ``max_clock_jump`` past the room's known clock of its client;
- an item points only at items the update or the room has (given the room's ``DocIndex``),
  never at its own future; its origins form no cycle;
- its origin and right origin lie in the same parent (else yrs links it into two lists and
  reading the Doc loops forever);
- a parent named by ID is a shared type that takes the item: keyed in maps, keyless in lists
  (else yrs raises mid-transaction);
- content fits its parent: text content only in texts, values in maps and arrays;
- a struct the room already has (or holds pending) does not come back changed;
- shared types nest at most ``max_depth`` deep, across updates too (pycrdt reads recurse).

Use: build ``DocIndex.from_history(...)`` beside the room's Doc; for each update call
``summary = check_update(update, state, limits, index=index)``; apply the update only if that
returned, then ``index.record(summary)``. ``UpdateSummary`` tells what the update writes.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from gateway.core.update_reader import (
    CLOCK_LIMIT,
    DEFAULT_LIMITS,
    ID,
    KEYED_TYPES,
    LISTED_TYPES,
    ContentRef,
    Parent,
    ParsedUpdate,
    Struct,
    TypeRef,
    UpdateLimits,
    read_any_content,
    read_update,
)
from gateway.errors import InvalidUpdate, MissingReference

__all__ = [
    "CLOCK_LIMIT",
    "DEFAULT_LIMITS",
    "ID",
    "NO_ORIGIN",
    "ContentRef",
    "DocIndex",
    "InvalidUpdate",
    "ItemInfo",
    "KeyWrite",
    "MissingReference",
    "Parent",
    "TypeRef",
    "UpdateLimits",
    "UpdateSummary",
    "check_update",
    "summarize_trusted",
]

CORE = "core"
"""The root whose keyed writes a summary keeps (``UpdateSummary.core_writes``)."""

NO_ORIGIN: ID = (-1, -1)
"""In ``KeyWrite.refs``: a write made where the key never had an item."""

Place = tuple[Parent | None, str | None]
"""(parent, key) of an item; parent None: unknown here (collected as GC, or not resolvable)."""
_GONE: Place = (None, None)

_MAP_CONTENT: frozenset[int] = frozenset({ContentRef.ANY, ContentRef.BINARY, ContentRef.TYPE})
"""What Yjs ``typeMapSet`` writes under a key (in any type)."""
_TEXT = frozenset({ContentRef.STRING, ContentRef.FORMAT, ContentRef.EMBED, ContentRef.TYPE})
_LIST_CONTENT: dict[int, frozenset[int]] = {
    TypeRef.ARRAY: _MAP_CONTENT,
    TypeRef.TEXT: _TEXT,
    TypeRef.XML_TEXT: _TEXT,
    TypeRef.XML_ELEMENT: frozenset({ContentRef.TYPE}),
    TypeRef.XML_FRAGMENT: frozenset({ContentRef.TYPE}),
}
"""What each sequence type holds (Deleted content fits anywhere)."""
_CONTENT_REFS, _TYPE_REFS = tuple(ContentRef), tuple(TypeRef)  # faster than calling the enums


class ItemInfo(NamedTuple):
    """One item of an update, with the parent and key it inherits through its origins.

    A NamedTuple rather than a frozen dataclass: one is built per item, on the hot path.
    """

    id: ID
    length: int
    parent: Parent | None
    """Root name or parent type's ID; None when neither the update nor the index places it."""
    key: str | None
    inherited: bool
    """True when the encoding leaves parent and key out (the item has an origin)."""
    origin: ID | None
    right_origin: ID | None
    content: ContentRef
    type_ref: TypeRef | None
    depth: int
    """For a shared type, how many shared types deep it is (1 directly under a root)."""
    at: int
    """Where its Any content starts in the update (``read_any_content``); -1 for other content."""


class KeyWrite(NamedTuple):
    """What one update writes under one key of the ``core`` map (its items placed there)."""

    last: ID
    """Its last item under the key, in encoding order: the one that counts."""
    at: int
    """Where that item's Any content starts in the update; -1 for other content."""
    refs: frozenset[ID]
    """The ids and origins (NO_ORIGIN for none) of all its items under the key: what the
    writes were made on."""


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    """What a checked update writes: record it in the room's DocIndex once applied."""

    clients: Mapping[int, tuple[int, int]]
    """client -> (first clock, end clock) of its structs."""
    deletes: Mapping[int, tuple[tuple[int, int], ...]]
    """client -> (clock, length) ranges of the delete set."""
    items: tuple[ItemInfo, ...]
    gc: tuple[tuple[int, int, int], ...]
    """(client, clock, length) of every GC struct."""
    roots: frozenset[str]
    keys: frozenset[tuple[Parent, str]]
    """(parent, key) of every keyed item whose parent is known."""
    unresolved: frozenset[ID]
    """References found neither in the update nor in the index (only without an index)."""
    structs: int
    delete_ranges: int
    core_writes: Mapping[str, KeyWrite]
    """key -> the update's writes under that key of the ``core`` root (resolved places)."""
    data: bytes
    """The update itself (to read a written value: ``core_value``)."""

    def core_value(self, key: str) -> Any:
        """The value the update wrote last under ``core[key]`` (KeyError: none; InvalidUpdate:
        not an Any value)."""
        write = self.core_writes[key]
        if write.at < 0:
            raise InvalidUpdate(f"the update's last write of core.{key} is not a plain value")
        return read_any_content(self.data, write.at)


def check_update(
    update: bytes,
    state: Mapping[int, int],
    limits: UpdateLimits = DEFAULT_LIMITS,
    *,
    index: DocIndex | None = None,
) -> UpdateSummary:
    """Check ``update`` against the room's ``state`` ({client: next clock}) and ``index``.

    Raises InvalidUpdate with a sentence naming the rule: the caller must refuse the update and
    never apply it. Without ``index`` the references outside the update are checked only against
    the clock bounds; pass the room's DocIndex to check them all.
    """
    parsed = read_update(update, limits)
    _check_clocks(parsed, state, limits, strict=index is not None)
    return _Placer(parsed, limits, index, state).summary()


def summarize_trusted(
    update: bytes, index: DocIndex, limits: UpdateLimits = DEFAULT_LIMITS
) -> UpdateSummary:
    """Summarise an update that was checked before (by a peer node, or when it was stored).

    The bytes are still read with every bound, but references that this room's index does not
    know yet (a peer's message that arrived before one it depends on) are not an error.
    """
    return _Placer(read_update(update, limits), limits, index, {}, strict=False).summary()


def _check_clocks(
    parsed: ParsedUpdate, state: Mapping[int, int], limits: UpdateLimits, *, strict: bool
) -> None:
    """Starts, deletes and (without an index) references stay near what the room knows."""
    jump = limits.max_clock_jump
    for client, (start, _) in parsed.sections.items():
        if start > state.get(client, 0) + jump:
            raise InvalidUpdate(
                f"client {client} starts at clock {start}, but the room knows it up to "
                f"{state.get(client, 0)}; the limit is {jump} ahead"
            )
    reach = [(c, clock + n - 1) for c, ranges in parsed.deletes.items() for clock, n in ranges]
    for struct in parsed.structs:
        for ref in (struct.origin, struct.right, struct.parent):
            if isinstance(ref, tuple):
                if ref[0] == struct.client and ref[1] >= struct.clock:
                    raise InvalidUpdate(f"item {struct.id} refers to its own future {ref}")
                if not strict:
                    reach.append(ref)
    for client, clock in reach:
        known = max(state.get(client, 0), parsed.sections.get(client, (0, 0))[1])
        if clock >= known + jump:
            raise InvalidUpdate(
                f"update refers to clock {clock} of client {client}, but the room and the "
                f"update know it up to {known}; the limit is {jump} ahead"
            )


class _Placer:
    """Resolves where each item lives, via its origins, in the update or the room's index."""

    __slots__ = (
        "depths", "index", "limits", "lookup", "parsed", "places", "state", "strict", "structs",
        "unresolved",
    )  # fmt: skip

    def __init__(
        self,
        parsed: ParsedUpdate,
        limits: UpdateLimits,
        index: DocIndex | None,
        state: Mapping[int, int],
        *,
        strict: bool = True,
    ) -> None:
        self.structs = parsed.structs
        self.limits = limits
        self.index = index
        self.state = state
        self.strict = strict and index is not None
        self.lookup: dict[int, tuple[list[int], list[int]]] = {}
        for i, struct in enumerate(self.structs):  # one section per client: clocks ascend
            starts, positions = self.lookup.setdefault(struct.client, ([], []))
            starts.append(struct.clock)
            positions.append(i)
        self.places: dict[int, Place] = {}
        self.depths: dict[int, int] = {}
        self.unresolved: set[ID] = set()
        self.parsed = parsed

    def find(self, ref: ID) -> int | None:
        """Position of the struct (not Skip) of this update that contains ``ref``, if any."""
        entry = self.lookup.get(ref[0])
        if entry is None or (self.index is not None and ref[1] < self.state.get(ref[0], 0)):
            return None  # yrs skips structs it has: for those, the room's items count
        at = bisect_right(entry[0], ref[1]) - 1
        if at < 0:
            return None
        i = entry[1][at]
        struct = self.structs[i]
        if ref[1] >= struct.clock + struct.length or struct.content == ContentRef.SKIP:
            return None  # a Skip holds nothing: the room may have what it stands for
        return i

    def where(self, ref: ID) -> Place | None:
        """Place of the item containing ``ref``; None when nobody here knows it."""
        i = self.find(ref)
        if i is not None:
            return _GONE if self.structs[i].content == ContentRef.GC else self.places[i]
        return self.index.where(ref) if self.index is not None else None

    def pending_dependency(self, i: int) -> int | None:
        """An item of this update that item ``i`` takes its place from, not placed yet."""
        for ref in (self.structs[i].origin, self.structs[i].right):
            if ref is not None:
                j = self.find(ref)
                if j is not None and j not in self.places and self.is_item(j):
                    return j
        return None

    def is_item(self, i: int) -> bool:
        return self.structs[i].content not in (ContentRef.GC, ContentRef.SKIP)

    def place(self, i: int) -> None:
        """Place item ``i`` and, first, the items it depends on (iteratively: chains are long)."""
        stack, active = [i], {i}
        while stack:
            top = stack[-1]
            dependency = self.pending_dependency(top)
            if dependency is None:
                self.places[top] = self.resolve(top)
                active.discard(stack.pop())
            elif dependency in active:
                raise InvalidUpdate(f"the origins of item {self.structs[top].id} form a cycle")
            else:
                stack.append(dependency)
                active.add(dependency)

    def resolve(self, i: int) -> Place:
        """Yjs ``Item.getMissing``: the origin's place, or the right origin's if that is GC."""
        struct = self.structs[i]
        if struct.origin is None and struct.right is None:
            return struct.parent, struct.key
        places = [self.where_or_fail(ref, struct) for ref in (struct.origin, struct.right)]
        left, right = places
        if (
            left is not None
            and right is not None
            and None not in (left[0], right[0])
            and left != right
        ):
            raise InvalidUpdate(
                f"item {struct.id} has its origin in {left} and its right origin in {right}"
            )
        if left is not None and left[0] is not None:
            return left
        return right if right is not None else _GONE

    def where_or_fail(self, ref: ID | None, struct: Struct) -> Place | None:
        if ref is None:
            return None
        place = self.where(ref)
        if place is None:
            if self.strict:
                raise MissingReference(f"item {struct.id} refers to {ref}, which the room lacks")
            self.unresolved.add(ref)
        return place

    def check_parent(self, i: int) -> None:
        """An explicit parent ID must be a shared type that takes this kind of item."""
        struct, parent = self.structs[i], self.structs[i].parent
        assert isinstance(parent, tuple)
        j = self.find(parent)
        if j is not None:
            content = self.structs[j].content
            if content in (ContentRef.GC, ContentRef.DELETED):
                return  # a deleted type: yrs turns the child into GC
            kind = self.structs[j].type_ref if content == ContentRef.TYPE else None
        elif self.index is None:
            return
        else:
            kind, gone = self.index.parent_kind(parent)
            if gone:
                return
            if kind is None and self.index.where(parent) is None:
                if self.strict:
                    raise MissingReference(f"item {struct.id} has parent {parent}, unknown here")
                return
        if kind is None:
            raise InvalidUpdate(f"item {struct.id} has parent {parent}, not a shared type")
        if kind not in (LISTED_TYPES if struct.key is None else KEYED_TYPES):
            what = "keyless" if struct.key is None else f"key {struct.key!r}"
            raise InvalidUpdate(f"item {struct.id} with {what} is in a {TypeRef(kind).name}")

    def check_pending(self, struct: Struct, place: Place) -> None:
        """A struct the room holds pending (past its state) may come again, but unchanged."""
        if self.index is None or struct.clock < self.state.get(struct.client, 0):
            return
        known = self.index.where(struct.id)
        if known is not None and None not in (known[0], place[0]) and known != place:
            raise InvalidUpdate(
                f"the update puts {struct.id} in {place}; the room has it in {known}"
            )

    def kind_of(self, parent: Parent | None) -> int | None:
        """Type ref of a parent: a root of the schema, or a shared type the update or room made."""
        if isinstance(parent, str):
            return self.limits.allowed_roots.get(parent)
        if parent is None:
            return None
        j = self.find(parent)
        if j is not None:
            return self.structs[j].type_ref
        return self.index.parent_kind(parent)[0] if self.index is not None else None

    def check_content(self, struct: Struct, parent: Parent | None, key: str | None) -> None:
        """Text content only in texts, values only in maps and arrays (a String item in an
        array makes reading it loop forever: measured)."""
        kind = self.kind_of(parent)
        if kind is None or struct.content == ContentRef.DELETED:
            return
        allowed = _MAP_CONTENT if key is not None else _LIST_CONTENT.get(kind, frozenset())
        if struct.content not in allowed:
            name = ContentRef(struct.content).name
            where = f"key {key!r} of" if key is not None else "the sequence of"
            raise InvalidUpdate(
                f"item {struct.id} puts {name} content in {where} a {TypeRef(kind).name}"
            )

    def depth(self, i: int) -> int:
        """Nesting of the shared type made by item ``i``, via parents in the update or index."""
        limit = self.limits.max_depth
        chain = [i]
        while True:
            parent = self.places[chain[-1]][0]
            j = self.find(parent) if isinstance(parent, tuple) else None
            if j is None or j in self.depths or self.structs[j].content != ContentRef.TYPE:
                break
            if len(chain) > limit:
                raise InvalidUpdate(f"shared types nested deeper than {limit}")
            chain.append(j)
        if j is not None:
            base = self.depths.get(j, 0)
        elif isinstance(parent, tuple) and self.index is not None:
            base = self.index.depth_of(parent)
        else:
            base = 0
        for k in reversed(chain):
            base += 1
            self.depths[k] = base
        if base > limit:
            raise InvalidUpdate(f"shared types nested deeper than {limit}")
        return self.depths[i]

    def summary(self) -> UpdateSummary:
        infos, gc = [], []
        roots: set[str] = set()
        keys: set[tuple[Parent, str]] = set()
        writes: dict[str, tuple[ID, int, set[ID]]] = {}
        places = self.places
        for i, struct in enumerate(self.structs):
            if struct.origin is None and struct.right is None:
                places[i] = struct.parent, struct.key  # explicit (or a GC/Skip: unused)
            elif i not in places:
                self.place(i)
        for i, struct in enumerate(self.structs):
            client, clock, length, _, _, origin, right, content, type_ref, at = struct
            if not self.is_item(i):
                if content == ContentRef.GC:
                    gc.append((client, clock, length))
                continue
            if isinstance(struct.parent, tuple):
                self.check_parent(i)
            parent, key = self.places[i]
            self.check_content(struct, parent, key)
            self.check_pending(struct, (parent, key))
            depth = self.depth(i) if type_ref is not None else 0
            if isinstance(parent, str):
                roots.add(parent)
            if key is not None and parent is not None:
                keys.add((parent, key))
                if parent == CORE:
                    self.add_write(writes, key, struct)
            inherited = origin is not None or right is not None
            kind = None if type_ref is None else _TYPE_REFS[type_ref]
            info = ItemInfo(
                (client, clock), length, parent, key, inherited, origin, right,
                _CONTENT_REFS[content], kind, depth, at,
            )  # fmt: skip
            infos.append(info)
        return UpdateSummary(
            clients=self.parsed.sections,
            deletes=self.parsed.deletes,
            items=tuple(infos),
            gc=tuple(gc),
            roots=frozenset(roots),
            keys=frozenset(keys),
            unresolved=frozenset(self.unresolved),
            structs=len(self.structs),
            delete_ranges=sum(len(r) for r in self.parsed.deletes.values()),
            core_writes={
                k: KeyWrite(last, at, frozenset(refs)) for k, (last, at, refs) in writes.items()
            },
            data=self.parsed.data,
        )

    @staticmethod
    def add_write(writes: dict[str, tuple[ID, int, set[ID]]], key: str, struct: Struct) -> None:
        refs = writes[key][2] if key in writes else set()
        refs.add(struct.id)
        refs.add(NO_ORIGIN if struct.origin is None else struct.origin)
        writes[key] = struct.id, struct.at, refs


class DocIndex:
    """Where every item of a room's Doc lives, kept beside the Doc for ``check_update``.

    Per client, runs of clocks with one place (parent, key) each, and whether the run holds
    Deleted content; per shared type, its kind and depth. Built from the room's history, then
    told about every update the room applies (``record``). Call it from the room's task only.
    """

    __slots__ = ("runs", "types")

    def __init__(self) -> None:
        self.runs: dict[int, tuple[list[int], list[tuple[int, Place, bool]]]] = {}
        """client -> (run starts, (run end, place, deleted content) per run), sorted."""
        self.types: dict[ID, tuple[TypeRef, int]] = {}

    @classmethod
    def from_history(
        cls, updates: Iterable[bytes], limits: UpdateLimits = DEFAULT_LIMITS
    ) -> DocIndex:
        """The index of a Doc built from ``updates`` (snapshot, then logged updates)."""
        index = cls()
        for update in updates:  # stored history passed the guard once: resolve, don't insist
            index.record(summarize_trusted(update, index, limits))
        return index

    def where(self, ref: ID) -> Place | None:
        run = self.run(ref)
        return None if run is None else run[1]

    def run(self, ref: ID) -> tuple[int, Place, bool] | None:
        entry = self.runs.get(ref[0])
        if entry is None:
            return None
        at = bisect_right(entry[0], ref[1]) - 1
        if at < 0 or entry[1][at][0] <= ref[1]:
            return None
        return entry[1][at]

    def covers(self, client: int, clock: int, length: int, place: Place) -> bool:
        """Whether any item of clocks [clock, clock + length) of ``client`` lives at ``place``."""
        entry = self.runs.get(client)
        if entry is None:
            return False
        starts, runs = entry
        at = max(bisect_right(starts, clock) - 1, 0)
        end = clock + length
        while at < len(starts) and starts[at] < end:
            if runs[at][0] > clock and runs[at][1] == place:
                return True
            at += 1
        return False

    def parent_kind(self, ref: ID) -> tuple[int | None, bool]:
        """(type ref of the shared type at ``ref``, whether it is gone) for a parent ID."""
        if ref in self.types:
            return self.types[ref][0], False
        run = self.run(ref)
        return None, run is not None and (run[1][0] is None or run[2])

    def depth_of(self, ref: ID) -> int:
        return self.types[ref][1] if ref in self.types else 0

    def record(self, summary: UpdateSummary) -> None:
        """Remember the items of an update the room has applied."""
        for item in summary.items:
            deleted = item.content == ContentRef.DELETED
            self.add(item.id, item.length, (item.parent, item.key), deleted)
            if item.type_ref is not None:
                self.types.setdefault(item.id, (item.type_ref, item.depth))
        for client, clock, length in summary.gc:
            self.add((client, clock), length, _GONE, True)

    def add(self, at: ID, length: int, place: Place, deleted: bool) -> None:
        """Record clocks [at, at + length) of a client where no run covers them yet."""
        client, cursor = at
        end = cursor + length
        if not length:
            return  # yrs drops empty items: their clock belongs to the next struct
        starts, runs = self.runs.setdefault(client, ([], []))
        if not starts or cursor >= runs[-1][0]:  # the usual case: appending
            if starts and cursor == runs[-1][0] and runs[-1][1:] == (place, deleted):
                runs[-1] = (end, place, deleted)
            else:
                starts.append(cursor)
                runs.append((end, place, deleted))
            return
        while cursor < end:  # out of order or overlapping: fill the gaps only
            at_run = bisect_right(starts, cursor) - 1
            if at_run >= 0 and runs[at_run][0] > cursor:
                cursor = runs[at_run][0]
                continue
            stop = min(end, starts[at_run + 1]) if at_run + 1 < len(starts) else end
            insort(starts, cursor)
            runs.insert(at_run + 1, (stop, place, deleted))
            cursor = stop
