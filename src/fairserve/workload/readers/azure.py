"""Azure LLM inference traces (AzurePublicDataset, 2023 and 2024 releases).

CSV columns ``TIMESTAMP, ContextTokens, GeneratedTokens``. TIMESTAMP is a
wall-clock date-time (2023: ``2023-11-16 18:17:03.9799600``; 2024 adds a
``+00:00`` zone); arrivals are made relative to the first request. A row with
``GeneratedTokens`` = 0 produced nothing: it is kept as a failed request (as
BurstGPT's are) unless ``drop_failed`` is set.
"""

from __future__ import annotations

from pathlib import Path

from fairserve.core.model import DEFAULT_TENANT
from fairserve.workload.base import Workload
from fairserve.workload.readers._table import Column, Table, read_table

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

COLUMNS = [
    Column("timestamp", "TIMESTAMP", "datetime"),
    Column("prompt_tokens", "ContextTokens", "int", min_value=1),
    Column("output_tokens", "GeneratedTokens", "int", min_value=0),
]


def read_azure(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    drop_failed: bool = False,
    tenant: str = DEFAULT_TENANT,
) -> Workload:
    """Read an Azure LLM inference trace; every row belongs to ``tenant``."""
    path = Path(path)
    table = read_table(path, "csv", COLUMNS, skip_bad_rows=skip_bad_rows)
    return from_table(table, path, drop_failed=drop_failed, tenant=tenant)


def from_table(
    table: Table,
    path: Path,
    *,
    drop_failed: bool = False,
    tenant: str = DEFAULT_TENANT,
    start_s: float | None = None,
) -> Workload:
    """Build the workload of a checked Azure table; times are relative to ``start_s``
    (the first request of the table when unset)."""
    stamp_s = table.columns["timestamp"]
    if start_s is None:
        start_s = float(stamp_s.min())
    output = table.columns["output_tokens"]
    failed = output == 0
    wl = Workload.from_arrays(
        stamp_s - start_s,
        table.columns["prompt_tokens"],
        output,
        tenant,
        failed=failed,
        skipped_rows=table.skipped_rows,
        meta={
            "source": str(path),
            "format": "azure",
            "start_epoch_s": start_s,
            "failed_rows": int(failed.sum()),
        },
    )
    return wl.drop_failed() if drop_failed else wl
