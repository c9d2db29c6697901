"""One BLAS/OpenMP thread in predictor tests.

The boosting library's OpenMP threads spin while they wait; on a small shared
machine that made a 1.5 s fit take 25 s (measured). One thread is fast and
deterministic here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield
