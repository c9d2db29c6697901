"""fairserve: fair, SLO-aware scheduling for shared LLM inference.

The simulator's hot modules may be compiled (mypyc, see ``setup.py``); the
compiled extension sits beside its ``.py`` source and Python imports it first.
With ``FAIRSERVE_PURE_PYTHON=1`` in the environment, ``fairserve.*`` modules
are loaded from their ``.py`` sources even where a compiled one exists (and
subprocesses, which inherit the variable, do the same): a way to test the
sources, or to run edited code without rebuilding. At install time the same
variable skips compiling altogether.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

__version__ = "0.1.0"

#: Values of ``FAIRSERVE_PURE_PYTHON`` that turn the pure-Python path on.
PURE_PYTHON_VALUES = ("1", "true", "yes")


class _SourceFinder:
    """Finds ``fairserve.*`` submodules among ``.py`` files only, passing over extensions."""

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith("fairserve.") or not path:
            return None
        for entry in path:
            finder = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname)
            if spec is not None and spec.loader is not None:
                return spec
        return None  # no source: the usual finders decide


def simulator_build() -> str:
    """How the simulator runs here: "compiled", or "pure Python" and why.

    Installs without a working C compiler fall back to the sources (setup.py);
    installers hide the build's own output, so ``fairserve --version`` says it.
    """
    if pure_python():
        return "pure Python (FAIRSERVE_PURE_PYTHON is set)"
    from importlib.machinery import EXTENSION_SUFFIXES

    sim = os.path.join(os.path.dirname(__file__), "sim")
    if any(os.path.exists(os.path.join(sim, "engine" + suffix)) for suffix in EXTENSION_SUFFIXES):
        return "compiled"
    return (
        "pure Python (not compiled at install: no working C compiler, or "
        "FAIRSERVE_PURE_PYTHON=1 at install; same results, 2-3x slower)"
    )


def pure_python() -> bool:
    """Whether ``FAIRSERVE_PURE_PYTHON`` asks for the ``.py`` sources."""
    return os.environ.get("FAIRSERVE_PURE_PYTHON", "").lower() in PURE_PYTHON_VALUES


# By name, so that reloading this module does not install a second finder.
if pure_python() and all(getattr(f, "__name__", "") != "_SourceFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceFinder)
