"""Mooncake (Kimi) JSONL traces.

One JSON object per line: ``timestamp`` (milliseconds from the start),
``input_length``, ``output_length`` and ``hash_ids`` (one id per 512-token
block of the prompt; equal ids are shared prefix blocks).
"""

from __future__ import annotations

from pathlib import Path

from fairserve.core.model import DEFAULT_TENANT
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers._table import Column, read_table

#: Tokens per ``hash_ids`` block in the Mooncake release.
MOONCAKE_BLOCK_TOKENS = 512

COLUMNS = [
    Column("timestamp_ms", "timestamp", "float", min_value=0),
    Column("prompt_tokens", "input_length", "int", min_value=1),
    Column("output_tokens", "output_length", "int", min_value=1),
    Column("prefix_hashes", "hash_ids", "hashes", required=False),
]


def read_mooncake(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    tenant: str = DEFAULT_TENANT,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
) -> Workload:
    """Read a Mooncake trace; ``prefix_hashes`` keeps ``hash_ids`` per request.

    A request with more hash blocks than its prompt can fill is an error: the
    ids would claim shared KV that the prompt does not have.
    """
    path = Path(path)
    table = read_table(path, "jsonl", COLUMNS, skip_bad_rows=skip_bad_rows)
    cols = table.columns
    hashes = cols.get("prefix_hashes")
    prompt = cols["prompt_tokens"]
    if hashes is not None:
        for i, (ids, tokens) in enumerate(zip(hashes, prompt.tolist(), strict=True)):
            if ids is not None and len(ids) > -(-tokens // block_tokens):
                raise TraceError(
                    f"{path}: data row {i + 1}: column 'hash_ids': {len(ids)} blocks of "
                    f"{block_tokens} tokens exceed input_length {tokens}"
                )
    return Workload.from_arrays(
        cols["timestamp_ms"] / 1000.0,
        prompt,
        cols["output_tokens"],
        tenant,
        prefix_hashes=hashes,
        prefix_block_tokens=block_tokens,
        skipped_rows=table.skipped_rows,
        meta={"source": str(path), "format": "mooncake"},
    )
