"""Compile the update guard with mypyc (``make install`` runs this; DESIGN.md §10).

The guard reads every update in Python (``gateway/core/update_reader.py`` and
``update_check.py``, ~18 % of the gateway's CPU under steady-1000, loadtest/README.md
"Profile"). mypyc compiles the same typed source into C extensions written next to it
(``*.cpython-*.so``, git-ignored), which Python imports in place of the ``.py`` files: 1.5-1.8x
faster per typical edit (``python -m loadtest.bench_guard``). Without a compiler, or after
``make clean-compiled``, the pure-Python modules run unchanged; ``gateway serve`` logs which.

Usage: ``.venv/bin/python tools/compile_guard.py [--root DIR]``: DIR holds the ``gateway``
package to compile in place (default: this repository; the Dockerfile passes the installed
package's site-packages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup

MODULES = ["gateway/core/update_reader.py", "gateway/core/update_check.py"]
"""Compiled; everything they import stays interpreted (their exceptions live in
gateway/errors.py: mypyc does not keep an exception subclass's class attributes)."""
REPOSITORY = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Compile the update guard with mypyc.")
    parser.add_argument("--root", type=Path, default=REPOSITORY, help="where gateway/ is")
    root = parser.parse_args().root.resolve()
    build = REPOSITORY / "build" / "mypyc" if root == REPOSITORY else root / "build-mypyc"
    # from scratch: mypyc's incremental build, after one module changed, emitted C that calls
    # the other module's enums as native classes, and the compiler refused it
    for stale in (build, root / "build" / "gateway"):  # mypyc's C sources go to build/
        shutil.rmtree(stale, ignore_errors=True)
    for stale in (root / "build").glob("__native*"):
        stale.unlink()
    os.chdir(root)  # build_ext --inplace writes each extension next to its module, from here
    setup(
        name="wedsync-gateway-compiled-guard",
        packages=[],
        py_modules=[],
        ext_modules=mypycify(MODULES, separate=True, opt_level="3"),
        script_args=[
            "build_ext",
            "--inplace",
            "--build-temp",
            str(build),
            "--build-lib",
            str(build),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
