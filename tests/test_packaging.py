"""The client installs alone: ``pip install ./proto/python ./clients/python`` in a fresh virtualenv
brings none of the server's dependencies, and that virtualenv's Python syncs with a gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, RunningGateway

SERVER_ONLY = ("starlette", "uvicorn", "asyncpg", "redis")
"""Dependencies of the gateway (pyproject.toml) a client must not need."""
TIMEOUT = 240.0  # pip may build both wheels from source; a safety net, never a speed bound
WEDDING = "packaged-client"

SCRIPT = """
import asyncio, json, sys

try:
    import gateway
except ModuleNotFoundError:
    pass
else:
    sys.exit(f"the server package is importable: {gateway.__file__}")

from gateway_client import GatewayClient


async def main(url: str, wedding: str) -> None:
    async with GatewayClient(url, wedding, reconnect=False) as client:
        await asyncio.wait_for(client.wait_synced(), 30)
        version = client.create_wedding("Ada", "Grace", venue="Villa Rosa")
        await asyncio.wait_for(client.wait_durable(version), 30)
        print(json.dumps({"durable": client.protocol.durable_version, "core": client.core()}))


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def clean_env() -> dict[str, str]:
    """This process's environment without what would let the fresh venv see the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


async def run(*argv: str | Path, cwd: Path) -> str:
    """Run a command to its end; returns its stdout, fails the test with its output if it fails."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == 0, f"{argv[:4]} exited {process.returncode}:\n{err.decode()}"
    return out.decode()


@pytest.mark.slow
async def test_the_client_installs_alone_and_syncs_with_a_gateway(
    tmp_path: Path, gateway: RunningGateway
) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    # No pip inside the venv (ensurepip costs seconds): this process's pip installs into it.
    await run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    pip = (sys.executable, "-m", "pip", "--python", python)
    await run(
        *pip, "install", "-q", ROOT / "proto" / "python", ROOT / "clients" / "python", cwd=tmp_path
    )

    installed = {
        p["name"].lower()
        for p in json.loads(await run(*pip, "list", "--format=json", cwd=tmp_path))
    }
    assert {"wedsync-client", "wedsync-protocol", "pycrdt", "websockets"} <= installed
    assert sorted(installed & set(SERVER_ONLY)) == []
    assert "wedsync-gateway" not in installed

    script = tmp_path / "sync_once.py"
    script.write_text(SCRIPT, encoding="utf-8")
    result = json.loads(await run(python, script, gateway.ws_url, WEDDING, cwd=tmp_path))

    core = {"partner_a": "Ada", "partner_b": "Grace", "status": "planning", "venue": "Villa Rosa"}
    assert result == {"durable": 1, "core": core}
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        view = (await http.get(f"/v1/weddings/{WEDDING}")).json()
    assert view["core"] == core  # what the gateway holds, not only what the client says
    assert view["offset"] >= 1
