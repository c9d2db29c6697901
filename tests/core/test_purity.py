"""The core is pure: no files, no clock, no event loop, no network (DESIGN.md, habit 1).

Each module under ``fairserve/core`` is parsed, not imported, so the check also
covers code paths no test runs. Imports only a type checker sees
(``if TYPE_CHECKING:``) are allowed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fairserve.core

CORE = Path(fairserve.core.__file__).parent

#: Modules whose import means files, clocks, processes or the network.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio", "datetime", "glob", "http", "io", "os", "pathlib", "pickle", "shelve",
        "shutil", "socket", "sqlite3", "subprocess", "sys", "tempfile", "threading", "time",
        "urllib", "httpx", "requests", "aiohttp", "joblib", "redis",
    }
)  # fmt: skip
#: Built-ins that open files.
FORBIDDEN_FUNCTIONS = frozenset({"open", "input", "print", "breakpoint"})
#: Methods that read or write files whatever the object (``np.load``, ``p.read_text()``).
#: A bare ``load(...)`` is the loader a driver injected, and allowed.
FORBIDDEN_METHODS = frozenset(
    {
        "read_text", "write_text", "read_bytes", "write_bytes", "from_file", "loadtxt",
        "savetxt", "savez", "load", "dump", "save", "mkdir", "unlink",
    }
)  # fmt: skip


def _modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of statements under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def violations(source: str) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for each forbidden import or call in ``source``."""
    tree = ast.parse(source)
    allowed = _type_checking_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in allowed:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                yield getattr(node, "lineno", 0), f"import {name}"
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id in FORBIDDEN_FUNCTIONS) or (
                isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS
            ):
                yield node.lineno, f"call {ast.unparse(func)}()"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io(path: Path) -> None:
    found = [f"{path.name}:{line}: {what}" for line, what in violations(path.read_text())]
    assert not found, "core/ must not touch files, clocks or the network:\n" + "\n".join(found)


def test_the_check_catches_what_it_should() -> None:
    bad = (
        "import time\nfrom pathlib import Path\nimport os.path\n"
        "x = open('f')\ny = Path('p').read_text()\nimport numpy as np\nnp.load('a.npy')\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from os import PathLike\n"
    )
    found = [what for _, what in violations(bad)]
    assert found == [
        "import time", "import pathlib", "import os.path", "call open()",
        "call Path('p').read_text()", "call np.load()",
    ]  # fmt: skip
    assert not list(violations("import math\nimport numpy as np\nnp.asarray([1])\nload(p)\n"))
