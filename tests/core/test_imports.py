"""gateway/core stays sans-I/O: proved by parsing its imports (STYLE.md habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "gateway" / "core"
CORE_MODULES = sorted(CORE.rglob("*.py"))

FORBIDDEN = ("asyncio", "socket", "redis", "asyncpg", "starlette", "uvicorn", "websockets")
FORBIDDEN_GATEWAY = ("gateway.settings",)
ALLOWED_GATEWAY = ("gateway.core", "gateway.errors", "gateway.types")
"""The only gateway modules the core may import: imports point one way (DESIGN.md §8)."""


def package_of(path: Path) -> str:
    """The dotted package containing the module at ``path`` (under the repository root)."""
    parts = path.relative_to(CORE.parents[1]).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module named by an import statement in ``source``, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def is_forbidden(module: str) -> bool:
    if module.split(".")[0] in FORBIDDEN:
        return True
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN_GATEWAY)


def gateway_imports_outside_the_core(modules: set[str]) -> set[str]:
    """Imports of gateway modules the core must not use (``gateway`` itself is the package)."""
    return {
        m
        for m in modules
        if m.startswith("gateway.")
        and not any(m == a or m.startswith(a + ".") for a in ALLOWED_GATEWAY)
    }


def test_the_core_has_modules_to_check() -> None:
    names = {p.name for p in CORE_MODULES}
    assert {"room.py", "session.py", "guard.py"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_no_io_library_or_settings(path: Path) -> None:
    modules = imported_modules(path.read_text(encoding="utf-8"), package_of(path))
    assert sorted(m for m in modules if is_forbidden(m)) == []


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_only_core_errors_and_types_from_gateway(path: Path) -> None:
    modules = imported_modules(path.read_text(encoding="utf-8"), package_of(path))
    assert sorted(gateway_imports_outside_the_core(modules)) == []


# The checks above must be able to fail: feed them sources that break the rule.


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import asyncio.events as ev",
        "from socket import socket",
        "import redis.asyncio",
        "from asyncpg import Pool",
        "from starlette.websockets import WebSocket",
        "import uvicorn",
        "from websockets.sync import client",
        "from gateway.settings import Settings",
        "from gateway import settings",
        "from .. import settings",
        "def f():\n    import asyncio",
    ],
)
def test_forbidden_import_is_detected(source: str) -> None:
    modules = imported_modules(source, "gateway.core")
    assert any(is_forbidden(m) for m in modules)


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from pycrdt import Doc",
        "from gateway.errors import ProtocolError",
        "from wedsync_protocol.messages import Hello",
        "from . import codec",
        "from typing import TYPE_CHECKING",
        "import socketserver_like_name as s",
    ],
)
def test_allowed_import_is_not_flagged(source: str) -> None:
    modules = imported_modules(source, "gateway.core")
    assert not any(is_forbidden(m) for m in modules)
    assert gateway_imports_outside_the_core(modules) == set()


@pytest.mark.parametrize(
    "source",
    ["from gateway.node import Node", "from gateway import ports", "from ..ports import Bus"],
)
def test_import_of_an_outer_layer_is_detected(source: str) -> None:
    assert gateway_imports_outside_the_core(imported_modules(source, "gateway.core"))
