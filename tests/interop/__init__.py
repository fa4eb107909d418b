"""Interop tests: the gateway driven by clients nobody here wrote (npm yjs, pycrdt's Provider).

Shared helpers: running the Node scripts in ``tests/interop/js``, reading a document as plain
JSON and its state vector, and keeping a room loaded while a test inspects it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Decoder, Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
NODE_PACKAGES = ("yjs", "y-websocket", "y-protocols", "lib0", "ws")
STOCK_CLIENT_COMPLAINTS = (
    "Unable to compute message",  # y-websocket got a message type it does not know
    "Permission denied",  # y-websocket got an auth message refusing access
)
SCRIPT_DEADLINE = 20.0
"""Seconds before a hung script is killed: protection against hangs, not a performance bound."""


def require_node() -> str:
    """The ``node`` executable, after checking that ``npm ci`` installed the client packages."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the interop tests need Node.js 20+ and `npm ci`")
    missing = [name for name in NODE_PACKAGES if not (ROOT / "node_modules" / name).is_dir()]
    if missing:
        pytest.fail(
            f"node_modules lacks {', '.join(missing)}: run `npm ci` in {ROOT} "
            "(`make test` does it) before running the interop tests"
        )
    return node


@dataclass
class ScriptRun:
    """What a Node script printed: its result (last stdout line) and any earlier lines."""

    result: dict[str, Any]
    lines: list[dict[str, Any]]
    stderr: str


async def run_script(script: str, url: str, room: str, *args: str) -> ScriptRun:
    """Run ``tests/interop/js/<script>`` against ``url``/``room``; fail unless it reports ok."""
    process = await start_script(script, url, room, *args)
    return await finish_script(process, script)


async def start_script(script: str, url: str, room: str, *args: str) -> asyncio.subprocess.Process:
    node = require_node()
    return await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / script),
        url,
        room,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def script_running(
    script: str, url: str, room: str, *args: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A script running in the background; killed if the block fails before finishing it."""
    process = await start_script(script, url, room, *args)
    try:
        yield process
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


async def read_event(process: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """Read the script's stdout up to the line ``{"event": event, ...}`` and return it."""
    assert process.stdout is not None
    async with asyncio.timeout(SCRIPT_DEADLINE):
        while line := await process.stdout.readline():
            if not line.startswith(b"{"):
                continue  # not ours: a library's console output
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == event:
                return message
            if "ok" in message:
                pytest.fail(f"script finished before {event!r}: {message}")
    pytest.fail(f"script exited before printing {event!r}")


async def finish_script(process: asyncio.subprocess.Process, script: str) -> ScriptRun:
    """Close the script's stdin, wait for it to exit, and parse what it printed."""
    try:
        async with asyncio.timeout(SCRIPT_DEADLINE):
            stdout, stderr = await process.communicate(b"")
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{script} did not finish within {SCRIPT_DEADLINE}s")
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    text = stderr.decode()
    if not lines:
        pytest.fail(f"{script} printed nothing (exit {process.returncode}); stderr:\n{text}")
    result = lines[-1]
    if process.returncode != 0 or not result.get("ok"):
        pytest.fail(
            f"{script} failed (exit {process.returncode}): {result.get('error')}\n"
            f"clients: {json.dumps(result.get('clients'))[:2000]}\nstderr:\n{text}"
        )
    for complaint in STOCK_CLIENT_COMPLAINTS:
        assert complaint not in text, f"{script}: a stock client complained:\n{text}"
    return ScriptRun(result=result, lines=lines[:-1], stderr=text)


# -- documents ------------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Plain JSON with JS numbers made comparable: pycrdt reads every number as a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(key): normalize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize(item) for item in value]
    return value


def canonical(value: Any) -> str:
    """Compare JSON as text: key order ignored, but ``true`` never equals ``1``."""
    return json.dumps(normalize(value), sort_keys=True)


def doc_json(doc: Doc[Any]) -> dict[str, Any]:
    """A wedding document as JSON: Y.Map 'core' and Y.Array 'timeline' of Y.Map."""
    core = doc.get("core", type=Map)
    timeline = doc.get("timeline", type=Array)
    return {"core": normalize(core.to_py() or {}), "timeline": normalize(timeline.to_py() or [])}


def decode_state_vector(encoded: bytes) -> dict[str, int]:
    """{client id: clock} from an encoded state vector (the byte order of clients varies)."""
    decoder = Decoder(encoded)
    count = decoder.read_var_uint()
    pairs = [(decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(count)]
    return {str(client): clock for client, clock in sorted(pairs)}


def state_vector(doc: Doc[Any]) -> dict[str, int]:
    return decode_state_vector(doc.get_state())


def doc_from_update(update: bytes) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return doc


def assert_same_document(expected: Doc[Any], actual: Doc[Any], what: str) -> None:
    assert canonical(doc_json(actual)) == canonical(doc_json(expected)), what
    assert state_vector(actual) == state_vector(expected), f"{what}: state vectors"


def assert_clients_match(clients: list[dict[str, Any]], server: Doc[Any]) -> None:
    """Each JS client's reported document equals the others' and the server's.

    Checks the JSON, the decoded state vector (also re-decoded here from the encoded bytes), and
    that pycrdt decodes the client's full update into the server's document.
    """
    server_json = canonical(doc_json(server))
    server_sv = state_vector(server)
    for client in clients:
        name = client["name"]
        assert client["closes"] == [], f"the server closed {name}'s socket: {client['closes']}"
        assert client["errors"] == [], f"{name} saw socket errors: {client['errors']}"
        assert canonical(client["json"]) == server_json, f"{name}'s document differs from server"
        assert {str(k): v for k, v in client["stateVector"].items()} == server_sv, name
        encoded_sv = decode_state_vector(base64.b64decode(client["stateVectorBase64"]))
        assert encoded_sv == server_sv, f"{name}'s encoded state vector differs from the server's"
        rebuilt = doc_from_update(base64.b64decode(client["updateBase64"]))
        assert_same_document(server, rebuilt, f"{name}'s full update, decoded by pycrdt")


# -- keeping a room loaded ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def hold_room(url: str) -> AsyncIterator[ClientConnection]:
    """A silent member of the room at ``url``, so the room stays loaded while a test reads it.

    It never sends anything (so it never takes part in sync) and discards what it receives.
    """
    async with connect(url, proxy=None, compression=None) as ws:

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass

        task = asyncio.create_task(drain())
        try:
            yield ws
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
