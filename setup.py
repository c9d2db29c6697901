"""Build hook: compile the simulator's hot modules with mypyc.

The simulator's inner loop is plain, fully typed Python; mypyc (part of mypy)
compiles it to a C extension, which runs the same code 2-3x faster (see
BENCHMARKS.md). Set FAIRSERVE_PURE_PYTHON=1 at install time to skip the
compilation; everything then runs interpreted, with identical results.
"""

from __future__ import annotations

import os

from setuptools import setup

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

ext_modules = []
if os.environ.get("FAIRSERVE_PURE_PYTHON", "") not in ("1", "true", "yes"):
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
