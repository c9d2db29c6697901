"""Build hook: compile the simulator's hot modules with mypyc, or fall back to pure Python.

The simulator's inner loop is plain, fully typed Python; mypyc (part of mypy)
compiles it to a C extension, which runs the same code 2-3x faster (see
BENCHMARKS.md). The compiled build is optional: set FAIRSERVE_PURE_PYTHON=1 at
install time to skip it, and where mypyc cannot type-check the sources, no C
compiler is found or the compilation fails, the install goes on with the
pure-Python modules (identical results, slower) and says so.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "src/fairserve/sim/engine.py",
    "src/fairserve/sim/sequence.py",
    "src/fairserve/sim/decodeset.py",
    "src/fairserve/sim/kvcache.py",
    "src/fairserve/sim/cost.py",
    "src/fairserve/sim/loop.py",
    "src/fairserve/sim/cluster.py",
    "src/fairserve/metrics/records.py",
]

# mypyc's shared runtime library is named after this group (fairserve__mypyc)
# rather than after a hash of the sources.
GROUP_NAME = "fairserve"


def _say_pure(why: str) -> None:
    # setuptools hides a build's stdout unless verbose; stderr reaches the user.
    print(
        f"fairserve: {why}; installing the pure-Python simulator (same results, "
        "2-3x slower). Set FAIRSERVE_PURE_PYTHON=1 to skip the compiled build "
        "and this attempt.",
        file=sys.stderr,
    )


def _compiler_found() -> bool:
    """Whether the C compiler the build would use (``$CC`` or cc) is on PATH."""
    cc = shlex.split(os.environ.get("CC", "") or "cc")
    return bool(cc) and shutil.which(cc[0]) is not None and cc[0] != "false"


class OptionalBuildExt(build_ext):
    """build_ext that drops the compiled modules instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or failing: any error
            _say_pure(f"compiling the simulator failed ({type(exc).__name__}: {exc})")
            # A half-built group would not import: remove every module built so far.
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise RuntimeError(f"{ext.name}: {exc}") from exc


def _extensions() -> list[Any]:
    if os.environ.get("FAIRSERVE_PURE_PYTHON", "").lower() in ("1", "true", "yes"):
        return []
    if not _compiler_found():
        _say_pure("no C compiler found (CC or cc)")
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(COMPILED, opt_level="3", group_name=GROUP_NAME))
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        _say_pure(f"mypyc could not compile the sources ({type(exc).__name__}: {exc})")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
