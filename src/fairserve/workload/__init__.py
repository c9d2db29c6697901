"""Workloads: real traces in, realistic multi-tenant workloads out.

* :class:`Workload` - requests as numpy columns; :meth:`Workload.requests`
  yields :class:`~fairserve.core.model.Request` objects lazily.
* :func:`load_trace` - read a trace file (BurstGPT, Azure, Mooncake, ServeGen,
  ShareGPT, or the generic CSV/JSONL/Parquet schema), format auto-detected.
* :func:`load` - a YAML workload spec or a trace file.
* :mod:`fairserve.workload.generate` - seeded generators (:func:`synthetic`).
* :mod:`fairserve.workload.transform` - windows, scaling, merging, sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers import detect_format, load_trace

SPEC_SUFFIXES = (".yaml", ".yml")


def load(path_or_spec: str | Path, **options: Any) -> Workload:
    """Load a workload from a YAML spec (``.yaml``/``.yml``) or a trace file.

    ``options`` go to :func:`load_trace` for a trace file (``fmt``,
    ``skip_bad_rows``, reader options) and to
    :func:`fairserve.workload.spec.load_spec` for a spec (``seed`` overrides the
    spec's seed).
    """
    path = Path(path_or_spec)
    if path.suffix.lower() in SPEC_SUFFIXES:
        from fairserve.workload.spec import load_spec

        return load_spec(path, **options)
    return load_trace(path, **options)


__all__ = ["TraceError", "Workload", "detect_format", "load", "load_trace"]
