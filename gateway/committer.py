"""Group commit: appends queued while a commit is in flight go to the store together.

The fan-out never waits for this; only acks do (DESIGN.md §5). Futures resolve in submission
order, so acks are cumulative and in order (proto/spec.md §4.2).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from gateway.errors import BackendUnavailable, LeaseLost
from gateway.ports import FENCED, Append, Author, Store
from gateway.types import RoomId

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CommitterStatistics:
    pending: int
    committed: int
    batches: int
    failures: int
    fenced: int = 0
    """Appends the store refused: their room's lease had been taken over."""


class Committer:
    """Batches appends for one Store. Run ``run()`` in a task owned by the node."""

    def __init__(self, store: Store, *, max_batch: int, max_pending: int) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._queue: deque[tuple[Append | None, asyncio.Future[int | None]]] = deque()
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._committed = self._batches = self._failures = self._fenced = 0
        self.healthy = True
        """False from a failed append until the next successful one (see /readyz)."""
        self.health_changed: Callable[[bool], None] = lambda healthy: None
        """Called when ``healthy`` changes: acks pause, or resume (proto/spec.md §4.7)."""
        self.committed: Callable[[float, int], None] = lambda seconds, appends: None
        """Called after each store transaction: its seconds (retries included) and appends."""

    @property
    def full(self) -> bool:
        """True when no more appends are accepted: the store is too far behind."""
        return len(self._queue) + self._in_flight >= self.max_pending

    def submit_nowait(
        self,
        room: RoomId,
        update: bytes | None,
        author: Author | None = None,
        fields: tuple[str, ...] = (),
        fence: int | None = None,
    ) -> asyncio.Future[int | None]:
        """Queue one append (or, with ``update=None``, a barrier).

        The future resolves with the update's offset (None for a barrier) once it and everything
        submitted before it is durable, or fails with LeaseLost when the store refused it for its
        stale ``fence``. Raises BackendUnavailable when ``max_pending`` appends are already
        waiting.
        """
        if update is not None and self.full:
            raise BackendUnavailable(
                f"{self.max_pending} appends are waiting for the store; refusing more"
            )
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        append = Append(room, update, author, fields, fence) if update is not None else None
        self._queue.append((append, future))
        self._wakeup.set()
        return future

    async def wait_flushed(self, room: RoomId) -> None:
        """Return once everything submitted before this call is durable."""
        await self.submit_nowait(room, None)

    async def run(self) -> None:
        """Commit batches until cancelled; retry a failing store with backoff (acks pause).

        Restartable (gateway/supervision.py): what is queued stays queued."""
        while True:
            while self._queue:
                await self._commit_one_batch()
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _commit_one_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        appends = [item for item, _ in batch if item is not None]
        self._in_flight = len(appends)
        started = time.perf_counter()
        try:
            offsets = iter(await self._append_with_retry(appends) if appends else [])
        except Exception as exc:  # not an outage (retried above): a bug, or nobody foresaw it.
            # Whether it was stored is unknown: no ack; the writers are closed (4002) and resend,
            # and a Yjs update applied twice changes nothing.
            failed = BackendUnavailable(f"the store failed unexpectedly: {exc!r}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failed)
            raise
        finally:
            self._in_flight = 0
        for item, future in batch:
            offset = next(offsets) if item is not None else None
            if future.done():
                continue
            if item is not None and offset is FENCED:
                future.set_exception(LeaseLost(f"room {item.room} is owned by another node now"))
                self._fenced += 1
            else:
                future.set_result(offset)
        self._committed += len(appends)
        self._batches += 1
        if appends:
            self.committed(time.perf_counter() - started, len(appends))

    async def _append_with_retry(self, appends: list[Append]) -> list[int | None]:
        try:  # fast path: no retry machinery per batch while the store is healthy
            offsets = await self.store.append(appends)
            self._set_healthy(True)
            return offsets
        except BackendUnavailable:
            self._log_failure(None)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BackendUnavailable),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0),
            before_sleep=self._log_failure,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                offsets = await self.store.append(appends)
        self._set_healthy(True)
        return offsets

    def _set_healthy(self, healthy: bool) -> None:
        if healthy is not self.healthy:
            self.healthy = healthy
            self.health_changed(healthy)

    def _log_failure(self, state: object) -> None:
        self._set_healthy(False)
        self._failures += 1
        log.warning("store_append_failed", pending=len(self._queue), attempt=self._failures)

    def statistics(self) -> CommitterStatistics:
        return CommitterStatistics(
            pending=len(self._queue) + self._in_flight,
            committed=self._committed,
            batches=self._batches,
            failures=self._failures,
            fenced=self._fenced,
        )
