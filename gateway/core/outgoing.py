"""Server messages that no single room call builds: catch-ups, refusals, drain, reset notices,
and the merges of held broadcasts and of stored history. No I/O."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence

from pycrdt import merge_updates

from gateway.core.effects import Close, Effect, Send
from gateway.core.enforcer import Verdict
from gateway.core.session import Session
from gateway.errors import GatewayError
from wedsync_protocol import codec
from wedsync_protocol.messages import (
    CATCH_UP_GZIP,
    CATCH_UP_GZIP_BYTES,
    CATCH_UP_GZIP_LEVEL,
    CATCH_UP_RESET,
    EMPTY_UPDATE,
    CatchUp,
    Drain,
    Feature,
    Reject,
)

MAX_REJECTS = 32
"""REJECT messages sent for one update; the rest of its refusals are counted in the last one."""


def catch_up_message(session: Session, epoch: int, offset: int, flags: int, update: bytes) -> bytes:
    """An encoded CATCH_UP, its update gzip-compressed when large and the client accepts it."""
    if Feature.GZIP in session.features and len(update) >= CATCH_UP_GZIP_BYTES:
        update = gzip.compress(update, compresslevel=CATCH_UP_GZIP_LEVEL, mtime=0)
        flags |= CATCH_UP_GZIP
    return codec.encode(CatchUp(epoch, offset, flags, update))


def rejects(seq: int, verdict: Verdict) -> list[Reject]:
    """One REJECT per refused change (at most MAX_REJECTS; the last one counts the rest)."""
    refusals = verdict.refusals
    messages = [Reject(seq, r.field, r.reason) for r in refusals[:MAX_REJECTS]]
    if len(refusals) > len(messages):
        last = messages[-1]
        more = f"{last.reason} (and {len(refusals) - len(messages)} more refused changes)"
        messages[-1] = Reject(seq, last.field, more)
    return messages


def drain(clients: Iterable[Session], error: GatewayError) -> list[Effect]:
    """The node is shutting down: DRAIN (proto/spec.md §4.4) to each client that asked for
    acks, then close each one with ``error`` (once its queued acks are written)."""
    notice = codec.encode(Drain(retry_ms=0))
    effects: list[Effect] = []
    for client in clients:
        if client.wants_acks:
            effects.append(Send(client, notice))
        effects.append(Close(client, error))
    return effects


def reset_notice(epoch: int) -> bytes:
    """The CATCH_UP with the RESET flag a node publishes after a history reset (§4.6): every
    other node drops the room (``receive_from_peer``)."""
    return codec.encode(CatchUp(epoch, 0, CATCH_UP_RESET, EMPTY_UPDATE))


def merge_broadcasts(updates: Sequence[bytes]) -> bytes | None:
    """One SYNC_UPDATE message holding every update of held document broadcasts, or None
    should pycrdt fail to merge updates it accepted before: the caller must then write the
    held messages one by one (a held update is never dropped)."""
    try:
        merged = merge_updates(*updates)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # pyo3 panics are BaseExceptions (DESIGN.md §7)
        return None
    return codec.SYNC_UPDATE_PREFIX + codec.write_var_bytes(merged)


def compact_updates(blobs: Iterable[bytes]) -> bytes:
    """Merge stored updates (already accepted once) into one snapshot update.

    A structural merge (``merge_updates``), not a round trip through a Doc: a Doc would leave out
    structs it keeps pending, and with several nodes a stored update's dependency may still be
    uncommitted on another node; dropping it here would lose an acknowledged edit.
    """
    return merge_updates(*blobs)
