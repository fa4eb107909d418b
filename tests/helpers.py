"""Test helpers: wait on conditions, never on time (STYLE.md habit 10)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 5.0, message: str = ""
) -> Any:
    """Re-run ``check`` until it returns a truthy value without raising AssertionError.

    Yields to the event loop between tries; fails after ``timeout`` seconds with the last error.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    delay = 0.001
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last = AssertionError(f"condition still false: {message or check}")
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s: {last}") from last
        await asyncio.sleep(delay)  # yield, then look again: this polls a condition
        delay = min(delay * 2, 0.05)
