"""The real public traces beside the repository (../shared/traces), for tests that use them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The public traces live beside the repository (see ../shared/traces/README.md).
TRACES = (REPO / ".." / "shared" / "traces").resolve()


def real_trace(relative: str) -> Path:
    """Path of a real trace file, or skip the test with a message when it is absent."""
    path = TRACES / relative
    if not path.exists():
        pytest.skip(f"real trace {relative} not found under {TRACES} (../shared/traces absent)")
    return path
