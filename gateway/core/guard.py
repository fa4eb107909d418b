"""The update guard: the only gate between client bytes and ``Doc.apply_update``.

Seam for the full structural guard (issue "Untrusted input cannot crash, stall or corrupt the
gateway"): it will walk the Yjs v1 update encoding with a bounded reader and check it against the
room's state before pycrdt sees it. Today it enforces what the foundation promises: the update is
one length-delimited payload no larger than the message limit (checked by Session.receive_data)
and is not empty.
"""

from __future__ import annotations

from gateway.errors import ProtocolError


def check_update(update: bytes) -> None:
    """Raise ProtocolError if ``update`` must not reach pycrdt."""
    if len(update) < 2:
        raise ProtocolError(f"update of {len(update)} bytes is shorter than an empty update")
