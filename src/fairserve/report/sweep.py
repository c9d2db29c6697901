"""The report of a sweep folder: the capacity knee per configuration, the figures against load.

A sweep (``fairserve sweep``) leaves ``sweep.json``, ``results.parquet`` and
``plots/*_vs_load.png`` in its folder. :func:`sweep_summary` reduces the
results to one row per configuration and load (the median over seeds, as the
sweep command prints it); :func:`capacity_knee` names, per configuration, the
first load at which TTFT p99 has grown past :data:`KNEE_FACTOR` times its value
at the lowest load, the point where queues start to build.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "KNEE_FACTOR",
    "SweepDirError",
    "capacity_knee",
    "is_sweep_dir",
    "sweep_labels",
    "sweep_summary",
    "write_sweep_report",
]

#: TTFT p99 this many times its lowest-load value marks the knee.
KNEE_FACTOR = 2.0
#: Configuration columns of a sweep's results, in the order the summary sorts by.
LABELS = ("workload", "policy", "predictor", "router")
#: The figures summarised: column, header, scale, decimals.
FIGURES = (
    ("ttft_p99_s", "TTFT p99 ms", 1e3, 0),
    ("e2e_p99_s", "E2E p99 s", 1.0, 2),
    ("goodput_fraction", "goodput %", 100.0, 1),
    ("jain", "Jain", 1.0, 3),
    ("throughput_tok_s", "out tok/s", 1.0, 0),
)
PLOTS = ("latency_vs_load", "goodput_vs_load", "fairness_vs_load")


class SweepDirError(ValueError):
    """The folder is not a finished sweep's output."""


def is_sweep_dir(path: Path) -> bool:
    """Whether ``path`` holds a sweep's outputs (``sweep.json`` and ``results.parquet``)."""
    return (path / "sweep.json").is_file() and (path / "results.parquet").is_file()


def sweep_labels(table: pl.DataFrame) -> list[str]:
    """The configuration columns that vary in ``table`` (at least ``policy``)."""
    labels = [c for c in LABELS if c in table.columns and table[c].n_unique() > 1]
    return labels or ["policy"]


def sweep_summary(table: pl.DataFrame) -> pl.DataFrame:
    """One row per configuration and load: ``seeds`` and each figure's median over the seeds."""
    labels = sweep_labels(table)
    figures = [f[0] for f in FIGURES if f[0] in table.columns]
    return (
        table.group_by([*labels, "load"], maintain_order=True)
        .agg(pl.len().alias("seeds"), *(pl.col(f).median() for f in figures))
        .sort([*labels, "load"])
    )


def capacity_knee(summary: pl.DataFrame, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per configuration: its lowest load's TTFT p99, and the first load past the knee (or None)."""
    out = []
    for key, rows in summary.group_by(list(labels), maintain_order=True):
        rows = rows.sort("load")
        loads, ttft = rows["load"].to_list(), rows["ttft_p99_s"].to_list()
        base = ttft[0]
        knee = None
        if base is not None:
            knee = next(
                (
                    ld
                    for ld, t in zip(loads, ttft, strict=True)
                    if t is not None and t > KNEE_FACTOR * base
                ),
                None,
            )
        config = dict(zip(labels, key, strict=True))
        out.append(config | {"base_load": loads[0], "base_ttft_p99_s": base, "knee_load": knee})
    return out


def _fmt(value: Any, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _knee_rows(knees: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[list[str]]:
    rows = []
    for k in knees:
        knee = "not reached" if k["knee_load"] is None else f"{k['knee_load']:g}"
        rows.append(
            [*(str(k[c]) for c in labels), f"{k['base_ttft_p99_s'] * 1e3:,.0f} at {k['base_load']:g}"
             if k["base_ttft_p99_s"] is not None else "-", knee]
        )  # fmt: skip
    return rows


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """Write ``SWEEP_DIR/report.html`` (or ``out``): the knee, the summary and the load plots."""
    if not is_sweep_dir(sweep_dir):
        raise SweepDirError(f"{sweep_dir}: not a sweep folder (no sweep.json and results.parquet)")
    table = pl.read_parquet(sweep_dir / "results.parquet")
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    name = str(spec.get("spec", {}).get("name", sweep_dir.name))
    labels = sweep_labels(table)
    summary = sweep_summary(table)
    figures = [f for f in FIGURES if f[0] in summary.columns]
    knee_table = _html_table(
        [
            *labels,
            "TTFT p99 ms at the lowest load",
            f"knee: first load with TTFT p99 > {KNEE_FACTOR:g}x",
        ],
        _knee_rows(capacity_knee(summary, labels), labels),
    )
    rows = [
        [*(str(r[c]) for c in labels), f"{r['load']:g}", str(r["seeds"]),
         *(_fmt(r[col], scale, digits) for col, _, scale, digits in figures)]
        for r in summary.iter_rows(named=True)
    ]  # fmt: skip
    summary_table = _html_table([*labels, "load", "seeds", *(f[1] for f in figures)], rows)
    images = "".join(
        f'<figure><img alt="{stem}" src="data:image/png;base64,'
        f'{base64.b64encode((sweep_dir / "plots" / f"{stem}.png").read_bytes()).decode()}"></figure>'
        for stem in PLOTS
        if (sweep_dir / "plots" / f"{stem}.png").is_file()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>Sweep {html.escape(name)}</h1><p>{table.height} cells; figures are medians over "
        f"the seeds.</p><h2>Capacity knee</h2>{knee_table}<h2>Against load</h2>{summary_table}"
        f"{images}</body></html>"
    )
    target = out if out is not None else sweep_dir / "report.html"
    target.write_text(page, encoding="utf-8")
    return target
