"""The crash journal: an update in flight when the process died is denied after the restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.crash_journal import CrashJournal

DIE_MID_APPLY = """
import os, signal, sys
from pathlib import Path
from gateway.crash_journal import CrashJournal
journal = CrashJournal.open(Path(sys.argv[1]))
journal.begin(CrashJournal.digest(b"poison"))
os.kill(os.getpid(), signal.SIGKILL)  # what a SIGSEGV inside pycrdt does to the process
"""


def test_update_in_flight_when_the_process_died_is_denied_after_restart(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", DIE_MID_APPLY, str(tmp_path)], check=False)
    assert child.returncode == -9
    journal = CrashJournal.open(tmp_path)
    assert journal.is_denied(CrashJournal.digest(b"poison"))
    assert not journal.is_denied(CrashJournal.digest(b"fine"))
    journal.close()
    again = CrashJournal.open(tmp_path)  # the deny list itself is durable
    assert again.is_denied(CrashJournal.digest(b"poison"))
    again.close()


def test_updates_that_applied_are_not_denied(tmp_path: Path) -> None:
    journal = CrashJournal.open(tmp_path)
    for update in (b"a", b"b"):
        journal.begin(CrashJournal.digest(update))
        journal.end()
    journal.close()
    reopened = CrashJournal.open(tmp_path)
    assert reopened.denied == set()
    reopened.close()


async def test_gateway_refuses_a_denied_update_with_4500(tmp_path: Path) -> None:
    from pycrdt import Doc, Map
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from tests.conftest import start_in_process, stop_in_process
    from wedsync_protocol import codec
    from wedsync_protocol.messages import SyncUpdate

    doc: Doc = Doc()  # type: ignore[type-arg]
    doc.get("core", type=Map)["venue"] = "Hall"
    poison = doc.get_update()
    journal = CrashJournal.open(tmp_path / "data")
    journal.deny(CrashJournal.digest(poison), "test")
    journal.close()
    running = await start_in_process(tmp_path / "data")
    try:
        async with connect(f"{running.ws_url}/denied") as ws:
            await ws.recv()
            await ws.send(codec.encode(SyncUpdate(poison)))
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed:
                pass
            assert ws.close_code == 4500
            assert "crashed a gateway node" in (ws.close_reason or "")
        assert running.node.statistics().updates_persisted == 0
    finally:
        await stop_in_process(running)
