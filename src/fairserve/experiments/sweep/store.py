"""Stored cells and the sweep's outputs: one JSON file per finished cell, the table, the figures."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from fairserve.experiments.sweep.plan import Cell

__all__ = ["cell_path", "load_stored", "results_table", "store_cell", "write_outputs"]


def cell_path(out_dir: Path, cell_id: str) -> Path:
    return out_dir / "cells" / f"{cell_id}.json"


def store_cell(out_dir: Path, cell: Cell, result: Mapping[str, Any]) -> None:
    """Write a finished cell atomically (a crash leaves no half-written file)."""
    path = cell_path(out_dir, cell.id)
    tmp = path.with_suffix(".tmp")
    data = {"cell": cell.id, **cell.labels, "definition": cell.definition, **result}
    tmp.write_text(json.dumps(data, allow_nan=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_stored(out_dir: Path, cell: Cell) -> Mapping[str, Any] | None:
    path = cell_path(out_dir, cell.id)
    if not path.exists():
        return None
    try:
        data: Mapping[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged file: the cell runs again
    return data


def results_table(cells: Sequence[Cell], stored: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    rows = [{"cell": c.id, **c.labels, **stored[c.id]["metrics"]} for c in cells if c.id in stored]
    if not rows:
        return pl.DataFrame()
    table = pl.DataFrame(rows, infer_schema_length=None)
    return table.with_columns(
        pl.col("workload", "policy", "predictor", "router").cast(pl.String),
        pl.col("load").cast(pl.Float64),
        pl.col("seed").cast(pl.Int64),
    )


def write_outputs(out_dir: Path, table: pl.DataFrame) -> list[Path]:
    from fairserve.report.plots import figure_png, sweep_figures

    files = [out_dir / "results.parquet", out_dir / "results.csv"]
    table.write_parquet(files[0])
    table.write_csv(files[1])
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    for stem, fig in sweep_figures(table).items():
        path = plots / f"{stem}.png"
        path.write_bytes(figure_png(fig))
        files.append(path)
    return files
