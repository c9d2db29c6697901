"""The report's figures, computed from per-request records with vectorised numpy.

Every figure is a :class:`matplotlib.figure.Figure` made without pyplot (no
global state, Agg rendering), built from a :class:`~fairserve.report.run_dir.RunDir`.
Curves are evaluated on a bounded number of points (CDF quantiles, time bins,
time grid points), so a run of a million requests draws as fast as a small one.

What the time series are, since the records hold only per-request moments:

- **waiting**: requests arrived and not yet scheduled on an engine step (for a
  bench run, which does not see scheduling: not yet given their first token);
- **running**: scheduled and not yet finished;
- **KV tokens held (estimate)**: over running requests, the prompt from the
  first scheduling on plus the output tokens generated so far (assumed evenly
  spread between first token and finish). It ignores prefix sharing,
  preemption and block rounding, so it is a proxy for KV use, not the engine's count;
- **service share**: each tenant's part of the service given in a time window,
  a request's service being ``prompt + 2 * output`` tokens (VTC's weights)
  spread evenly between its first scheduling and its finish; the **fair
  share** is the tenant's weight over the summed weights of the tenants with
  work in the system in that window. A tenant below its line while it has
  little demand is not wronged (the rest is spare capacity others may use).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fairserve.report.run_dir import RunDir

__all__ = [
    "CDF_POINTS",
    "COLORS",
    "LINESTYLES",
    "TIME_POINTS",
    "RunSeries",
    "figure_png",
    "report_figures",
    "run_series",
    "sweep_figures",
]

CDF_POINTS = 400  # quantile points per CDF curve
TIME_POINTS = 400  # grid points of the occupancy curves
MAX_TENANT_FACETS = 8  # more tenants than this: the busiest ones get a facet
# Okabe and Ito's palette (told apart with the common colour-vision deficiencies), then
# matplotlib's; every line also gets its own style, so it reads in greyscale too.
COLORS = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
    "#000000", "#8c564b", "#7f7f7f", "#bcbd22",
)  # fmt: skip
LINESTYLES: tuple[Any, ...] = (
    "-", (0, (6, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)),
    (0, (10, 3)), (0, (2, 4)), (0, (6, 2, 1, 2, 1, 2)),
)  # fmt: skip
_INPUT_WEIGHT, _OUTPUT_WEIGHT = 1.0, 2.0  # VTC's service weights, as in metrics.fairness


@dataclass(frozen=True)
class RunSeries:
    """One run's records as numpy columns, times relative to the report's origin."""

    label: str
    tenant: np.ndarray  # int codes into the report's tenant tuple
    completed: np.ndarray  # bool
    arrival_s: np.ndarray
    leave_queue_s: np.ndarray  # first scheduled (or first token when unobserved); NaN: never
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def ttft_s(self) -> np.ndarray:
        """Arrival to first token."""
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        """Arrival to finish."""
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Mean time between output tokens after the first; NaN for one-token outputs."""
        gaps = self.output_tokens - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gaps > 0, (self.finish_s - self.first_token_s) / gaps, np.nan)


def run_series(
    frame: pl.DataFrame, label: str, tenants: Sequence[str], origin_s: float
) -> RunSeries:
    """Turn one run's records frame into :class:`RunSeries`."""
    codes = {name: i for i, name in enumerate(tenants)}
    tenant = frame["tenant"].replace_strict(codes, default=-1, return_dtype=pl.Int32).to_numpy()

    def col(name: str) -> np.ndarray:
        return frame[name].cast(pl.Float64).to_numpy() - (origin_s if name.endswith("_s") else 0.0)

    sched, first = col("first_scheduled_s"), col("first_token_s")
    finish = col("finish_s")
    leave = np.where(np.isfinite(sched), sched, np.where(np.isfinite(first), first, finish))
    return RunSeries(
        label=label,
        tenant=tenant,
        completed=(frame["outcome"] == "completed").to_numpy(),
        arrival_s=col("arrival_s"),
        leave_queue_s=leave,
        first_token_s=first,
        finish_s=finish,
        prompt_tokens=col("prompt_tokens"),
        output_tokens=col("output_tokens"),
    )


# ----------------------------------------------------------------- helpers
def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _linestyle(i: int) -> Any:
    return LINESTYLES[i % len(LINESTYLES)]


def _count_by(sorted_times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many of ``sorted_times`` are <= each grid point."""
    return np.searchsorted(sorted_times, grid, side="right")


def _finite_sorted(values: np.ndarray) -> np.ndarray:
    return np.sort(values[np.isfinite(values)])


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``CDF_POINTS`` (value, fraction) points of the empirical CDF of finite values."""
    samples = _finite_sorted(values)
    n = samples.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    frac = np.linspace(0.0, 1.0, min(n, CDF_POINTS))
    idx = np.round(frac * (n - 1)).astype(np.int64)
    return samples[idx], (idx + 1) / n


def binned_percentiles(
    times: np.ndarray, values: np.ndarray, edges: np.ndarray, qs: Sequence[float]
) -> list[np.ndarray]:
    """For each ``q`` of ``qs``: the nearest-rank quantile of ``values`` per time bin (NaN if empty).

    One sort serves every quantile (the sort is the cost: about 0.1 s per million values).
    """
    ok = np.isfinite(times) & np.isfinite(values)
    bins = np.clip(np.searchsorted(edges, times[ok], side="right") - 1, 0, len(edges) - 2)
    order = np.lexsort((values[ok], bins))
    vals, bins = values[ok][order], bins[order]
    starts = np.searchsorted(bins, np.arange(len(edges) - 1), side="left")
    counts = np.searchsorted(bins, np.arange(len(edges) - 1), side="right") - starts
    has = counts > 0
    out = []
    for q in qs:
        column = np.full(len(edges) - 1, np.nan)
        column[has] = vals[starts[has] + np.round(q * (counts[has] - 1)).astype(np.int64)]
        out.append(column)
    return out


def _cumulative_spread(
    start: np.ndarray, end: np.ndarray, amount: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Total of ``amount`` given out by each edge, each spread evenly over its [start, end]."""
    rate = amount / np.maximum(end - start, 1e-12)

    def ramp(at: np.ndarray) -> np.ndarray:
        # sum over items with at_i <= t of rate_i * (t - at_i), for every edge t
        order = np.argsort(at)
        r = np.concatenate(([0.0], np.cumsum(rate[order])))
        ra = np.concatenate(([0.0], np.cumsum((rate * at)[order])))
        k = np.searchsorted(at[order], edges, side="right")
        return edges * r[k] - ra[k]

    return ramp(start) - ramp(end)


def _kv_tokens(s: RunSeries, grid: np.ndarray) -> np.ndarray:
    """The KV-tokens estimate at each grid point (see the module docstring)."""
    ok = np.isfinite(s.leave_queue_s) & np.isfinite(s.finish_s)
    held = _count_weighted(s.leave_queue_s[ok], s.prompt_tokens[ok], grid) - _count_weighted(
        s.finish_s[ok], s.prompt_tokens[ok], grid
    )
    gen = ok & np.isfinite(s.first_token_s)
    # Generated tokens grow from the first token to the finish and are freed at the finish.
    ramp = _cumulative_spread(
        s.first_token_s[gen], s.finish_s[gen], s.output_tokens[gen], grid
    ) - _count_weighted(s.finish_s[gen], s.output_tokens[gen], grid)
    return held + ramp


def _count_weighted(times: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` whose time is <= each grid point."""
    order = np.argsort(times)
    cum = np.concatenate(([0.0], np.cumsum(weights[order])))
    return cum[np.searchsorted(times[order], grid, side="right")]


def _tenant_facets(series: Sequence[RunSeries], tenants: Sequence[str]) -> list[int]:
    """Tenant codes to draw a facet for: all, or the busiest ``MAX_TENANT_FACETS``."""
    counts = np.zeros(len(tenants))
    for s in series:
        counts += np.bincount(s.tenant[s.tenant >= 0], minlength=len(tenants))[: len(tenants)]
    present = [i for i in range(len(tenants)) if counts[i] > 0]
    if len(present) <= MAX_TENANT_FACETS:
        return present
    return sorted(sorted(present, key=lambda i: -counts[i])[:MAX_TENANT_FACETS])


def _grid(fig: Figure, rows: int, cols: int) -> np.ndarray:
    return np.asarray(fig.subplots(rows, cols, squeeze=False))


def _end_s(series: Sequence[RunSeries]) -> float:
    ends = [np.nanmax(s.finish_s) for s in series if np.isfinite(s.finish_s).any()]
    return float(max(ends)) if ends else 1.0


def service_share(
    s: RunSeries, n_tenants: int, weights: Sequence[float], edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per tenant and window: (share of the service given, fair share); tenants x windows."""
    done = s.completed & np.isfinite(s.leave_queue_s) & (s.tenant >= 0)
    service = _INPUT_WEIGHT * s.prompt_tokens + _OUTPUT_WEIGHT * s.output_tokens
    given = np.zeros((n_tenants, len(edges) - 1))
    active = np.zeros((n_tenants, len(edges) - 1), dtype=bool)
    for code in range(n_tenants):
        mine = done & (s.tenant == code)
        if mine.any():
            cum = _cumulative_spread(s.leave_queue_s[mine], s.finish_s[mine], service[mine], edges)
            given[code] = np.diff(cum)
        every = s.tenant == code
        in_system = _count_by(_finite_sorted(s.arrival_s[every]), edges) - _count_by(
            _finite_sorted(s.finish_s[every]), edges
        )
        arrivals = np.diff(_count_by(_finite_sorted(s.arrival_s[every]), edges))
        active[code] = (in_system[:-1] > 0) | (in_system[1:] > 0) | (arrivals > 0)
    total = given.sum(axis=0)
    w = np.asarray(weights, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, given / total, np.nan)
        active_w = (w * active).sum(axis=0)
        fair = np.where(active & (active_w > 0), w / active_w, np.nan)
    return share, fair


def report_figures(run: RunDir) -> dict[str, Figure]:
    """Every figure of a run directory's report, keyed by file stem (see ``report.figures``)."""
    from fairserve.report.figures import report_figures as build

    return build(run)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------- sweeps
_SWEEP_PANELS = {
    "latency_vs_load": (
        ("e2e_p50_s", "E2E p50 (s)"),
        ("e2e_p99_s", "E2E p99 (s)"),
        ("ttft_p50_s", "TTFT p50 (s)"),
        ("ttft_p99_s", "TTFT p99 (s)"),
    ),
    "goodput_vs_load": (
        ("goodput_req_s", "goodput (req/s)"),
        ("goodput_fraction", "goodput (share of requests)"),
    ),
    "fairness_vs_load": (
        ("jain", "Jain's index"),
        ("max_service_diff", "max service difference (tokens)"),
    ),
}


def sweep_figures(table: pl.DataFrame) -> dict[str, Figure]:
    """Latency, goodput and fairness against load: one line per configuration, mean over seeds.

    A configuration is the policy with the predictor and router when those vary;
    each workload gets its own row of panels. The shaded band spans the seeds'
    minimum to maximum.
    """
    keys = [
        k for k in ("policy", "predictor", "router") if table[k].n_unique() > 1 or k == "policy"
    ]
    labelled = table.with_columns(
        pl.concat_str([pl.col(k).fill_null("none") for k in keys], separator=" / ").alias("config")
    )
    workloads = labelled["workload"].unique(maintain_order=True).to_list()
    configs = labelled["config"].unique(maintain_order=True).to_list()
    figures = {}
    for name, panels in _SWEEP_PANELS.items():
        fig = Figure(figsize=(4.2 * len(panels) + 1, 3.6 * len(workloads)), layout="constrained")
        grid = _grid(fig, len(workloads), len(panels))
        for r, workload in enumerate(workloads):
            for c, (column, title) in enumerate(panels):
                ax = grid[r, c]
                _sweep_panel(ax, labelled.filter(pl.col("workload") == workload), configs, column)
                ax.set(xlabel="load", ylabel=title, title=f"{workload}: {title}")
                if column.endswith("_s") and column.startswith(("e2e", "ttft")):
                    ax.set_yscale("log")
                ax.grid(alpha=0.3)
        fig.legend(*grid[0, 0].get_legend_handles_labels(), loc="outside right upper",
                   fontsize=9, frameon=False)  # fmt: skip
        figures[name] = fig
    return figures


def _sweep_panel(ax: Axes, part: pl.DataFrame, configs: Sequence[str], column: str) -> None:
    stats = (
        part.group_by("config", "load")
        .agg(
            pl.col(column).cast(pl.Float64).mean().alias("mean"),
            pl.col(column).cast(pl.Float64).min().alias("lo"),
            pl.col(column).cast(pl.Float64).max().alias("hi"),
        )
        .sort("load")
    )
    for k, config in enumerate(configs):
        mine = stats.filter(pl.col("config") == config)
        if not mine.height:
            continue
        load = mine["load"].to_numpy()
        mean = mine["mean"].to_numpy(allow_copy=True).astype(float)
        ax.plot(load, mean, marker="o", markersize=3, color=_color(k), linestyle=_linestyle(k),
                label=config)  # fmt: skip
        ax.fill_between(
            load,
            mine["lo"].to_numpy().astype(float),
            mine["hi"].to_numpy().astype(float),
            color=_color(k),
            alpha=0.15,
            linewidth=0,
        )
