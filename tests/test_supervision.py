"""No failure of one task makes the node a zombie (gateway/supervision.py).

A loop the process needs is restarted after a failure; one that keeps failing fails the process
(``/livez`` 503, the server exits); one job's failure (a room, a compaction) is logged and the
node serves on. The failures here are errors nobody foresaw (RuntimeError from the store), not
outages, which the parts handle themselves (tests/test_cluster.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pycrdt import Map
from starlette.requests import Request

from gateway.adapters.memory_bus import MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.app import livez
from gateway.committer import Committer
from gateway.core.room import Room
from gateway.errors import BackendUnavailable
from gateway.node import Node
from gateway.ports import Append
from gateway.supervision import Supervisor
from gateway.types import NodeId, RoomId
from tests.conftest import start_in_process
from tests.helpers import eventually
from tests.test_node import (
    LIMITS,
    FakeOutlet,
    GatedStore,
    core_edit,
    created_wedding,
    member,
)
from wedsync_protocol.messages import Ack, Feature, SyncUpdate


class Broken(RuntimeError):
    """What the tests' store raises: a bug, not an outage."""


# -- the supervisor ------------------------------------------------------------------------------


async def test_a_loop_that_fails_is_started_again_until_it_returns() -> None:
    supervisor = Supervisor(backoff_max_seconds=0.01)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise Broken(f"run {runs}")

    with structlog.testing.capture_logs() as logs:
        await supervisor.keep("flaky", flaky, essential=True)
    assert runs == 3
    assert supervisor.failures["flaky"] == 2
    assert supervisor.failed is None
    failed = [e for e in logs if e["event"] == "task_failed"]
    assert [e["restarting"] for e in failed] == [True, True]
    assert all(isinstance(e["exc_info"], Broken) for e in failed)  # logged with its traceback


async def test_an_essential_loop_failing_too_often_fails_the_process() -> None:
    supervisor = Supervisor(max_restarts=3, window_seconds=60.0, backoff_max_seconds=0.01)
    told: list[str] = []
    supervisor.on_failed(told.append)
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise Broken("always")

    await supervisor.keep("committer", broken, essential=True)
    assert runs == 4  # the first run and three restarts
    assert supervisor.failed is not None
    assert "committer failed 4 times" in supervisor.failed
    assert told == [supervisor.failed]


async def test_a_loop_that_is_not_essential_never_fails_the_process() -> None:
    supervisor = Supervisor(max_restarts=1, backoff_max_seconds=0.01)
    runs = 0

    async def helper() -> None:
        nonlocal runs
        runs += 1
        if runs < 5:
            raise Broken("again")

    await supervisor.keep("helper", helper, essential=False)
    assert runs == 5
    assert supervisor.failed is None


async def test_a_cancelled_loop_is_not_started_again() -> None:
    supervisor = Supervisor(backoff_max_seconds=0.01)
    started = asyncio.Event()
    runs = 0

    async def forever() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.keep("forever", forever, essential=True))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == 1
    assert not supervisor.failures


async def test_a_failed_job_is_logged_and_not_raised() -> None:
    supervisor = Supervisor()

    async def job() -> None:
        raise Broken("one job")

    with structlog.testing.capture_logs() as logs:
        await supervisor.contain("room", job())
    assert supervisor.failures["room"] == 1
    assert [e["event"] for e in logs] == ["task_failed"]
    assert supervisor.failed is None


# -- the node's jobs and loops --------------------------------------------------------------------


class BrokenStore(GatedStore):
    """The tests' store, whose next ``broken_appends`` appends and ``broken_compactions``
    compactions raise an unforeseen error."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.broken_appends = 0
        self.broken_compactions = 0

    async def append(self, batch: Sequence[Append]) -> list[int]:
        if self.broken_appends:
            self.broken_appends -= 1
            raise Broken("the store's driver has a bug")
        return await super().append(batch)

    async def compact(self, room: RoomId, snapshot: bytes, through: int) -> None:
        if self.broken_compactions:
            self.broken_compactions -= 1
            raise Broken("compaction has a bug")
        await super().compact(room, snapshot, through)


@pytest.fixture
async def broken_store(tmp_path: Path) -> Any:
    async with SqliteStore.open(tmp_path) as inner:
        yield BrokenStore(inner)


def core_of_room(room: Room) -> dict[str, Any]:
    return dict(room.doc.get("core", type=Map).to_py() or {})


def node_on(store: BrokenStore, **settings: Any) -> Node:
    return Node(
        node_id=NodeId("node-1"),
        bus=MemoryBus(NodeId("node-1")),
        store=store,
        limits=LIMITS,
        supervisor=Supervisor(backoff_max_seconds=0.01),
        **settings,
    )


async def test_a_room_task_that_fails_while_unloading_leaves_the_node_serving(
    broken_store: BrokenStore,
) -> None:
    async with node_on(broken_store, room_idle_seconds=0.05) as node:
        outlet = FakeOutlet()
        first, session = await member(node, outlet)
        node.receive(first, session, SyncUpdate(created_wedding()))
        await eventually(lambda: node.statistics().committer.committed == 1)
        broken_store.broken_compactions = 1
        node.leave(first, session)  # idle: the unload compacts, and compaction raises
        await eventually(lambda: node.supervisor.failures["room"] == 1)
        assert node.supervisor.failed is None
        assert node.readiness()["accepting"]
        again = FakeOutlet()
        slot, session = await member(node, again)  # the room loads again, from the log
        assert slot.room is not None
        assert slot is not first
        assert core_of_room(slot.room)["partner_a"] == "Ana"


async def test_an_append_that_fails_unexpectedly_closes_its_writer_and_acks_resume(
    broken_store: BrokenStore,
) -> None:
    async with node_on(broken_store, room_idle_seconds=60.0) as node:
        writer = FakeOutlet()
        slot, session = await member(node, writer, Feature.ACKS)
        broken_store.broken_appends = 1
        first = created_wedding()
        node.receive(slot, session, SyncUpdate(first))
        await eventually(lambda: writer.closed is not None)
        assert isinstance(writer.closed, BackendUnavailable)  # 4002: it reconnects, resends
        assert not writer.messages(Ack)
        await eventually(lambda: node.supervisor.failures["committer"] == 1)
        node.leave(slot, session)
        again = FakeOutlet()
        slot, session = await member(node, again, Feature.ACKS)  # the reconnect
        node.receive(slot, session, SyncUpdate(first))  # what was not acknowledged, again
        node.receive(slot, session, SyncUpdate(core_edit(first, 8, venue="Old Mill")))
        await eventually(lambda: len(again.messages(Ack)) == 2)
        assert again.closed is None
        assert node.supervisor.failed is None
        assert slot.room is not None
        assert core_of_room(slot.room)["venue"] == "Old Mill"


# -- the process -----------------------------------------------------------------------------------


async def test_livez_reports_a_failed_process() -> None:
    supervisor = Supervisor()
    request = Request({"type": "http", "method": "GET", "headers": [], "state": {}})
    request.state.supervisor = supervisor
    assert (await livez(request)).status_code == 200
    supervisor.fail("the committer failed 6 times within 60 s")
    answer = await livez(request)
    assert answer.status_code == 503
    assert json.loads(bytes(answer.body)) == {
        "status": "failed",
        "reason": "the committer failed 6 times within 60 s",
    }


async def test_a_committer_beyond_repair_stops_the_server_after_draining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_run(self: Committer) -> None:
        await asyncio.sleep(0)
        raise Broken("the committer has a bug")

    running = await start_in_process(tmp_path / "data", drain_seconds=1.0)
    supervisor = running.app.supervisor
    supervisor.backoff_max_seconds = 0.01
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        assert (await http.get("/livez")).json() == {"status": "ok"}
    monkeypatch.setattr(Committer, "run", broken_run)
    node = running.app.node
    node._committer_task.cancel()  # start the committer again, broken from now on
    node._committer_task = node.tasks.create_task(
        supervisor.keep("committer", node.committer.run, essential=True)
    )
    _, task = running.server
    await asyncio.wait_for(task, timeout=60)  # the server stops on its own (a deadline only)
    assert supervisor.failed is not None
    assert supervisor.failed.startswith("committer failed")
    assert node.rooms.stopping.is_set()  # it drained before it stopped
