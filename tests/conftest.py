"""Session-wide test setup: refuse to test stale compiled modules.

The simulator's hot modules are compiled in place (mypyc, ``setup.py``), and
Python imports ``engine.cpython-*.so`` before ``engine.py``. After editing a
source without rebuilding, the tests would run the old compiled code and pass
or fail for the wrong reason; so the session stops at its start when a compiled
module is older than its source, or has no source left (renamed or split).
``FAIRSERVE_PURE_PYTHON=1`` bypasses the compiled modules, and the guard with them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest

import fairserve


class Staleness(Enum):
    """Why a compiled module must not be imported."""

    OLDER_THAN_SOURCE = "is older than its source"
    NO_SOURCE = "has no .py source (renamed or split since it was built)"


@dataclass(frozen=True, slots=True)
class StaleExtension:
    """A compiled module that would shadow a newer (or missing) source."""

    path: Path
    why: Staleness

    def __str__(self) -> str:
        return f"{self.path} {self.why.value}"


def _module_stem(path: Path) -> str | None:
    """``engine`` of ``engine.cpython-311-x86_64-linux-gnu.so``; None for other files."""
    # Longest suffix first: ".so" alone would leave "engine.cpython-311-...".
    for suffix in sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def stale_extensions(package_dir: Path) -> list[StaleExtension]:
    """Compiled modules under ``package_dir`` older than their ``.py`` or without one."""
    stale = []
    for path in sorted(package_dir.rglob("*")):
        stem = _module_stem(path)
        # mypyc's shared runtime library (``<group>__mypyc``) has no source by design.
        if stem is None or stem.endswith("__mypyc") or not path.is_file():
            continue
        source = path.with_name(stem + ".py")
        if not source.is_file():
            stale.append(StaleExtension(path, Staleness.NO_SOURCE))
        elif source.stat().st_mtime > path.stat().st_mtime:
            stale.append(StaleExtension(path, Staleness.OLDER_THAN_SOURCE))
    return stale


def stale_message(stale: list[StaleExtension]) -> str:
    """What to tell someone whose compiled modules are stale."""
    lines = "\n".join(f"  {item}" for item in stale)
    return (
        "stale compiled fairserve modules would shadow their sources:\n"
        f"{lines}\n"
        "Rebuild them with `make install`, or run the .py sources with "
        "FAIRSERVE_PURE_PYTHON=1 (e.g. `FAIRSERVE_PURE_PYTHON=1 .venv/bin/python -m pytest`)."
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before collecting when a compiled module is stale (unless running pure)."""
    if fairserve.pure_python():
        return
    spec = importlib.util.find_spec("fairserve")
    assert spec is not None and spec.submodule_search_locations is not None
    stale = [
        item
        for location in spec.submodule_search_locations
        for item in stale_extensions(Path(location))
    ]
    if stale:
        pytest.exit(stale_message(stale), returncode=pytest.ExitCode.USAGE_ERROR)
