"""The update guard compiled (tools/compile_guard.py, mypyc) and as pure Python decide alike.

``make install`` compiles it; the pure-Python modules are the fallback without a compiler. Both
read the same updates here: the fuzz corpus's hostile ones and a wedding's ordinary edits."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from gateway import compiled
from gateway.core import update_check
from gateway.errors import InvalidUpdate

CORE = Path(update_check.__file__).parent
CORPUS = Path(__file__).parent / "corpus"


def pure(name: str) -> ModuleType:
    """``gateway.core.<name>`` loaded from its .py source, whatever is compiled."""
    spec = importlib.util.spec_from_file_location(f"gateway.core.{name}", CORE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get(spec.name)
    sys.modules[spec.name] = module  # update_check imports update_reader: the pure one too
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is not None:
            sys.modules[spec.name] = saved
    return module


@pytest.fixture(scope="module")
def python_guard() -> ModuleType:
    saved = {n: sys.modules[n] for n in ("gateway.core.update_reader",)}
    try:
        pure("update_reader")
        return pure("update_check")
    finally:
        sys.modules.update(saved)


def updates() -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=7)
    seen: list[bytes] = []
    doc.observe(lambda event: seen.append(event.update))
    core = doc.get("core", type=Map)
    core.update({"partner_a": "Ana", "partner_b": "Bea", "status": "planning"})
    timeline = doc.get("timeline", type=Array)
    timeline.append(Map({"id": "e1", "title": "Ceremony", "start": "16:00"}))
    core["venue"] = "Quinta"
    del timeline[0]
    hostile = [bytes.fromhex(p.read_text().strip()) for p in sorted(CORPUS.glob("*.hex"))]
    return seen + hostile + [b"\x00", b"\x01\x01", b"\xff" * 12]


def verdict(module: ModuleType, update: bytes) -> str:
    try:
        summary = module.check_update(update, {})
    except InvalidUpdate as exc:
        return f"{type(exc).__name__}: {exc}"
    return repr(summary)


def test_the_compiled_guard_is_the_one_installed() -> None:
    # make install builds it on this machine (a C compiler is part of the set-up): if this
    # fails, tools/compile_guard.py failed and the gateway runs its pure-Python fallback
    assert compiled.guard_compiled(), [m.__file__ for m in compiled.GUARD]
    assert compiled.stale_extensions() == []


def test_pure_python_and_compiled_guards_decide_alike(python_guard: ModuleType) -> None:
    assert not compiled.is_compiled(python_guard)
    for update in updates():
        assert verdict(python_guard, update) == verdict(update_check, update), update.hex()
