"""Which modules run compiled (tools/compile_guard.py, mypyc) and which as pure Python."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

from gateway.core import update_check, update_reader

GUARD: tuple[ModuleType, ...] = (update_reader, update_check)


def is_compiled(module: ModuleType) -> bool:
    return any(str(module.__file__).endswith(suffix) for suffix in EXTENSION_SUFFIXES)


def guard_compiled() -> bool:
    """Whether the update guard runs compiled (both modules), as ``make install`` builds it."""
    return all(is_compiled(module) for module in GUARD)


def stale_extensions() -> list[Path]:
    """Compiled guard modules older than their source: edited since ``make install``."""
    stale = []
    for module in GUARD:
        if is_compiled(module):
            extension = Path(str(module.__file__))
            source = extension.parent / (module.__name__.rsplit(".", 1)[-1] + ".py")
            if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
                stale.append(extension)
    return stale
