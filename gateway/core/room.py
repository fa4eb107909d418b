"""CRDT state of one room (wedding) on this node. No I/O: every call returns effects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, assert_never

from pycrdt import Doc, get_update, merge_updates

from gateway.core import codec
from gateway.core.effects import Broadcast, Close, Effect, Persist, Publish, Send
from gateway.core.guard import Guard
from gateway.core.limits import Limits
from gateway.core.messages import (
    EMPTY_UPDATE,
    EXTENSION_VERSION,
    Ack,
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    Drain,
    Feature,
    Hello,
    Message,
    QueryAwareness,
    Reject,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from gateway.core.session import Session, SessionState
from gateway.errors import InvalidState, ProtocolError, RoomPoisoned
from gateway.types import RoomId

MAX_AWARENESS_CLOCKS = 10_000
"""Awareness clocks kept per room; beyond this only the present entries' clocks are kept."""


@dataclass(frozen=True, slots=True)
class RoomStatistics:
    members: int
    live_members: int
    updates_applied: int
    awareness_entries: int


class Room:
    """A room's Doc, awareness table and members. Call it from one task only."""

    def __init__(self, room_id: RoomId, history: Iterable[bytes], *, limits: Limits) -> None:
        """Build the room's Doc from its stored ``history`` (snapshot, then log updates)."""
        self.id = room_id
        self.limits = limits
        history = list(history)
        self.doc: Doc[Any] = Doc()
        for update in history:
            self.doc.apply_update(update)
        self.guard = Guard(
            history,
            self.doc.get_state(),
            limits=limits.update,
            max_new_client_ids=limits.max_new_client_ids,
        )
        self._changed = False
        # pycrdt fires this only when a transaction changed the document (new structs,
        # deletions, or parts kept pending); a duplicate update fires nothing.
        self._subscription = self.doc.observe(self._on_change)
        self.members: dict[int, Session] = {}
        self.poisoned = False
        self.updates_applied = 0
        self._awareness: dict[int, AwarenessEntry] = {}
        self._awareness_clocks: dict[int, int] = {}
        """Last clock per awareness client, kept after removal (no resurrection by relays)."""

    # -- membership ---------------------------------------------------------------------------

    def join(self, session: Session) -> list[Effect]:
        """Add ``session``; returns the server's sync step 1 and the awareness states for it."""
        if session.state is not SessionState.CONNECTING:
            raise InvalidState(f"{session} joined room {self.id} twice")
        session.state = SessionState.SYNCING
        self.members[session.id] = session
        effects: list[Effect] = [Send(session, codec.encode(SyncStep1(self.doc.get_state())))]
        if self._awareness:
            effects.append(Send(session, self._awareness_message(self._awareness.values())))
        return effects

    def leave(self, session: Session) -> list[Effect]:
        """Remove ``session``; its awareness entries are removed for everyone else."""
        if self.members.pop(session.id, None) is None:
            return []
        session.state = SessionState.CLOSED
        gone = [  # the awareness entries it owned (the guard made it claim each one it set)
            AwarenessEntry(cid, self._awareness[cid].clock + 1, "null")
            for cid in session.owned_client_ids
            if cid in self._awareness
        ]
        self.guard.release(session)
        for entry in gone:
            del self._awareness[entry.client_id]
        if not gone:
            return []
        data = self._awareness_message(gone)
        return [Broadcast(data, exclude=None, live_only=False), Publish(data)]

    @property
    def empty(self) -> bool:
        return not self.members

    # -- messages from clients ----------------------------------------------------------------

    def receive(self, session: Session, message: Message) -> list[Effect]:
        """Handle one decoded message from a member; returns what the driver must do."""
        match message:
            case SyncStep1(state_vector):
                session.state = SessionState.LIVE  # later updates reach it by broadcast
                update = self.doc.get_update(state_vector)
                return [Send(session, codec.encode(SyncStep2(update)))]
            case SyncStep2(update):
                return self._apply_client_update(session, session.next_seq(), update, True)
            case SyncUpdate(update):
                return self._apply_client_update(session, session.next_seq(), update, False)
            case AwarenessUpdate(payload):
                return self._apply_client_awareness(session, payload)
            case QueryAwareness():
                return [Send(session, self._awareness_message(self._awareness.values()))]
            case Hello(_, features):
                session.features = features & Feature.ACKS
                return [Send(session, codec.encode(Hello(EXTENSION_VERSION, session.features)))]
            case Auth():
                return []  # tokens arrive with the auth issue; stock clients never send this
            case Ack() | Reject() | Drain():
                return [Close(session, ProtocolError(f"{type(message).__name__} is server-only"))]
            case _:
                assert_never(message)

    def _apply_client_update(
        self, session: Session, seq: int, update: bytes, catch_up: bool
    ) -> list[Effect]:
        ack_to = session if session.wants_acks else None
        if update == EMPTY_UPDATE:
            return [Persist(None, ack_to, seq)] if ack_to else []
        summary = self.guard.check_client_update(
            session, update, session.last_receive, catch_up=catch_up
        )
        new = self.guard.adds_structs(summary)
        # pycrdt fires no event for structs it keeps pending (a missing dependency): they are
        # new all the same, and must be shared and stored, or they are lost when it arrives
        changed = self._apply_contained(update) or new
        if changed:
            self.guard.record(summary)
        if not changed:
            # An echo or a resend: nothing to share. A client that asked for acks still gets
            # it stored: the Doc may hold it only from a peer that died before committing it
            # (a failover resend), and an ack must mean durable here.
            return [Persist(update, ack_to, seq)] if ack_to else []
        data = codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(update)
        return [Broadcast(data, exclude=session), Publish(data), Persist(update, ack_to, seq)]

    def _apply_client_awareness(self, session: Session, payload: bytes) -> list[Effect]:
        entries = codec.decode_awareness(payload, max_entries=self.limits.max_awareness_entries)
        for entry in entries:
            if len(entry.state) > self.limits.max_awareness_state_bytes:
                raise ProtocolError(
                    f"awareness state of {len(entry.state)} characters exceeds the limit of "
                    f"{self.limits.max_awareness_state_bytes}"
                )
            codec.check_json(entry.state, max_depth=self.limits.max_awareness_depth)
        # _merge_awareness: a connection sets or clears only its own entries
        if not self._merge_awareness(entries, owner=session):
            return []
        data = codec.encode(AwarenessUpdate(payload))
        return [Broadcast(data, exclude=session, live_only=False), Publish(data)]

    # -- messages from peers (the bus) --------------------------------------------------------

    def receive_from_peer(self, data: bytes) -> list[Effect]:
        """Apply one message published by another node: broadcast locally, never republish."""
        message = codec.decode(data)
        match message:
            case SyncUpdate(update):
                return [Broadcast(data, exclude=None)] if self._apply_trusted(update) else []
            case AwarenessUpdate(payload):
                entries = codec.decode_awareness(payload, max_entries=1 << 16)
                if self._merge_awareness(entries, owner=None):
                    return [Broadcast(data, exclude=None, live_only=False)]
                return []
            case _:
                raise InvalidState(f"peer published a {type(message).__name__}")

    def merge_history(self, blobs: Iterable[bytes]) -> list[Effect]:
        """Merge stored updates (a repair after bus loss); broadcast what was new, never persist.

        The history is merged and diffed against this Doc in Rust first, so only what the room
        lacks goes through the guard's summary and ``apply_update`` (a repair of a long log
        used to hold the event loop for a second).
        """
        blobs = list(blobs)
        if not blobs:
            return []
        missing = get_update(merge_updates(*blobs), self.doc.get_state())
        if missing == EMPTY_UPDATE:
            return []
        before = self.doc.get_state()
        if not self._apply_trusted(missing):
            return []
        data = codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(self.doc.get_update(before))
        return [Broadcast(data, exclude=None)]

    # -- state ----------------------------------------------------------------------------------

    def _on_change(self, event: object) -> None:
        self._changed = True

    def _apply_contained(self, update: bytes) -> bool:
        """Apply ``update``; any failure inside pycrdt poisons the room (DESIGN.md §7).

        pycrdt raises ``pyo3_runtime.PanicException`` (a BaseException) on some inputs and leaves
        the Doc half-applied, so every failure is caught here, the Doc is never used again, and
        the caller must drop the room and rebuild it from the store.
        """
        if self.poisoned:
            raise InvalidState(f"room {self.id} is poisoned and must be rebuilt")
        try:
            return self._apply(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self.poisoned = True
            raise RoomPoisoned(
                f"update could not be applied ({type(exc).__name__}); the room is reset", update
            ) from exc

    def _apply_trusted(self, update: bytes) -> bool:
        """Apply an update checked elsewhere (a peer, the store); return whether it was new."""
        try:
            summary = self.guard.summarize_trusted(update)
        except ProtocolError as exc:  # checked elsewhere, unreadable here: rebuild the room
            self.poisoned = True
            raise RoomPoisoned(f"peer update unreadable by the guard: {exc}", update) from exc
        new = self.guard.adds_structs(summary)
        changed = self._apply_contained(update) or new
        if changed:
            self.guard.record(summary)
        return changed

    def _apply(self, update: bytes) -> bool:
        """Apply ``update``; return whether the document changed."""
        self._changed = False
        self.doc.apply_update(update)
        if self._changed:
            self.updates_applied += 1
        return self._changed

    def _merge_awareness(self, entries: list[AwarenessEntry], *, owner: Session | None) -> bool:
        """Apply entries with the y-protocols clock rule; return True if any state changed.

        Only entries that change something count as written by ``owner``: stock y-websocket
        clients relay the entries of others they receive, with the same clocks.
        """
        changing = []
        for entry in entries:
            clock = self._awareness_clocks.get(entry.client_id, 0)
            present = entry.client_id in self._awareness
            if entry.clock > clock or (entry.clock == clock and entry.removed and present):
                if entry.removed and not present:
                    self._awareness_clocks[entry.client_id] = entry.clock  # nothing to remove
                else:
                    changing.append(entry)
        if owner is not None and changing:
            self.guard.claim(owner, {e.client_id for e in changing}, owner.last_receive)
        if len(self._awareness_clocks) > MAX_AWARENESS_CLOCKS:
            self._awareness_clocks = {c: e.clock for c, e in self._awareness.items()}
        for entry in changing:
            self._awareness_clocks[entry.client_id] = entry.clock
            if entry.removed:
                del self._awareness[entry.client_id]
            else:
                self._awareness[entry.client_id] = entry
        return bool(changing)

    def _awareness_message(self, entries: Iterable[AwarenessEntry]) -> bytes:
        return codec.encode(AwarenessUpdate(codec.encode_awareness(list(entries))))

    def encode_state(self) -> bytes:
        """The whole document as one update (for snapshots and late joiners)."""
        return self.doc.get_update()

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(
            members=len(self.members),
            live_members=sum(1 for s in self.members.values() if s.live),
            updates_applied=self.updates_applied,
            awareness_entries=len(self._awareness),
        )


def compact_updates(blobs: Iterable[bytes]) -> bytes:
    """Merge stored updates (already accepted once) into one snapshot update.

    A structural merge (``merge_updates``), not a round trip through a Doc: a Doc would leave out
    structs it keeps pending, and with several nodes a stored update's dependency may still be
    uncommitted on another node; dropping it here would lose an acknowledged edit.
    """
    return merge_updates(*blobs)
