"""The one error type of the protocol package."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes that break proto/spec.md: a truncated or over-long varUint, a length prefix past
    the end, trailing bytes, an unknown message type, invalid UTF-8.

    ``close_code`` is what a server closes the sender with (proto/spec.md §6: terminal).
    """

    close_code = 4500
    retryable = False
