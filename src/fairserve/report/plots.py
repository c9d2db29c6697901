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
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fairserve.report.run_dir import RunDir

__all__ = [
    "CDF_POINTS",
    "TIME_POINTS",
    "RunSeries",
    "figure_png",
    "report_figures",
    "run_series",
    "sweep_figures",
]

CDF_POINTS = 400  # quantile points per CDF curve
TIME_POINTS = 400  # grid points of the occupancy curves
TIME_BINS = 80  # arrival-time bins of the latency-over-time curves
SHARE_WINDOWS = 60  # windows of the service-share curves
MAX_TENANT_FACETS = 8  # more tenants than this: the busiest ones get a facet
COLORS = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
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


def _log_if_wide(ax: Axes, values: np.ndarray) -> None:
    """Log x scale when positive values span more than two decades (latency tails)."""
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size and pos.max() / pos.min() > 100:
        ax.set_xscale("log")


def _grid(fig: Figure, rows: int, cols: int) -> np.ndarray:
    return np.asarray(fig.subplots(rows, cols, squeeze=False))


def _end_s(series: Sequence[RunSeries]) -> float:
    ends = [np.nanmax(s.finish_s) for s in series if np.isfinite(s.finish_s).any()]
    return float(max(ends)) if ends else 1.0


# ----------------------------------------------------------------- figures
def latency_cdf_figure(series: Sequence[RunSeries], tenants: Sequence[str]) -> Figure:
    """Per-tenant CDFs of TTFT and E2E; tenants overlaid (one run) or runs overlaid per tenant."""
    metrics = (("TTFT (s)", "ttft_s"), ("E2E latency (s)", "e2e_s"))
    facets = _tenant_facets(series, tenants)
    if len(series) == 1:
        s = series[0]
        fig = Figure(figsize=(11, 4), layout="constrained")
        axes = _grid(fig, 1, 2)[0]
        for ax, (title, attr) in zip(axes, metrics, strict=True):
            values = getattr(s, attr)
            for k, code in enumerate(facets):
                x, y = _cdf_points(values[s.completed & (s.tenant == code)])
                ax.step(x, y, where="post", color=_color(k), label=tenants[code])
            x, y = _cdf_points(values[s.completed])
            ax.step(x, y, where="post", color="black", linestyle="--", label="all tenants")
            _log_if_wide(ax, values[s.completed])
            ax.set(xlabel=title, ylabel="fraction of completed requests", title=f"{title} CDF")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        return fig
    fig = Figure(figsize=(max(6, 3.2 * len(facets)), 6.5), layout="constrained")
    grid = _grid(fig, 2, len(facets))
    for row, (title, attr) in enumerate(metrics):
        for col, code in enumerate(facets):
            ax = grid[row, col]
            for k, s in enumerate(series):
                values = getattr(s, attr)[s.completed & (s.tenant == code)]
                x, y = _cdf_points(values)
                ax.step(x, y, where="post", color=_color(k), label=s.label)
                _log_if_wide(ax, values)
            ax.set(xlabel=title, title=f"{tenants[code]}: {title.split(' ')[0]}")
            ax.grid(alpha=0.3)
        grid[row, 0].set_ylabel("fraction of completed")
    grid[0, 0].legend(fontsize=8)
    return fig


def latency_over_time_figure(series: Sequence[RunSeries], tenants: Sequence[str]) -> Figure:
    """p50 (dotted) and p99 (solid) of TTFT and E2E by arrival time."""
    end = max(_end_s(series), 1e-9)
    starts = [np.nanmin(s.arrival_s) for s in series if s.arrival_s.size]
    edges = np.linspace(min(starts) if starts else 0.0, end, TIME_BINS + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = _grid(fig, 1, 2)[0]
    lines: list[tuple[str, RunSeries, np.ndarray]]
    if len(series) == 1:
        s = series[0]
        lines = [(tenants[c], s, s.tenant == c) for c in _tenant_facets(series, tenants)]
    else:
        lines = [(s.label, s, np.ones(s.tenant.shape, dtype=bool)) for s in series]
    for ax, (title, attr) in zip(axes, (("TTFT", "ttft_s"), ("E2E latency", "e2e_s")), strict=True):
        for k, (label, s, mask) in enumerate(lines):
            pick = mask & s.completed
            values, times = getattr(s, attr)[pick], s.arrival_s[pick]
            p99, p50 = binned_percentiles(times, values, edges, (0.99, 0.5))
            ax.plot(mids, p99, color=_color(k), label=label)
            ax.plot(mids, p50, color=_color(k), linestyle=":")
        ax.set(
            xlabel="arrival time (s)",
            ylabel=f"{title} (s)",
            title=f"{title} by arrival time (solid p99, dotted p50)",
        )
        ax.set_yscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def load_over_time_figure(series: Sequence[RunSeries], tenants: Sequence[str]) -> Figure:
    """Waiting requests, running requests and the KV-tokens estimate over time."""
    grid = np.linspace(0.0, _end_s(series), TIME_POINTS)
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = _grid(fig, 3, 1)[:, 0]
    single = len(series) == 1
    for k, s in enumerate(series):
        arrived = _count_by(_finite_sorted(s.arrival_s), grid)
        left = _count_by(_finite_sorted(s.leave_queue_s), grid)
        done = _count_by(_finite_sorted(s.finish_s[np.isfinite(s.leave_queue_s)]), grid)
        color = "black" if single else _color(k)
        label = "all tenants" if single else s.label
        axes[0].plot(grid, arrived - left, color=color, label=label)
        axes[1].plot(grid, left - done, color=color, label=label)
        axes[2].plot(grid, _kv_tokens(s, grid), color=color, label=label)
        if single:
            for j, code in enumerate(_tenant_facets(series, tenants)):
                mine = s.tenant == code
                waiting = _count_by(_finite_sorted(s.arrival_s[mine]), grid) - _count_by(
                    _finite_sorted(s.leave_queue_s[mine]), grid
                )
                axes[0].plot(grid, waiting, color=_color(j), linewidth=1, label=tenants[code])
    titles = (
        "waiting requests (arrived, not yet scheduled)",
        "running requests (scheduled, not finished)",
        "KV tokens held, estimate (prompt + generated tokens of running requests)",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="time (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("requests")
    axes[1].set_ylabel("requests")
    axes[2].set_ylabel("tokens")
    axes[0].legend(fontsize=8)
    return fig


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


def service_share_figure(
    series: Sequence[RunSeries], tenants: Sequence[str], weights: Sequence[float]
) -> Figure:
    """One facet per tenant: its share of the service over time and its fair-share line."""
    facets = _tenant_facets(series, tenants)
    cols = min(len(facets), 3) or 1
    rows = max(1, math.ceil(len(facets) / cols))
    fig = Figure(figsize=(4 * cols + 1, 3.2 * rows), layout="constrained")
    grid = _grid(fig, rows, cols)
    edges = np.linspace(0.0, _end_s(series), SHARE_WINDOWS + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    shares = [service_share(s, len(tenants), weights, edges) for s in series]
    for i, code in enumerate(facets):
        ax = grid[i // cols, i % cols]
        for k, (s, (share, fair)) in enumerate(zip(series, shares, strict=True)):
            color = _color(k if len(series) > 1 else i)
            ax.plot(mids, share[code], color=color, label=s.label if len(series) > 1 else "share")
            fair_label = f"{s.label}: fair share" if len(series) > 1 else "fair share"
            ax.plot(mids, fair[code], color=color, linestyle="--", linewidth=1, label=fair_label)
        ax.set(
            title=f"{tenants[code]} (weight {weights[code]:g})",
            xlabel="time (s)",
            ylabel="share of service",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
    for j in range(len(facets), rows * cols):
        grid[j // cols, j % cols].set_visible(False)
    grid[0, 0].legend(fontsize=8)
    return fig


def predictor_error_figure(predictions: pl.DataFrame, labels: Sequence[str]) -> Figure | None:
    """Histogram of predicted minus actual output tokens per run; None without predictions."""
    errors = {}
    for label in labels:
        part = predictions.filter(pl.col("run") == label)
        if part.height:
            errors[label] = (
                (part["predicted_tokens"] - part["actual_tokens"]).cast(pl.Float64).to_numpy()
            )
    if not errors:
        return None
    everything = np.concatenate(list(errors.values()))
    lo, hi = np.percentile(everything, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    bins = np.linspace(lo, hi, 61).tolist()
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for k, (label, err) in enumerate(errors.items()):
        mae = float(np.mean(np.abs(err)))
        ax.hist(np.clip(err, lo, hi), bins=bins, histtype="step", linewidth=1.5,
                color=_color(k), label=f"{label} (MAE {mae:,.0f} tokens, n={err.size:,})")  # fmt: skip
    ax.axvline(0, color="gray", linewidth=1)
    ax.set(
        xlabel="predicted - actual output tokens (clipped to the 0.5-99.5th percentiles)",
        ylabel="requests",
        title="Output-length predictor error",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def report_figures(run: RunDir) -> dict[str, Figure]:
    """Every figure of a run directory's report, keyed by file stem."""
    tenants = list(run.tenants)
    origin = run.records["arrival_s"].min()
    origin_s = float(origin) if isinstance(origin, int | float) else 0.0
    series = [run_series(run.records_of(label), label, tenants, origin_s) for label in run.labels]
    weights = [run.weights.get(t, 1.0) for t in tenants]
    figures = {
        "latency_cdf": latency_cdf_figure(series, tenants),
        "latency_over_time": latency_over_time_figure(series, tenants),
        "load_over_time": load_over_time_figure(series, tenants),
        "service_share": service_share_figure(series, tenants, weights),
    }
    if run.predictions is not None:
        fig = predictor_error_figure(run.predictions, run.labels)
        if fig is not None:
            figures["predictor_error"] = fig
    return figures


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
        grid[0, 0].legend(fontsize=8)
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
        ax.plot(load, mean, marker="o", markersize=3, color=_color(k), label=config)
        ax.fill_between(
            load,
            mine["lo"].to_numpy().astype(float),
            mine["hi"].to_numpy().astype(float),
            color=_color(k),
            alpha=0.15,
            linewidth=0,
        )
