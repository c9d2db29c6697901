"""ServeGen per-client statistics (placeholder until the sampler lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairserve.workload.base import TraceError, Workload


def is_servegen_trace(path: Path, header: list[str]) -> bool:
    """ServeGen trace CSVs have no header and are named ``chunk-<client>-trace.csv``."""
    return path.name.startswith("chunk-") and path.name.endswith("-trace.csv")


def read_servegen(path: str | Path, **options: Any) -> Workload:
    """Sample a workload from ServeGen client statistics."""
    raise TraceError(f"{path}: the ServeGen reader is not implemented yet")
