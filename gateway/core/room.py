"""CRDT state of one room (wedding) on this node. No I/O: every call returns effects."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from pycrdt import Doc, get_state, get_update, merge_updates

from gateway.core.awareness import AwarenessTable, awareness_message, check_json
from gateway.core.callbacks import weak_callback
from gateway.core.effects import (
    Broadcast,
    Close,
    Effect,
    Forward,
    HistoryReset,
    Persist,
    Poisoned,
    PositionMoved,
    Publish,
    ReadLog,
    Refused,
    RepairWanted,
    Send,
)
from gateway.core.enforcer import Enforcer, Refusal, Unjudgeable, Verdict
from gateway.core.guard import Guard
from gateway.core.journal import ApplyJournal
from gateway.core.limits import Limits
from gateway.core.outgoing import catch_up_message, rejects
from gateway.core.policy import Awareness, Grant, Timeline
from gateway.core.session import Session, SessionState
from gateway.core.update_check import UpdateSummary
from gateway.errors import (
    InvalidState,
    MissingReference,
    ProtocolError,
    RoomPoisoned,
    RoomReset,
    WireProtocolError,
    as_gateway_error,
)
from gateway.types import RoomId
from wedsync_protocol import codec
from wedsync_protocol.codec import decode_state_vector, encode_state_vector
from wedsync_protocol.messages import (
    CATCH_UP_RESET,
    EMPTY_UPDATE,
    EXTENSION_VERSION,
    Ack,
    Auth,
    AwarenessUpdate,
    CatchUp,
    Drain,
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

POSITION_MOVED = PositionMoved()
EMPTY_STATE_VECTOR = b"\x00"


class Observer(Protocol):
    """Takes one measurement (gateway/telemetry.py ``Histogram``)."""

    def observe(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class PhaseTimers:
    """Where a judged client update's time goes, in seconds of ``clock``: the guard's reading,
    pycrdt's apply, the role and schema enforcement (its verdict, re-assertions, the undo)."""

    clock: Callable[[], float]
    guard: Observer
    apply: Observer
    enforce: Observer
    every: int = 1
    """Time one judged update in this many, per room (the clock pairs cost more than the rest
    of the metrics of an edit; a sample shows the distribution as well)."""


@dataclass(frozen=True, slots=True)
class RoomStatistics:
    members: int
    live_members: int
    updates_applied: int
    awareness_entries: int


class Room:
    """A room's Doc, awareness table and members. Call it from one task only."""

    def __init__(
        self,
        room_id: RoomId,
        history: Iterable[bytes],
        *,
        limits: Limits,
        enforce: bool = True,
        epoch: int = 1,
        position: int = 0,
        journal: ApplyJournal | None = None,
    ) -> None:
        """Build the room's Doc from its stored ``history`` (snapshot, then log updates).

        ``enforce=False`` skips role and schema checks (``loadtest/bench_enforcement.py``
        measures their cost with it); the gateway always enforces. ``journal`` brackets every
        client update (the node's store-backlog check and crash journal).
        """
        self.id = room_id
        self.limits = limits
        self.journal = journal
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
        # Weakly: the Doc must not keep its Room alive (callbacks.py). pycrdt's Doc also holds
        # itself through its observer, in Rust, out of the cycle collector's sight: the observer
        # is removed when the Room goes, or the Doc and all its memory would stay forever.
        self._subscription = self.doc.observe(weak_callback(self._on_change))
        weakref.finalize(self, self.doc.unobserve, self._subscription)
        self.enforcer = Enforcer(self.doc) if enforce else None
        self.timers: PhaseTimers | None = None
        """Times the phases of judged updates when set (the node's metrics)."""
        self._untimed = 0
        """Judged updates to go until the next timed one."""
        self.refusals = 0
        self.epoch = epoch
        """The history generation of the stored log this room was built from (proto §4.6)."""
        self.position = position
        """Every stored update up to this offset is in the Doc: the loaded history, then this
        node's own commits while their offsets follow on without a gap (``advance``)."""
        self.position_final = False
        """A gap showed another node appending: ``position`` no longer advances."""
        self.peer_changes = 0
        """Changes applied from other nodes or a repair since the room was built."""
        self.members: dict[int, Session] = {}
        self.poisoned = False
        self.updates_applied = 0
        self.awareness = AwarenessTable()
        self.judging = True
        """This node is the room's owner and judges its updates (DESIGN.md §2). False on a node
        that relays them to the owner: a client update is checked structurally and forwarded
        (``Forward``); the owner's published result is applied like any peer message."""

    # -- membership ---------------------------------------------------------------------------

    def join(self, session: Session) -> list[Effect]:
        """Add ``session``; returns the server's sync step 1 and the awareness states for it."""
        if session.state is not SessionState.CONNECTING:
            raise InvalidState(f"{session} joined room {self.id} twice")
        session.joined()
        self.members[session.id] = session
        effects: list[Effect] = [Send(session, codec.encode(SyncStep1(self.doc.get_state())))]
        if self.awareness and session.receives_awareness:
            effects.append(Send(session, awareness_message(self.awareness.entries())))
        return effects

    def leave(self, session: Session) -> list[Effect]:
        """Remove ``session``; its awareness entries are removed for everyone else."""
        if self.members.pop(session.id, None) is None:
            return []
        session.left()
        # the awareness entries it owned (the guard made it claim each one it set)
        gone = self.awareness.remove(session.owned_client_ids)
        self.guard.release(session)
        if not gone:
            return []
        data = awareness_message(gone)
        return [Broadcast(data, exclude=None, live_only=False, awareness=True), Publish(data)]

    def release_claims(self, session: Session) -> None:
        """A client of another node (a proxy, gateway/relay.py) went: its client ids are free."""
        self.guard.release(session)

    @property
    def empty(self) -> bool:
        return not self.members

    # -- messages from clients ----------------------------------------------------------------

    def receive(self, session: Session, message: Message) -> list[Effect]:
        """Handle one decoded message from a member; returns what the driver must do.

        The one dispatch on a client message's type (the connection keeps only AUTH). Raises a
        GatewayError when the client must be closed with its code.
        """
        match message:
            case SyncUpdate(update):
                return self._receive_update(session, update, False)
            case SyncStep1(state_vector):
                session.went_live()  # later updates reach it by broadcast
                update = self.doc.get_update(state_vector)
                return [Send(session, codec.encode(SyncStep2(update)))]
            case SyncStep2(update):
                return self._receive_update(session, update, True)
            case AwarenessUpdate(payload):
                return self._apply_client_awareness(session, payload)
            case QueryAwareness():
                entries = self.awareness.entries() if session.receives_awareness else ()
                return [Send(session, awareness_message(entries))]
            case Hello(_, features):
                accepted = session.accept(features)
                return [Send(session, codec.encode(Hello(EXTENSION_VERSION, accepted)))]
            case Auth():  # the connection handles tokens before the room sees a message
                raise InvalidState("an auth message reached the room")
            case Resume():
                return [ReadLog(session, message)]  # the driver reads, then calls catch_up
            case Ack() | Reject() | Drain() | Status() | CatchUp() | Position():
                return [Close(session, ProtocolError(f"{type(message).__name__} is server-only"))]
            case _:
                assert_never(message)

    def _receive_update(self, session: Session, update: bytes, catch_up: bool) -> list[Effect]:
        """A sync update or step 2 from a client: judged here when this node owns the room,
        else checked structurally and forwarded to the owner."""
        if not self.judging:
            if update != EMPTY_UPDATE:
                self.guard.check_structure(update)  # raises: nothing forwarded, not even a seq
            elif not session.wants_acks:
                return []
            return [Forward(session, session.next_seq(), update, catch_up)]
        return self.judge(session, None, update, catch_up)

    def judge(
        self, session: Session, seq: int | None, update: bytes, catch_up: bool
    ) -> list[Effect]:
        """Judge and apply ``session``'s update number ``seq`` (a member's, counted here when
        None, or one a relaying node forwarded for its client), inside the journal's brackets:
        poisoning and missing references become effects (the room's and the node's business,
        not the connection's), every other refusal raises."""
        journal = self.journal
        if journal is not None:
            journal.begin_apply(update)  # may refuse it: nothing is applied, not even a seq
        try:
            if seq is None:
                seq = session.next_seq()
            return self._apply_client_update(session, seq, update, catch_up)
        except RoomPoisoned as exc:
            return [Poisoned(exc, session)]
        except MissingReference as exc:
            return [RepairWanted(), Close(session, exc)]
        finally:
            if journal is not None:
                journal.end_apply()

    def _apply_client_update(
        self, session: Session, seq: int, update: bytes, catch_up: bool
    ) -> list[Effect]:
        if update == EMPTY_UPDATE:
            ack_to = session if session.wants_acks else None
            return [Persist(None, ack_to, seq)] if ack_to else []
        timers = self.timers
        if timers is not None:
            if self._untimed:
                self._untimed -= 1
                timers = None
            else:
                self._untimed = timers.every - 1
        t0 = t1 = t2 = timers.clock() if timers is not None else 0.0
        summary = self.guard.check_client_update(
            session, update, session.last_receive, catch_up=catch_up
        )
        new = self.guard.adds_structs(summary)
        grant = session.grant
        enforcer = self.enforcer
        if timers is not None:
            t1 = t2 = timers.clock()
            timers.guard.observe(t1 - t0)
        if enforcer is None:
            verdict = Verdict()
            changed = self._apply_contained(update) or new
        else:
            # an entry deletion: keep the entries, to name them and to put back a refused one
            deletes = summary.deletes and self.guard.deletes_in(summary, "timeline")
            before = enforcer.entries_before(grant) if deletes else None
            enforcer.start()
            try:
                # pycrdt fires no event for structs it keeps pending (a missing dependency):
                # they are new all the same, and must be shared and stored, or they are lost
                # when it arrives (and judged then, as changes of the update completing them)
                changed = self._apply_contained(update) or new
            finally:
                if timers is not None:
                    t2 = timers.clock()
                    timers.apply.observe(t2 - t1)
                try:
                    verdict = enforcer.judge(grant, before)
                except Unjudgeable as exc:
                    self.poisoned = True
                    raise RoomPoisoned(f"{exc}; the room is reset", update) from exc
        effects = self._share(session, seq, update, summary, verdict, changed, catch_up)
        if timers is not None:
            timers.enforce.observe(timers.clock() - t2)  # the verdict, and what it asks for
        return effects

    def _share(
        self,
        session: Session,
        seq: int,
        update: bytes,
        summary: UpdateSummary,
        verdict: Verdict,
        changed: bool,
        catch_up: bool,
    ) -> list[Effect]:
        """What to do with a judged update: share it as it came, or the Doc's compensated
        result, persist it, and tell the sender what was refused."""
        ack_to = session if session.wants_acks else None
        grant = session.grant
        enforcer = self.enforcer
        if not changed:
            # An echo or a resend: nothing to share. A client that asked for acks still gets
            # a resend stored: the Doc may hold it only from a peer that died before committing
            # it (a failover resend), and an ack must mean durable here. A sync step 2 that
            # changes nothing is not stored (it carries the whole delete set, on every
            # reconnect); clients resend what they need acknowledged as updates (§4.3).
            stored = None if catch_up else update
            return [Persist(stored, ack_to, seq, grant.author)] if ack_to else []
        rights = grant.rights
        if not rights.writes and not verdict.refusals and enforcer is not None:
            # no event (e.g. writes into a deleted entry), still a write
            verdict.refusals.append(Refusal("document", f"role {grant.role} may not write"))
        reasserted = [] if verdict.refusals else self._reassert(summary, grant, verdict)
        fields = (*verdict.fields, *reasserted)
        # A role that may not write everything never has its bytes shared as they came: a write
        # into a deleted entry fires no event to judge, and its values must not travel on.
        trusted = rights.core and rights.timeline is Timeline.ALL
        if (
            not verdict.refusals
            and not reasserted
            and (trusted or enforcer is None or self._pending(summary))
        ):
            # (an update kept pending is shared as it came: it is judged when it integrates)
            self.guard.record(summary)
            data = codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(update)
            return [
                Broadcast(data, session, True, False, update),
                Publish(data, session),
                Persist(update, ack_to, seq, grant.author, fields),
            ]
        # Share what the Doc now holds instead of the client's bytes: the refused content is
        # collected by then (tombstones only), and the sender gets the compensation too.
        shared = self._compensate(verdict, summary, before=encode_state_vector(self.guard.clocks))
        self.guard.record(self.guard.summarize_trusted(shared))
        data = codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(shared)
        if not verdict.refusals:  # accepted as a whole: the sender has it all already,
            sender = None if reasserted else session  # but for a re-assertion
            return [
                Broadcast(data, sender, True, False, shared),
                Publish(data, sender),
                Persist(shared, ack_to, seq, grant.author, fields),
            ]
        effects: list[Effect] = [
            Broadcast(data, None, True, False, shared),
            Publish(data),
            Refused(session, len(verdict.refusals), tuple(verdict.refusals)),  # REJECTs follow
        ]
        if session.wants_rejects:
            effects.extend(Send(session, codec.encode(m)) for m in rejects(seq, verdict))
        effects.append(Persist(shared, ack_to, seq, grant.author, fields))
        return effects

    def _pending(self, summary: UpdateSummary) -> bool:
        """Whether pycrdt keeps part of the update pending (its Doc lacks some of its clocks)."""
        state = decode_state_vector(self.doc.get_state())
        return any(end > state.get(c, 0) for c, (_, end) in summary.clients.items())

    def _reassert(self, summary: UpdateSummary, grant: Grant, verdict: Verdict) -> list[str]:
        """Write again the accepted values the update wrote that pycrdt hid: core values behind
        one of the room's undos (``Enforcer.reassert``), entry values written into the deleted
        original of an entry the room put back (``Enforcer.carry``, which adds to ``verdict``
        the refusals of what it may not carry); returns the fields written."""
        enforcer = self.enforcer
        if enforcer is None:
            return []
        if not (enforcer.undone and summary.core_writes) and not enforcer.moved:
            return []
        if self._pending(summary):  # judged when it integrates
            return []
        try:
            # and what it wrote into an entry whose refused deletion the room undid
            hidden = enforcer.reassert(grant, summary)
            return [*hidden, *enforcer.carry(grant, summary, verdict.refusals)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self.poisoned = True
            raise RoomPoisoned(f"a hidden write could not be re-asserted: {exc!r}", b"") from exc

    def _compensate(self, verdict: Verdict, summary: UpdateSummary, *, before: bytes) -> bytes:
        """Undo the refused changes; return everything the room gained since ``before``."""
        self.refusals += len(verdict.refusals)
        try:
            if verdict.compensates and self.enforcer is not None:
                self.enforcer.compensate(verdict, summary)
            return self.doc.get_update(before)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self.poisoned = True
            raise RoomPoisoned(f"a refused change could not be undone: {exc!r}", b"") from exc

    def _apply_client_awareness(self, session: Session, payload: bytes) -> list[Effect]:
        try:
            entries = codec.decode_awareness(payload, max_entries=self.limits.max_awareness_entries)
        except WireProtocolError as exc:
            raise as_gateway_error(exc) from None
        if session.grant.rights.awareness is not Awareness.PUBLISH:
            if not session.wants_rejects:
                return []
            reason = f"role {session.grant.role} may not publish awareness"
            return [Send(session, codec.encode(Reject(0, "awareness", reason)))]
        for entry in entries:
            if len(entry.state) > self.limits.max_awareness_state_bytes:
                raise ProtocolError(
                    f"awareness state of {len(entry.state)} characters exceeds the limit of "
                    f"{self.limits.max_awareness_state_bytes}"
                )
            check_json(entry.state, max_depth=self.limits.max_awareness_depth)
        changing = self.awareness.changes(entries)
        if not changing:
            return []
        # a connection sets or clears only its own entries (4409 for another's)
        self.guard.claim(session, {e.client_id for e in changing}, session.last_receive)
        self.awareness.apply(changing)
        data = codec.encode(AwarenessUpdate(payload))
        return [Broadcast(data, exclude=session, live_only=False, awareness=True), Publish(data)]

    # -- resuming (proto/spec.md §4.6) -------------------------------------------------------------

    def catch_up(
        self,
        session: Session,
        resume: Resume,
        missed: Sequence[bytes] | None = None,
        missed_through: int = 0,
        in_flight: int = 0,
    ) -> list[Effect]:
        """Answer RESUME with one CATCH_UP holding everything the client lacks.

        ``missed``: the stored updates after the client's offset, read through ``missed_through``
        (None when not read). They are a candidate only when provably complete: same epoch, no
        change from another node since the room was built, nothing of this node still waiting
        for the store, and the read reaches this room's position. Then the smaller of their
        merge and the state-vector diff is sent (the diff carries the Doc's whole delete set,
        the merge only the deletions the client missed). A client of another epoch gets the
        whole document with the RESET flag: its state is of a history that no longer exists.
        """
        session.went_live()
        if resume.epoch not in (0, self.epoch):
            update = self.doc.get_update()
            data = catch_up_message(session, self.epoch, self.position, CATCH_UP_RESET, update)
            return [Send(session, data)]
        update = self.doc.get_update(resume.state_vector)
        complete = (
            missed is not None
            and resume.epoch == self.epoch
            and resume.offset <= self.position
            and missed_through == self.position
            and self.peer_changes == 0
            and in_flight == 0
        )
        if complete and missed:
            merged = get_update(merge_updates(*missed), resume.state_vector)
            if len(merged) < len(update):
                update = merged
        elif complete:  # nothing was stored since the client's position
            update = EMPTY_UPDATE
        return [Send(session, catch_up_message(session, self.epoch, self.position, 0, update))]

    def durable(self, session: Session | None, seq: int, offset: int | None) -> list[Effect]:
        """A Persist is durable at ``offset`` (None for one without an update): the ACK for
        ``session`` (proto/spec.md §4.2), and PositionMoved when the room's position advanced."""
        effects: list[Effect] = []
        if session is not None and seq > session.acked:  # a relayed ACK may have covered it
            session.acked = seq
            effects.append(Send(session, codec.encode(Ack(seq))))
        if offset is not None and self.advance(offset):
            effects.append(POSITION_MOVED)
        return effects

    def advance(self, offset: int) -> bool:
        """This node's append got ``offset``; returns whether ``position`` moved."""
        if self.position_final or offset <= self.position:
            return False
        if offset != self.position + 1:  # another node appended in between
            self.position_final = True
            return False
        self.position = offset
        return True

    def position_message(self) -> bytes:
        return codec.encode(Position(self.epoch, self.position))

    # -- messages from peers (the bus) --------------------------------------------------------

    def receive_from_peer(self, data: bytes, sender: Session | None = None) -> list[Effect]:
        """Apply one message published by another node: broadcast locally, never republish.

        ``sender``: the local client whose forwarded update the owner published (it has it)."""
        message = codec.decode(data)
        match message:
            case SyncUpdate(update):
                try:
                    if not self._apply_trusted(update):
                        return []
                except RoomPoisoned as exc:
                    return [Poisoned(exc, None)]
                self.peer_changes += 1
                return [Broadcast(data, sender, True, False, update)]
            case CatchUp(epoch, _, flags) if flags & CATCH_UP_RESET:
                reset = RoomReset(f"the wedding's history was reset (epoch {epoch}); reconnect")
                return [HistoryReset(reset)]
            case AwarenessUpdate(payload):
                entries = codec.decode_awareness(payload, max_entries=1 << 16)
                changing = self.awareness.changes(entries)
                self.awareness.apply(changing)
                if changing:
                    return [Broadcast(data, exclude=None, live_only=False, awareness=True)]
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
        if not blobs or self.poisoned:
            return []
        missing = get_update(merge_updates(*blobs), self.doc.get_state())
        if missing == EMPTY_UPDATE:
            return []
        before = self.doc.get_state()
        try:
            if not self._apply_trusted(missing):
                return []
        except RoomPoisoned as exc:
            return [Poisoned(exc, None)]
        self.peer_changes += 1
        gained = self.doc.get_update(before)
        data = codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(gained)
        return [Broadcast(data, None, True, False, gained)]

    def unstored(self, blobs: Sequence[bytes]) -> bytes | None:
        """What this Doc holds beyond the stored history ``blobs`` (None: nothing): on a node
        that becomes the owner, updates the previous owner accepted and published but had not
        committed when it died. The new owner stores them (judged already, by the owner of
        the time)."""
        stored = get_state(merge_updates(*blobs)) if blobs else EMPTY_STATE_VECTOR
        if decode_state_vector(stored) == decode_state_vector(self.doc.get_state()):
            return None
        return self.doc.get_update(stored)

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
        except WireProtocolError as exc:  # checked elsewhere, unreadable here: rebuild the room
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

    def encode_state(self) -> bytes:
        """The whole document as one update (for snapshots and late joiners)."""
        return self.doc.get_update()

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(
            members=len(self.members),
            live_members=sum(1 for s in self.members.values() if s.live),
            updates_applied=self.updates_applied,
            awareness_entries=len(self.awareness),
        )
