"""BurstGPT traces (Azure OpenAI GPT-3.5/GPT-4 traffic, HPMLL/BurstGPT).

CSV columns: ``Timestamp`` (seconds from the trace start), ``Model``
(``ChatGPT`` or ``GPT-4``), ``Request tokens``, ``Response tokens``,
``Total tokens``, ``Log Type`` (``Conversation log`` or ``API log``).
A row with ``Response tokens`` = 0 is a failed request: it is kept and flagged
``failed`` (about 1.8% of the real trace) unless ``drop_failed`` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from fairserve.core.model import DEFAULT_TENANT
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers._table import Column, Table, encode_series, read_table

HEADER = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")

COLUMNS = [
    Column("arrival_s", "Timestamp", "float", min_value=0),
    Column("model", "Model", "str"),
    Column("prompt_tokens", "Request tokens", "int", min_value=1),
    Column("output_tokens", "Response tokens", "int", min_value=0),
    Column("log_type", "Log Type", "str", required=False),
]

TenantBy = Literal["model", "log_type", "model_log_type"]


def columns_for(tenant_by: TenantBy | None) -> list[Column]:
    """The columns to read: ``Log Type`` only when tenants come from it (saves ~15%)."""
    if tenant_by in ("log_type", "model_log_type"):
        return COLUMNS
    return [c for c in COLUMNS if c.name != "log_type"]


def read_burstgpt(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    drop_failed: bool = False,
    tenant_by: TenantBy | None = None,
) -> Workload:
    """Read a BurstGPT CSV.

    ``tenant_by`` makes tenants out of a column: ``"model"`` (ChatGPT, GPT-4),
    ``"log_type"`` (``conversation`` vs ``api``) or both (``"model_log_type"``,
    e.g. ``GPT-4/api``). Without it every row belongs to ``"default"``.
    """
    path = Path(path)
    table = read_table(path, "csv", columns_for(tenant_by), skip_bad_rows=skip_bad_rows)
    return from_table(table, path, drop_failed=drop_failed, tenant_by=tenant_by)


def from_table(
    table: Table, path: Path, *, drop_failed: bool = False, tenant_by: TenantBy | None = None
) -> Workload:
    """Build the workload of a checked BurstGPT table (shared with the streaming reader)."""
    cols = table.columns
    model: pl.Series = cols["model"]
    m_codes, m_table = encode_series(model, "unknown")
    t_codes: np.ndarray | None
    t_table: tuple[str, ...]
    if tenant_by is None:
        t_codes, t_table = None, (DEFAULT_TENANT,)
    elif tenant_by == "model":
        t_codes, t_table = m_codes, m_table
    else:
        log_type = cols.get("log_type")
        if log_type is None:
            raise TraceError(f"{path}: tenant_by={tenant_by!r} needs the 'Log Type' column")
        short = (
            log_type.fill_null("unknown").str.replace(" log", "", literal=True).str.to_lowercase()
        )
        key = short if tenant_by == "log_type" else model.fill_null("unknown") + "/" + short
        t_codes, t_table = encode_series(key, "unknown")
    output = cols["output_tokens"]
    failed = output == 0
    wl = Workload.from_arrays(
        cols["arrival_s"],
        cols["prompt_tokens"],
        output,
        DEFAULT_TENANT if t_codes is None else None,
        tenant_codes=t_codes,
        tenant_table=t_table,
        model_codes=m_codes,
        model_table=m_table,
        failed=failed,
        skipped_rows=table.skipped_rows,
        meta={"source": str(path), "format": "burstgpt", "failed_rows": int(failed.sum())},
    )
    return wl.drop_failed() if drop_failed else wl
