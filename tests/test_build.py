"""A build you can trust: stale compiled modules stop the tests; FAIRSERVE_PURE_PYTHON runs sources."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fairserve
from tests.conftest import Staleness, stale_extensions, stale_message

EXT = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so


def _touch(path: Path, mtime_s: float, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))
    return path


def test_guard_flags_extensions_older_than_their_source_or_without_one(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _touch(pkg / "fresh.py", 1000)
    _touch(pkg / f"fresh{EXT}", 2000)  # built after its source: fine
    _touch(pkg / "sub" / "edited.py", 3000)
    old = _touch(pkg / "sub" / f"edited{EXT}", 2000)  # source edited since the build
    orphan = _touch(pkg / f"gone{EXT}", 2000)  # source renamed or split
    _touch(pkg / "__pycache__" / "fresh.cpython-311.pyc", 1)  # bytecode is not an extension
    _touch(pkg / f"0a1b2c__mypyc{EXT}", 1)  # mypyc's runtime library: no source by design
    stale = stale_extensions(pkg)
    assert [(s.path, s.why) for s in stale] == [
        (orphan, Staleness.NO_SOURCE),
        (old, Staleness.OLDER_THAN_SOURCE),
    ]
    message = stale_message(stale)
    assert f"edited{EXT} is older than its source" in message
    assert "make install" in message and "FAIRSERVE_PURE_PYTHON=1" in message


def test_guard_passes_a_fresh_build_and_a_tree_without_extensions(tmp_path: Path) -> None:
    assert stale_extensions(Path(fairserve.__file__).parent) == [] or fairserve.pure_python()
    _touch(tmp_path / "a.py", 1000)
    _touch(tmp_path / f"a{EXT}", 1000)  # same second (a fast build): not older
    assert stale_extensions(tmp_path) == []


def _run(
    code: str, *, pure: bool, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FAIRSERVE_PURE_PYTHON"}
    if pure:
        env["FAIRSERVE_PURE_PYTHON"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_pure_python_loads_the_sources() -> None:
    code = (
        "import fairserve.sim.engine as e, fairserve.core.model as m; print(e.__file__, m.__file__)"
    )
    result = _run(code, pure=True)
    assert result.returncode == 0, result.stderr
    assert all(name.endswith(".py") for name in result.stdout.split()), result.stdout


def test_pure_python_passes_over_a_compiled_module(tmp_path: Path) -> None:
    # A copy of the package's __init__ beside a module and a (broken) extension of
    # the same name: Python picks the extension first, the pure path the source.
    pkg = tmp_path / "fairserve"
    pkg.mkdir()
    shutil.copy(fairserve.__file__, pkg / "__init__.py")
    (pkg / "mod.py").write_text("WHERE = 'source'\n")
    (pkg / f"mod{EXT}").write_bytes(b"not a shared object")
    code = "import fairserve.mod as m; print(m.WHERE, m.__file__)"
    compiled = _run(code, pure=False, pythonpath=tmp_path)
    assert compiled.returncode != 0 and "ImportError" in compiled.stderr  # it tried the .so
    pure = _run(code, pure=True, pythonpath=tmp_path)
    assert pure.returncode == 0, pure.stderr
    assert pure.stdout.split() == ["source", str(pkg / "mod.py")]


def test_without_the_variable_a_built_module_loads_compiled() -> None:
    sim = Path(fairserve.__file__).parent / "sim"
    if not any(
        (sim / f"engine{suffix}").is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ):
        pytest.skip("no compiled fairserve.sim.engine here (a pure-Python install)")
    result = _run("import fairserve.sim.engine as e; print(e.__file__)", pure=False)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().endswith(".py"), result.stdout


def test_a_stale_extension_stops_the_session_before_any_test(tmp_path: Path) -> None:
    pkg = tmp_path / "fairserve"
    pkg.mkdir()
    shutil.copy(fairserve.__file__, pkg / "__init__.py")
    _touch(pkg / f"mod{EXT}", 1000)
    _touch(pkg / "mod.py", 2000, "WHERE = 'source'\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), suite / "conftest.py")
    (suite / "test_one.py").write_text("def test_one():\n    import fairserve.mod\n")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)]
    env = {k: v for k, v in os.environ.items() if k != "FAIRSERVE_PURE_PYTHON"}
    env["PYTHONPATH"] = str(tmp_path)
    run = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert f"mod{EXT} is older than its source" in run.stdout + run.stderr
    env["FAIRSERVE_PURE_PYTHON"] = "1"
    pure = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert pure.returncode == 0, pure.stdout + pure.stderr
