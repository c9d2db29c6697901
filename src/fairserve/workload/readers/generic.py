"""The generic trace schema (CSV, JSONL or Parquet).

Columns (names exact, extra columns are ignored and listed in ``meta``):

========================  ========  ========  =========================================
column                    type      required  meaning
========================  ========  ========  =========================================
``arrival_s``             float     yes       seconds from the start, finite, >= 0
``prompt_tokens``         int       yes       prompt length, >= 1
``output_tokens``         int       yes       output length, >= 1 (0 allowed if failed)
``tenant``                str       no        tenant name (default ``"default"``)
``model``                 str       no        model name
``conversation_id``       str       no        conversation the request belongs to
``turn``                  int       no        turn within the conversation, >= 0
``failed``                bool      no        true/false/1/0; failed rows may have 0 output
``prefix_hashes``         ints      no        one hash per prefix block; in CSV the ints
                                              are separated by spaces (``"3 7 9"``)
``text``                  str       no        the prompt text
========================  ========  ========  =========================================

Rows need not be sorted: they are sorted by arrival (stably).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairserve.core.model import DEFAULT_TENANT
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers._table import (
    Column,
    TableFormat,
    _available_columns,
    encode_series,
    read_table,
)

REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")


def _columns(has_failed: bool) -> list[Column]:
    return [
        Column("arrival_s", "arrival_s", "float", min_value=0),
        Column("prompt_tokens", "prompt_tokens", "int", min_value=1),
        Column("output_tokens", "output_tokens", "int", min_value=0 if has_failed else 1),
        Column("tenant", "tenant", "str", required=False),
        Column("model", "model", "str", required=False),
        Column("conversation_id", "conversation_id", "str", required=False),
        Column("turn", "turn", "int", required=False, min_value=0),
        Column("failed", "failed", "bool", required=False),
        Column("prefix_hashes", "prefix_hashes", "hashes", required=False),
        Column("text", "text", "str", required=False),
    ]


def read_generic(
    path: str | Path,
    fmt: TableFormat,
    *,
    skip_bad_rows: bool = False,
    prefix_block_tokens: int = 16,
    tenant: str = DEFAULT_TENANT,
) -> Workload:
    """Read a trace in the generic schema (see the module docstring)."""
    path = Path(path)
    available = _available_columns(path, fmt) if path.exists() and path.stat().st_size else set()
    table = read_table(path, fmt, _columns("failed" in available), skip_bad_rows=skip_bad_rows)
    cols = table.columns
    failed = cols.get("failed")
    output = cols["output_tokens"]
    if failed is not None:
        orphan = np.flatnonzero((output == 0) & ~failed)
        if orphan.size:
            raise TraceError(
                f"{path}: data row {int(orphan[0]) + 1}: column 'output_tokens': expected an "
                "integer >= 1 unless the row is flagged failed, got 0"
            )
    turn = cols.get("turn")
    if turn is not None and turn.dtype.kind == "f":
        turn = np.nan_to_num(turn, nan=0.0).astype(np.int64)
    known = {c.source for c in _columns(False)}
    t_codes, t_table = encode_series(cols["tenant"], tenant) if "tenant" in cols else (None, None)
    m_codes, m_table = encode_series(cols["model"], "unknown") if "model" in cols else (None, None)
    return Workload.from_arrays(
        cols["arrival_s"],
        cols["prompt_tokens"],
        output,
        None if "tenant" in cols else tenant,
        tenant_codes=t_codes,
        tenant_table=t_table,
        failed=failed,
        turn=turn,
        conversation_id=None
        if "conversation_id" not in cols
        else cols["conversation_id"].to_numpy().astype(object),
        prefix_hashes=cols.get("prefix_hashes"),
        prefix_block_tokens=prefix_block_tokens,
        text=None if "text" not in cols else cols["text"].to_numpy().astype(object),
        model_codes=m_codes,
        model_table=m_table,
        skipped_rows=table.skipped_rows,
        meta={
            "source": str(path),
            "format": f"generic-{fmt}",
            "ignored_columns": sorted(available - known),
        },
    )
