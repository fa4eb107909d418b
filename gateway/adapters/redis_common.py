"""What the Redis adapters (bus, revocations) share: credential-free URLs, reconnect logging."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from tenacity import RetryCallState

log = structlog.get_logger(__name__)


def safe_url(url: str) -> str:
    """``url`` without credentials, for messages and logs."""
    return url.rpartition("@")[2]


def reconnect_logger(event: str) -> Callable[[RetryCallState], None]:
    """A tenacity ``before_sleep`` that logs each failed reconnect attempt as ``event``."""

    def log_failure(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(event, attempt=state.attempt_number, error=str(error))

    return log_failure
