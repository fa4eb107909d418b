"""The lean queue and flag the gateway's uvicorn protocol uses in place of asyncio's."""

from __future__ import annotations

import asyncio

from gateway.adapters.uvicorn_ws import _EventQueue, _Flag


async def test_the_queue_hands_items_over_in_order_to_a_waiting_reader() -> None:
    queue = _EventQueue()
    assert queue.empty()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # the reader waits
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await reader == "a"
    assert not queue.empty()
    assert await queue.get() == "b"
    assert queue.empty()


async def test_an_item_put_as_its_reader_is_cancelled_stays_for_the_next_get() -> None:
    queue = _EventQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("kept")
    reader.cancel()  # the wake-up is lost with the reader, not the item
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    assert await queue.get() == "kept"


async def test_the_flag_wakes_every_waiter_and_forgets_them() -> None:
    flag = _Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(flag._waiters) == 3
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag._waiters == []
    assert await flag.wait() is True  # set: no wait
    flag.clear()
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert flag._waiters == []  # a cancelled waiter is not kept
