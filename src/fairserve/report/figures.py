"""The figures of a run directory's report.

What each figure shows (the series are those of :mod:`fairserve.report.plots`):

- **latency_tails**: per tenant, TTFT and E2E against the percentile on a
  logit axis (p50 to p99.9) with a log latency axis, so the tail the SLOs are
  about takes most of the width; the tenant's objective as a grey line.
- **slo_attainment**: per tenant with an SLO, the share of the requests
  arriving in each time bin that met every objective.
- **latency_over_time**: per tenant, TTFT p99 (and p50 for one run) of the
  requests arriving in each time bin, with the objective.
- **load_over_time**, **service_share**: queue, running requests, KV use and
  each tenant's share of the service against its fair share.
- **predictor_error**: one panel per distinct output-length predictor (runs
  sharing a predictor are pooled), not one histogram per run.

Every run has its own colour and line style; runs whose latencies coincide
(:func:`fairserve.report.verdict.coinciding_groups`) are drawn once, named
together. Legends sit outside the axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fairserve.core.model import SLO
from fairserve.report.plots import (
    LINESTYLES,
    RunSeries,
    _color,
    _count_by,
    _end_s,
    _finite_sorted,
    _grid,
    _kv_tokens,
    _linestyle,
    _tenant_facets,
    binned_percentiles,
    run_series,
    service_share,
)
from fairserve.report.run_dir import RunDir
from fairserve.report.verdict import coinciding_groups, format_duration, slo_met_arrays, slo_text

__all__ = ["Curve", "curves_for", "report_figures"]

TAIL_POINTS = 160  # percentile points per tail curve
#: The percentiles the tail axis spans and labels.
TAIL_TICKS = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"))
ATTAINMENT_BINS = 40
TIME_BINS = 60
SLO_COLOR = "#555555"
MAX_COLS = 3


@dataclass(frozen=True)
class Curve:
    """One line to draw: a run (or a group of runs with the same latencies) and its style."""

    label: str
    series: RunSeries
    color: str
    linestyle: Any


def curves_for(series: Sequence[RunSeries], groups: Sequence[Sequence[str]]) -> list[Curve]:
    """One curve per group of coinciding runs, styled by the group's position."""
    by_label = {s.label: s for s in series}
    return [
        Curve(" = ".join(group), by_label[group[0]], _color(k), _linestyle(k))
        for k, group in enumerate(groups)
    ]


# ----------------------------------------------------------------- helpers
def _facet_grid(fig: Figure, n: int, cols: int = MAX_COLS) -> tuple[np.ndarray, int]:
    cols = max(1, min(n, cols))
    rows = max(1, math.ceil(n / cols))
    grid = _grid(fig, rows, cols)
    for j in range(n, rows * cols):
        grid[j // cols, j % cols].set_visible(False)
    return grid, cols


def _legend_outside(fig: Figure, axes: Sequence[Axes], title: str | None = None) -> None:
    """One legend for the figure, right of the axes, entries from every axis (no repeats)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside right upper",
            fontsize=9,
            frameon=False,
            title=title,
        )


def _slo_line(ax: Axes, limit: float | None, horizontal: bool = True) -> None:
    if limit is None:
        return
    ax.axhline(limit, color=SLO_COLOR, linestyle=(0, (2, 2)), linewidth=1.2, label="SLO")
    ax.annotate(
        f"SLO {format_duration(limit)}",
        xy=(0.01, limit),
        xycoords=("axes fraction", "data"),
        xytext=(2, 3),
        textcoords="offset points",
        fontsize=8,
        color=SLO_COLOR,
    )


def _tail_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(percentile, latency) points from p50 to p99.9 (fewer than 2 samples: none)."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return np.zeros(0), np.zeros(0)
    q = 1.0 - np.geomspace(0.5, 1.0 - TAIL_TICKS[-1][0], TAIL_POINTS)
    return q, np.quantile(v, q)


def _tail_axes(ax: Axes) -> None:
    ax.set_xscale("logit")
    ax.set_xlim(TAIL_TICKS[0][0], TAIL_TICKS[-1][0])
    ax.set_xticks([q for q, _ in TAIL_TICKS], [name for _, name in TAIL_TICKS])
    ax.xaxis.set_minor_formatter("")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")


def _plain_log_labels(ax: Axes) -> None:
    """Log-axis labels as plain numbers (0.1, 1, 300), the minor ones too on a short range."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 20:
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.yaxis.set_minor_formatter("")


def _tenant_mask(s: RunSeries, code: int) -> np.ndarray:
    return s.tenant == code


# ----------------------------------------------------------------- figures
def latency_tails_figure(
    curves: Sequence[Curve], tenants: Sequence[str], slos: Mapping[str, SLO]
) -> Figure:
    """Per tenant (columns), TTFT and E2E (rows) from p50 to p99.9, with the objectives."""
    facets = _tenant_facets([c.series for c in curves], tenants)
    fig = Figure(figsize=(3.6 * max(len(facets), 1) + 2.4, 6.4), layout="constrained")
    grid = _grid(fig, 2, max(len(facets), 1))
    for row, (name, attr) in enumerate((("TTFT", "ttft_s"), ("E2E latency", "e2e_s"))):
        for col, code in enumerate(facets):
            ax = grid[row, col]
            for c in curves:
                s = c.series
                q, y = _tail_points(getattr(s, attr)[s.completed & _tenant_mask(s, code)])
                ax.plot(q, y, color=c.color, linestyle=c.linestyle, linewidth=1.6, label=c.label)
            slo = slos.get(tenants[code])
            _slo_line(ax, getattr(slo, attr) if slo is not None else None)
            _tail_axes(ax)
            _plain_log_labels(ax)
            ax.set_title(f"{tenants[code]}: {name}", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{name} (s, log)")
            if row == 1:
                ax.set_xlabel("percentile of completed requests")
    _legend_outside(fig, list(grid.ravel()))
    return fig


def _attainment(s: RunSeries, code: int, slo: SLO, edges: np.ndarray) -> np.ndarray:
    mine = _tenant_mask(s, code)
    lat = {"ttft_s": s.ttft_s[mine], "tpot_s": s.tpot_s[mine], "e2e_s": s.e2e_s[mine]}
    met, _ = slo_met_arrays(s.completed[mine], lat, slo)
    times = s.arrival_s[mine]
    bins = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(bins, minlength=len(edges) - 1)
    hits = np.bincount(bins, weights=met.astype(np.float64), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def slo_attainment_figure(
    curves: Sequence[Curve], tenants: Sequence[str], slos: Mapping[str, SLO]
) -> Figure | None:
    """Per tenant with an SLO: the share of each time bin's arrivals that met it; None if none."""
    codes = [i for i in _tenant_facets([c.series for c in curves], tenants) if tenants[i] in slos]
    if not codes:
        return None
    starts = [np.nanmin(c.series.arrival_s) for c in curves if c.series.arrival_s.size]
    ends = [np.nanmax(c.series.arrival_s) for c in curves if c.series.arrival_s.size]
    edges = np.linspace(min(starts), max(max(ends), min(starts) + 1e-9), ATTAINMENT_BINS + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(4.2 * min(len(codes), MAX_COLS) + 2.4, 3.3 * math.ceil(len(codes) / MAX_COLS)),
                 layout="constrained")  # fmt: skip
    grid, cols = _facet_grid(fig, len(codes))
    for i, code in enumerate(codes):
        ax = grid[i // cols, i % cols]
        slo = slos[tenants[code]]
        for c in curves:
            share = _attainment(c.series, code, slo, edges)
            ax.plot(mids, share, color=c.color, linestyle=c.linestyle, linewidth=1.5, label=c.label)
        ax.set(ylim=(-0.02, 1.02), xlabel="arrival time (s)")
        ax.set_title(f"{tenants[code]}: {slo_text(slo)}", fontsize=10)
        if i % cols == 0:
            ax.set_ylabel("share meeting the SLO")
        ax.grid(alpha=0.3)
    _legend_outside(fig, list(grid.ravel()))
    return fig


def latency_over_time_figure(
    curves: Sequence[Curve], tenants: Sequence[str], slos: Mapping[str, SLO]
) -> Figure:
    """Per tenant: TTFT p99 of each time bin's arrivals (and p50 when one run is drawn)."""
    facets = _tenant_facets([c.series for c in curves], tenants)
    starts = [np.nanmin(c.series.arrival_s) for c in curves if c.series.arrival_s.size]
    edges = np.linspace(min(starts) if starts else 0.0, max(_end_s([c.series for c in curves]), 1e-9),
                        TIME_BINS + 1)  # fmt: skip
    mids = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(4.2 * min(len(facets), MAX_COLS) + 2.4,
                          3.3 * math.ceil(len(facets) / MAX_COLS)), layout="constrained")  # fmt: skip
    grid, cols = _facet_grid(fig, len(facets))
    for i, code in enumerate(facets):
        ax = grid[i // cols, i % cols]
        for c in curves:
            s = c.series
            pick = s.completed & _tenant_mask(s, code)
            p99, p50 = binned_percentiles(s.arrival_s[pick], s.ttft_s[pick], edges, (0.99, 0.5))
            label = c.label if len(curves) > 1 else "p99"
            ax.plot(mids, p99, color=c.color, linestyle=c.linestyle, linewidth=1.5, label=label)
            if len(curves) == 1:
                ax.plot(mids, p50, color=c.color, linestyle=":", linewidth=1.2, label="p50")
        slo = slos.get(tenants[code])
        _slo_line(ax, slo.ttft_s if slo is not None else None)
        ax.set_yscale("log")
        _plain_log_labels(ax)
        ax.set_title(f"{tenants[code]}: TTFT{' p99' if len(curves) > 1 else ''} by arrival time",
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("arrival time (s)")
        if i % cols == 0:
            ax.set_ylabel("TTFT (s, log)")
        ax.grid(alpha=0.3, which="both")
    _legend_outside(fig, list(grid.ravel()))
    return fig


def load_over_time_figure(curves: Sequence[Curve], tenants: Sequence[str]) -> Figure:
    """Waiting requests, running requests and the KV-tokens estimate over time."""
    grid = np.linspace(0.0, _end_s([c.series for c in curves]), 400)
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = _grid(fig, 3, 1)[:, 0]
    single = len(curves) == 1
    for c in curves:
        s = c.series
        arrived = _count_by(_finite_sorted(s.arrival_s), grid)
        left = _count_by(_finite_sorted(s.leave_queue_s), grid)
        done = _count_by(_finite_sorted(s.finish_s[np.isfinite(s.leave_queue_s)]), grid)
        style = {"color": "black" if single else c.color, "linestyle": c.linestyle,
                 "label": "all tenants" if single else c.label}  # fmt: skip
        axes[0].plot(grid, arrived - left, **style)
        axes[1].plot(grid, left - done, **style)
        axes[2].plot(grid, _kv_tokens(s, grid), **style)
    if single:
        s = curves[0].series
        for j, code in enumerate(_tenant_facets([s], tenants)):
            mine = s.tenant == code
            waiting = _count_by(_finite_sorted(s.arrival_s[mine]), grid) - _count_by(
                _finite_sorted(s.leave_queue_s[mine]), grid
            )
            axes[0].plot(grid, waiting, color=_color(j + 1), linestyle=_linestyle(j + 1),
                         linewidth=1, label=tenants[code])  # fmt: skip
    titles = (
        "waiting requests (arrived, not yet scheduled)",
        "running requests (scheduled, not finished)",
        "KV tokens held, estimate (prompt + generated tokens of running requests)",
    )
    for ax, title, unit in zip(axes, titles, ("requests", "requests", "tokens"), strict=True):
        ax.set(title=title, xlabel="time (s)", ylabel=unit)
        ax.grid(alpha=0.3)
    _legend_outside(fig, list(axes))
    return fig


def service_share_figure(
    curves: Sequence[Curve], tenants: Sequence[str], weights: Sequence[float]
) -> Figure:
    """Per tenant: its share of the service over time and (grey) its fair share."""
    facets = _tenant_facets([c.series for c in curves], tenants)
    fig = Figure(figsize=(4.2 * min(len(facets), MAX_COLS) + 2.4,
                          3.2 * math.ceil(len(facets) / MAX_COLS)), layout="constrained")  # fmt: skip
    grid, cols = _facet_grid(fig, len(facets))
    edges = np.linspace(0.0, _end_s([c.series for c in curves]), 61)
    mids = (edges[:-1] + edges[1:]) / 2
    shares = [service_share(c.series, len(tenants), weights, edges) for c in curves]
    for i, code in enumerate(facets):
        ax = grid[i // cols, i % cols]
        for c, (share, _) in zip(curves, shares, strict=True):
            ax.plot(mids, share[code], color=c.color, linestyle=c.linestyle, linewidth=1.4,
                    label=c.label if len(curves) > 1 else "share of the service")  # fmt: skip
        # The fair share depends on who has work in the system, mostly set by arrivals:
        # drawn from the first run.
        ax.plot(mids, shares[0][1][code], color=SLO_COLOR, linestyle=(0, (2, 2)), linewidth=1.2,
                label="fair share")  # fmt: skip
        ax.set(title=f"{tenants[code]} (weight {weights[code]:g})", xlabel="time (s)",
               ylim=(0, 1.02))  # fmt: skip
        if i % cols == 0:
            ax.set_ylabel("share of service")
        ax.grid(alpha=0.3)
    _legend_outside(fig, list(grid.ravel()))
    return fig


def _predictor_of(run: RunDir, label: str) -> str:
    """The run's predictor name: from its ``extra``, else the config, else the run's label."""
    name = run.extra_of(label).get("predictor") or run.config.get("predictor")
    return str(name) if name else label


def predictor_error_figure(run: RunDir) -> Figure | None:
    """One histogram of predicted minus actual output tokens per distinct predictor."""
    if run.predictions is None:
        return None
    groups: dict[str, list[str]] = {}
    for label in run.labels:
        groups.setdefault(_predictor_of(run, label), []).append(label)
    errors: dict[str, dict[str, np.ndarray]] = {}
    for name, labels in groups.items():
        for label in labels:
            part = run.predictions.filter(pl.col("run") == label)
            if part.height:
                diff = (part["predicted_tokens"] - part["actual_tokens"]).cast(pl.Float64)
                errors.setdefault(name, {})[label] = diff.to_numpy()
    if not errors:
        return None
    fig = Figure(figsize=(4.6 * min(len(errors), MAX_COLS) + 0.5,
                          3.6 * math.ceil(len(errors) / MAX_COLS)), layout="constrained")  # fmt: skip
    grid, cols = _facet_grid(fig, len(errors))
    for i, (name, per_run) in enumerate(errors.items()):
        ax = grid[i // cols, i % cols]
        pooled = np.concatenate(list(per_run.values()))
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        ax.hist(np.clip(pooled, lo, hi), bins=np.linspace(lo, hi, 61).tolist(), color=_color(i),
                alpha=0.75)  # fmt: skip
        ax.axvline(0, color=SLO_COLOR, linewidth=1)
        maes = [float(np.mean(np.abs(e))) for e in per_run.values()]
        mae = f"{min(maes):,.0f}" if round(min(maes)) == round(max(maes)) else (
            f"{min(maes):,.0f}-{max(maes):,.0f}")  # fmt: skip
        runs = ", ".join(per_run) if len(per_run) <= 3 else f"{len(per_run)} runs"
        ax.set_title(f"{name} ({runs}): MAE {mae} tokens", fontsize=10)
        ax.set(xlabel="predicted - actual output tokens", ylabel="requests (pooled over runs)")
        ax.grid(alpha=0.3)
    return fig


def report_figures(run: RunDir, groups: Sequence[Sequence[str]] | None = None) -> dict[str, Figure]:
    """Every figure of a run directory's report, keyed by file stem."""
    tenants = list(run.tenants)
    origin = run.records["arrival_s"].min()
    origin_s = float(origin) if isinstance(origin, int | float) else 0.0
    series = [run_series(run.records_of(label), label, tenants, origin_s) for label in run.labels]
    curves = curves_for(series, groups if groups is not None else coinciding_groups(run))
    if len(curves) == 1:  # one run: black, so tenant colours stay free for the per-tenant lines
        curves = [Curve(curves[0].label, curves[0].series, "black", LINESTYLES[0])]
    weights = [run.weights.get(t, 1.0) for t in tenants]
    figures: dict[str, Figure | None] = {
        "latency_tails": latency_tails_figure(curves, tenants, run.slos),
        "slo_attainment": slo_attainment_figure(curves, tenants, run.slos),
        "latency_over_time": latency_over_time_figure(curves, tenants, run.slos),
        "load_over_time": load_over_time_figure(curves, tenants),
        "service_share": service_share_figure(curves, tenants, weights),
        "predictor_error": predictor_error_figure(run),
    }
    return {stem: fig for stem, fig in figures.items() if fig is not None}
