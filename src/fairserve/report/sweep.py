"""The report of a sweep folder: the capacity knee per configuration, the figures against load.

A sweep (``fairserve sweep``) leaves ``sweep.json``, ``results.parquet`` and
``plots/*_vs_load.png`` in its folder. :func:`sweep_summary` reduces the
results to one row per configuration and load (the median over seeds, as the
sweep command prints it); :func:`capacity_knee` names, per configuration, the
first load at which TTFT p99 has grown past :data:`KNEE_FACTOR` times its value
at the lowest load, the point where queues start to build;
:func:`sweep_sentences` says in words where each configuration's knee is and
which configuration keeps the most goodput and the fairest shares past it.
The figures are drawn again from the results (``plots/*_vs_load.png`` is
rewritten), so an old folder gets the current figures.
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
    "sweep_sentences",
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


def _names(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _config_name(row: dict[str, Any], labels: Sequence[str]) -> str:
    return " / ".join(str(row[c]) for c in labels if c != "workload")


def _knee_sentence(knees: Sequence[dict[str, Any]], labels: Sequence[str], top: float) -> str:
    by_load: dict[float | None, list[str]] = {}
    for k in knees:
        by_load.setdefault(k["knee_load"], []).append(_config_name(k, labels) or "the run")
    parts = [
        f"at load {load:g} for {_names(names)}"
        if load is not None
        else f"not up to load {top:g} for {_names(names)}"
        for load, names in sorted(by_load.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    ]
    return (
        f"The knee (TTFT p99 past {KNEE_FACTOR:g}x its lowest-load value) comes "
        + "; ".join(parts)
        + "."
    )


def _ranking(rows: pl.DataFrame, labels: Sequence[str], column: str) -> list[tuple[str, float]]:
    ranked = [
        (_config_name(r, labels), float(r[column]))
        for r in rows.iter_rows(named=True)
        if r.get(column) is not None
    ]
    return sorted(ranked, key=lambda kv: -kv[1])


def _at_load_sentence(rows: pl.DataFrame, labels: Sequence[str], load: float) -> str | None:
    """Who keeps the most goodput, and the fairest shares, at one load."""
    parts = []
    good = _ranking(rows, labels, "goodput_fraction") if "goodput_fraction" in rows.columns else []
    if len(good) > 1:
        parts.append(
            f"{good[0][0]} meets the SLOs for the most requests ({100 * good[0][1]:.1f}%), "
            f"{good[-1][0]} for the fewest ({100 * good[-1][1]:.1f}%)"
        )
    jain = _ranking(rows, labels, "jain") if "jain" in rows.columns else []
    if len(jain) > 1:
        parts.append(
            f"Jain's index is highest under {jain[0][0]} ({jain[0][1]:.3f}), lowest under "
            f"{jain[-1][0]} ({jain[-1][1]:.3f})"
        )
    return f"At load {load:g}: " + "; ".join(parts) + "." if parts else None


def sweep_sentences(summary: pl.DataFrame, labels: Sequence[str]) -> list[str]:
    """Per workload: where the knee is, and who does best at the first knee and the top load."""
    config_labels = [c for c in labels if c != "workload"]
    if "workload" in labels:
        parts = summary.partition_by("workload", maintain_order=True)
    else:
        parts = [summary]
    out: list[str] = []
    for part in parts:
        prefix = f"{part['workload'][0]}: " if "workload" in labels else ""
        loads = sorted(set(part["load"].to_list()))
        knees = capacity_knee(part, config_labels or ["policy"])
        sentences = [_knee_sentence(knees, config_labels or ["policy"], loads[-1])]
        reached = sorted({k["knee_load"] for k in knees if k["knee_load"] is not None})
        for load in dict.fromkeys([*reached[:1], loads[-1]]):
            text = _at_load_sentence(part.filter(pl.col("load") == load), config_labels, load)
            if text:
                sentences.append(text)
        out.extend(prefix + s for s in sentences)
    return out


def _fmt(value: Any, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _knee_rows(
    knees: Sequence[dict[str, Any]], labels: Sequence[str], summary: pl.DataFrame
) -> list[list[str]]:
    rows = []
    for k in knees:
        knee = "not reached" if k["knee_load"] is None else f"{k['knee_load']:g}"
        at = summary
        for c in labels:
            at = at.filter(pl.col(c) == k[c])
        at = at.filter(pl.col("load") == k["knee_load"]) if k["knee_load"] is not None else at[:0]
        good = at["goodput_fraction"][0] if at.height and "goodput_fraction" in at.columns else None
        jain = at["jain"][0] if at.height and "jain" in at.columns else None
        base = k["base_ttft_p99_s"]
        rows.append(
            [*(str(k[c]) for c in labels),
             f"{base * 1e3:,.0f} at {k['base_load']:g}" if base is not None else "-", knee,
             _fmt(good, 100.0, 1), _fmt(jain, 1.0, 3)]
        )  # fmt: skip
    return rows


def _figures(table: pl.DataFrame, plots: Path) -> str:
    """The figures against load, drawn from the results (and written to ``plots/``)."""
    from fairserve.report.plots import figure_png, sweep_figures

    plots.mkdir(exist_ok=True)
    images = []
    for stem, fig in sweep_figures(table).items():
        png = figure_png(fig)
        (plots / f"{stem}.png").write_bytes(png)
        images.append(
            f'<figure><img alt="{stem}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}"></figure>'
        )
    return "".join(images)


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """Write ``SWEEP_DIR/report.html`` (or ``out``): the verdict, the knee, the summary, the plots."""
    from fairserve.report.html import PAGE_CSS

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
            "goodput % at the knee",
            "Jain at the knee",
        ],
        _knee_rows(capacity_knee(summary, labels), labels, summary),
    )
    rows = [
        [*(str(r[c]) for c in labels), f"{r['load']:g}", str(r["seeds"]),
         *(_fmt(r[col], scale, digits) for col, _, scale, digits in figures)]
        for r in summary.iter_rows(named=True)
    ]  # fmt: skip
    summary_table = _html_table([*labels, "load", "seeds", *(f[1] for f in figures)], rows)
    items = "".join(f"<li>{html.escape(t)}</li>" for t in sweep_sentences(summary, labels))
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(name)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<h1>Sweep {html.escape(name)}</h1><p class='meta'>{table.height} cells; figures are "
        "medians over the seeds; load is what the sweep's <code>load</code> unit says.</p>"
        f'<section class="verdict" id="verdict"><h2>Verdict</h2><ul>{items}</ul></section>'
        f"<h2>Capacity knee</h2>{knee_table}<h2>Against load</h2>{summary_table}"
        f"{_figures(table, sweep_dir / 'plots')}</body></html>"
    )
    target = out if out is not None else sweep_dir / "report.html"
    target.write_text(page, encoding="utf-8")
    return target
