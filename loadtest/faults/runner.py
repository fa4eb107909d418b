"""Run one fault: start the world, load it, inject, hold, heal, converge, check, report."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from loadtest.faults.checker import LogSummary, longest_gap, missing
from loadtest.faults.env import World, now, until
from loadtest.faults.nemeses import Nemesis
from loadtest.faults.recorder import DOUBLE_ACK, doc_json
from loadtest.faults.tier import Tier

WARMUP_TIMEOUT = 30.0
"""Seconds the writers may take to get their first ack before the fault (hang protection)."""


async def run_fault(nemesis: Nemesis, tier: Tier, work: Path) -> dict[str, Any]:
    """Run ``nemesis`` once; the report (``failures`` empty when every check passed)."""
    directory = work / nemesis.name
    shutil.rmtree(directory, ignore_errors=True)
    async with AsyncExitStack() as stack:
        world = await World.open(stack, tier, nemesis.needs, directory)
        try:
            return await _load_and_check(nemesis, world)
        finally:
            await world.stop_nodes()
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the stack may swallow)


async def _load_and_check(nemesis: Nemesis, world: World) -> dict[str, Any]:
    await world.create_wedding()
    await nemesis.prepare(world)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        for writer in list(world.writers):
            if writer.name.startswith("w"):
                tasks.create_task(writer.run(stop))
        first_acks = await until(_async(lambda: _each_writer_acked(world)), WARMUP_TIMEOUT)
        if not first_acks:
            world.failures.append("the writers got no ack before the fault")
        rss_before = {n.name: n.rss_mb() for n in world.nodes}
        injected = now()
        await nemesis.inject(world)
        await nemesis.hold(world)
        await nemesis.heal(world)
        healed = now()
        converged = await until(
            _async(lambda: world.converged(before=healed)), world.tier.converge_timeout
        )
        converge_s = now() - healed if converged else None
        left = world.tier.after_heal_seconds - (now() - healed)
        await asyncio.sleep(max(left, 0.0))  # the load goes on after the heal, by design
        stop.set()
    return await _check(world, nemesis, rss_before, injected, healed, converge_s)


def _async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


def _each_writer_acked(world: World) -> bool:
    return all(w.acked() for w in world.writers if w.name.startswith("w"))


async def _check(
    world: World,
    nemesis: Nemesis,
    rss_before: dict[str, float | None],
    injected: float,
    healed: float,
    converge_s: float | None,
) -> dict[str, Any]:
    failures = world.failures
    settled = await until(_async(world.converged), world.tier.converge_timeout)
    if converge_s is None or not settled:
        unacked = sum(len(w.edits) - len(w.acked()) for w in world.writers)
        failures.append(f"not converged {world.tier.converge_timeout:g} s after the heal"
                        f" ({unacked} edits unacknowledged; {world.divergence()})")  # fmt: skip
    ready = await until(_async_ready(world), world.tier.converge_timeout)
    statuses = await world.ready()
    if not ready:
        failures.append(f"/readyz after the heal: {statuses}")
    failures.extend(await world.new_joins_work())
    rss_after = {n.name: n.rss_mb() for n in world.nodes}
    for writer in world.writers:
        await writer.client.__aexit__(None, None, None)
    await world.stop_nodes()
    lost = await _lost(world)
    logs = LogSummary.read(node.log_path for node in world.nodes)
    return _report(world, nemesis, logs, lost, rss_before, rss_after, injected, healed,
                   converge_s, statuses)  # fmt: skip


def _async_ready(world: World) -> Any:
    async def check() -> bool:
        return all(code == 200 for code in (await world.ready()).values())

    return check


async def _lost(world: World) -> int:
    """Acknowledged edits missing from the store or from a replica of their wedding."""
    lost = 0
    for room, writers in world.rooms().items():
        stored = await world.stored(room)
        acked = [e for w in writers for e in w.acked()]
        gone = missing(acked, stored)
        lost += len(gone)
        if gone:
            world.failures.append(f"{len(gone)} acknowledged edits of {room} not in the store,"
                                  f" e.g. {gone[0].entry}")  # fmt: skip
        contents = [w.client.doc for w in writers]
        for writer, doc in zip(writers, contents, strict=True):
            if (absent := missing(acked, doc_json(doc))) and not gone:
                lost += len(absent)
                world.failures.append(f"{len(absent)} acked edits missing in {writer.name}")
            if doc_json(doc) != stored and writer.all_acked:
                world.failures.append(f"replica {writer.name} of {room} differs from the store")
                break
    defects: Counter[str] = Counter()
    for writer in world.writers:
        defects.update(writer.defects)
    for kind, count in sorted(defects.items()):
        world.failures.append(f"{kind}: {count} times")
    return lost


def _report(
    world: World,
    nemesis: Nemesis,
    logs: LogSummary,
    lost: int,
    rss_before: dict[str, float | None],
    rss_after: dict[str, float | None],
    injected: float,
    healed: float,
    converge_s: float | None,
    statuses: dict[str, int],
) -> dict[str, Any]:
    if logs.internal_errors:
        world.failures.append(f"{len(logs.internal_errors)} closes with 1011")
    if logs.tracebacks:
        world.failures.append(f"{len(logs.tracebacks)} exceptions logged by the gateway")
    if logs.foreign_tracebacks:
        world.notes.append(f"{len(logs.foreign_tracebacks)} non-JSON tracebacks in the logs"
                           f" ({logs.foreign_tracebacks[0]})")  # fmt: skip
    acks = [e.acked for w in world.writers for e in w.acked() if e.acked is not None]
    per_writer = [longest_gap(e.acked for e in w.acked() if e.acked is not None)
                  for w in world.writers if w.name.startswith("w")]  # fmt: skip
    return {
        "fault": nemesis.name,
        "what": nemesis.doc,
        "tier": world.tier.name,
        "edits": sum(len(w.edits) for w in world.writers),
        "acked": len(acks),
        "lost": lost,
        "double_acks": sum(w.defects[DOUBLE_ACK] for w in world.writers),
        "ack_defects": {w.name: dict(w.defects) for w in world.writers if w.defects},
        "fault_s": round(healed - injected, 2),
        "longest_ack_gap_s": round(longest_gap(acks), 3),
        "longest_writer_ack_gap_s": round(max(per_writer, default=0.0), 3),
        "converge_s": None if converge_s is None else round(converge_s, 2),
        "rss_mb_before": _rounded(rss_before),
        "rss_mb_after": _rounded(rss_after),
        "readyz_after": statuses,
        "close_codes": dict(sorted(logs.close_codes.items())),
        "internal_error_closes": logs.internal_errors[:5],
        "tracebacks": logs.tracebacks[:5],
        "foreign_tracebacks": logs.foreign_tracebacks[:5],
        "log_errors": dict(logs.errors),
        "notes": world.notes,
        **world.extra,
        "logs": [str(node.log_path) for node in world.nodes],
        "failures": world.failures,
    }


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 1) for k, v in values.items()}
