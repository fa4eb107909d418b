"""Supervisor: the process's long-lived tasks, so that no single failure makes a zombie.

A node that stops serving while its process lives is the worst outcome: the orchestrator sees
a healthy process and keeps routing clients to it. So every background task of the gateway runs
under one Supervisor, in one of two ways:

- ``keep(name, run, essential=...)``: a loop that must run as long as the process does (the
  committer, the lease timer, the bus's reader and publisher, the revocation follower). If it
  raises, the failure is logged with its traceback and the loop is started again after a
  jittered exponential backoff. An essential loop that failed ``max_restarts`` times within
  ``window_seconds`` is beyond repair: the supervisor is *failed*, ``/livez`` answers 503 and
  the server exits non-zero (gateway/cli.py), so the orchestrator replaces the process.
- ``contain(name, coroutine)``: one job (a room's task, a compaction, a repair, a takeover).
  Its failure is logged and counted; it never reaches the task group it runs in.

Failures that are expected (a store or bus outage) are handled inside the tasks and never get
here; what gets here is a bug or an error nobody foresaw, and it is always logged as one.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

log = structlog.get_logger(__name__)

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]
"""Start one job under the node's supervisor: ``spawn(name, coroutine)`` (``contain``)."""


class Supervisor:
    """Restarts failed loops, contains failed jobs, and knows whether the process can serve."""

    def __init__(
        self,
        *,
        max_restarts: int = 5,
        window_seconds: float = 60.0,
        backoff_max_seconds: float = 5.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.failed: str | None = None
        """Why this process can no longer serve (None while it can): ``/livez`` reports it."""
        self.failures: Counter[str] = Counter()
        """Unexpected failures by task name (jobs and loops)."""
        self._on_failed: list[Callable[[str], None]] = []

    def on_failed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once, when the supervisor fails (the server exits)."""
        self._on_failed.append(callback)
        if self.failed is not None:
            callback(self.failed)

    def fail(self, reason: str) -> None:
        """The process can no longer serve: report it on ``/livez`` and let the server exit."""
        if self.failed is not None:
            return
        self.failed = reason
        log.critical("process_failed", reason=reason)
        for callback in self._on_failed:
            callback(reason)

    async def keep(self, name: str, run: Callable[[], Awaitable[None]], *, essential: bool) -> None:
        """Run ``run()`` until it returns or is cancelled, starting it again after a failure."""
        recent: deque[float] = deque()
        loop = asyncio.get_running_loop()

        def hopeless(state: RetryCallState) -> bool:
            now = loop.time()
            recent.append(now)
            while recent and now - recent[0] > self.window_seconds:
                recent.popleft()
            return essential and len(recent) > self.max_restarts

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # never CancelledError: a stop is a stop
            wait=wait_exponential_jitter(
                multiplier=0.05, max=self.backoff_max_seconds, jitter=0.05
            ),
            stop=hopeless,
            before_sleep=lambda state: self._restarting(name, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await run()
        except Exception as exc:  # the restart budget of an essential loop is spent
            self.failures[name] += 1
            log.error("task_failed", task=name, restarting=False, exc_info=exc)
            self.fail(
                f"{name} failed {len(recent)} times within {self.window_seconds:g} s: {exc!r}"
            )

    async def contain(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """Await ``job``; log and count its failure instead of raising it."""
        try:
            await job
        except Exception:
            self.failures[name] += 1
            log.exception("task_failed", task=name, restarting=False)

    def _restarting(self, name: str, state: RetryCallState) -> None:
        self.failures[name] += 1
        error = state.outcome.exception() if state.outcome is not None else None
        log.error("task_failed", task=name, restarting=True, exc_info=error)
