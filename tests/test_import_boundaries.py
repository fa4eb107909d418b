"""The distributions import one way: protocol ← client ← load-test kit, none of them the server.

``wedsync_protocol`` (proto/python) imports the standard library only; ``gateway_client``
(clients/python) the protocol and its declared dependencies, nothing of ``gateway`` or
``loadtest``; ``loadtest`` the protocol, the client and third-party libraries, and from
``gateway`` only public server entry points, except the micro-benchmarks listed below. Proved
by parsing imports (as tests/core/test_imports.py does for the core), each rule with sources
that break it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from tests.core.test_imports import imported_modules

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "proto" / "python"
CLIENT = ROOT / "clients" / "python"
STDLIB = frozenset(sys.stdlib_module_names)

SERVER_ENTRY_POINTS = ("gateway.app", "gateway.cli")
"""What any load-test module may import from the server: what starts one (create_app, the CLI)."""
MICRO_BENCHMARKS = frozenset(
    {"bench_guard.py", "bench_enforcement.py", "bench_compression.py", "bench_hotpath.py"}
)
"""These measure server components in-process (the update guard, enforcement in a Room, the
HTTP content coding): they must import what they measure. They are not the load generator,
which talks to a server over the wire only."""


def modules_of(package_dir: Path) -> list[Path]:
    return sorted(package_dir.rglob("*.py"))


def package_of(path: Path, root: Path) -> str:
    """The dotted package containing the module at ``path`` (``root`` holds the top package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def imports_of(path: Path, root: Path) -> set[str]:
    return imported_modules(path.read_text(encoding="utf-8"), package_of(path, root))


def declared_imports(project: Path) -> set[str]:
    """Import names of a distribution's dependencies (``wedsync-protocol`` → wedsync_protocol)."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    names = set()
    for requirement in pyproject["project"]["dependencies"]:
        name = requirement.split(";")[0].split("[")[0]
        for stop in "<>=!~ ":
            name = name.split(stop)[0]
        names.add(name.strip().lower().replace("-", "_"))
    return names


def outside(modules: set[str], allowed: set[str]) -> set[str]:
    """Imports whose top-level package is neither the standard library nor ``allowed``."""
    return {m for m in modules if m and m.split(".")[0] not in STDLIB | allowed}


def server_imports(modules: set[str]) -> set[str]:
    """Imports of the server or of the test suite that are not a public entry point."""
    return {
        m
        for m in modules
        if m.split(".")[0] in ("gateway", "tests")
        and m != "gateway"
        and not any(m == e or m.startswith(e + ".") for e in SERVER_ENTRY_POINTS)
    }


def benchmark_imports(modules: set[str]) -> set[str]:
    """Imports of the whitelisted micro-benchmarks (they would bring the server in with them)."""
    stems = {f"loadtest.{name.removesuffix('.py')}" for name in MICRO_BENCHMARKS}
    return {m for m in modules if any(m == s or m.startswith(s + ".") for s in stems)}


PROTOCOL_MODULES = modules_of(PROTOCOL / "wedsync_protocol")
CLIENT_MODULES = modules_of(CLIENT / "gateway_client")
LOADTEST_MODULES = modules_of(ROOT / "loadtest")
GENERATOR_MODULES = [p for p in LOADTEST_MODULES if p.name not in MICRO_BENCHMARKS]
CLIENT_ALLOWED = {"gateway_client"} | declared_imports(CLIENT)


def test_every_package_has_modules_to_check() -> None:
    assert {"codec.py", "messages.py"} <= {p.name for p in PROTOCOL_MODULES}
    assert {"sansio.py", "sync.py", "asyncio.py"} <= {p.name for p in CLIENT_MODULES}
    assert {"client.py", "worker.py", "resume_bench.py"} <= {p.name for p in GENERATOR_MODULES}
    assert {p.name for p in LOADTEST_MODULES} >= MICRO_BENCHMARKS  # no stale whitelist entry
    assert declared_imports(PROTOCOL) == set()
    assert {"wedsync_protocol", "pycrdt", "websockets"} <= CLIENT_ALLOWED


@pytest.mark.parametrize("path", PROTOCOL_MODULES, ids=lambda p: p.name)
def test_the_protocol_imports_only_the_standard_library(path: Path) -> None:
    assert sorted(outside(imports_of(path, PROTOCOL), {"wedsync_protocol"})) == []


@pytest.mark.parametrize("path", CLIENT_MODULES, ids=lambda p: p.name)
def test_the_client_imports_only_the_protocol_and_its_declared_dependencies(path: Path) -> None:
    assert sorted(outside(imports_of(path, CLIENT), CLIENT_ALLOWED)) == []


@pytest.mark.parametrize("path", GENERATOR_MODULES, ids=lambda p: p.name)
def test_the_load_generator_imports_no_server_module(path: Path) -> None:
    modules = imports_of(path, ROOT)
    assert sorted(server_imports(modules)) == []
    assert sorted(benchmark_imports(modules)) == []


# The checks above must be able to fail: feed them sources that break each rule.


@pytest.mark.parametrize(
    "source",
    [
        "import pycrdt",
        "from gateway.errors import ProtocolError",
        "from gateway_client import ClientProtocol",
        "import loadtest.client",
        "from orjson import dumps",
        "def f():\n    import websockets",
    ],
)
def test_a_protocol_import_beyond_the_standard_library_is_detected(source: str) -> None:
    assert outside(imported_modules(source, "wedsync_protocol"), {"wedsync_protocol"})


@pytest.mark.parametrize(
    "source",
    ["from __future__ import annotations", "import gzip", "from . import codec", "import enum"],
)
def test_a_standard_library_import_of_the_protocol_is_allowed(source: str) -> None:
    assert outside(imported_modules(source, "wedsync_protocol"), {"wedsync_protocol"}) == set()


@pytest.mark.parametrize(
    "source",
    [
        "from gateway.core import codec",
        "import gateway",
        "from gateway.errors import ProtocolError",
        "from loadtest.wsclient import WsConnection",
        "import starlette",
        "from redis import asyncio",
        "import asyncpg",
        "from uvicorn import Config",
    ],
)
def test_a_client_import_of_the_server_or_the_kit_is_detected(source: str) -> None:
    assert outside(imported_modules(source, "gateway_client"), CLIENT_ALLOWED)


@pytest.mark.parametrize(
    "source",
    [
        "from pycrdt import Doc",
        "from websockets.asyncio.client import connect",
        "from wedsync_protocol.messages import Hello",
        "from .sync import ClientSync",
        "import asyncio",  # the standard library's, not gateway_client/asyncio.py
    ],
)
def test_the_client_may_import_the_protocol_and_its_dependencies(source: str) -> None:
    assert outside(imported_modules(source, "gateway_client"), CLIENT_ALLOWED) == set()


@pytest.mark.parametrize(
    "source",
    [
        "from gateway.errors import ProtocolError",
        "from gateway.http_api import compress",
        "import gateway.core.room",
        "from gateway import errors",
        "from tests.helpers import eventually",
    ],
)
def test_a_generator_import_of_server_internals_is_detected(source: str) -> None:
    assert server_imports(imported_modules(source, "loadtest"))


@pytest.mark.parametrize(
    "source", ["from loadtest.bench_guard import main", "from .bench_compression import run"]
)
def test_a_generator_import_of_a_micro_benchmark_is_detected(source: str) -> None:
    assert benchmark_imports(imported_modules(source, "loadtest"))


@pytest.mark.parametrize(
    "source",
    [
        "from gateway.app import create_app",
        "from gateway.cli import main",
        "from gateway_client.sync import ClientSync",
        "from wedsync_protocol import codec",
        "from hdrh.histogram import HdrHistogram",
        "from loadtest.wsclient import open_connection",
        "import gateway_client",
    ],
)
def test_the_generator_may_import_the_protocol_the_client_and_entry_points(source: str) -> None:
    modules = imported_modules(source, "loadtest")
    assert server_imports(modules) == set()
    assert benchmark_imports(modules) == set()
