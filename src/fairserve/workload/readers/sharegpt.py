"""ShareGPT conversations (placeholder until the reader lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairserve.workload.base import TraceError, Workload


def read_sharegpt(path: str | Path | None = None, **options: Any) -> Workload:
    """Read ShareGPT conversations into multi-turn requests."""
    raise TraceError(f"{path}: the ShareGPT reader is not implemented yet")
