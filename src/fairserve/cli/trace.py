"""``fairserve trace ...`` commands (mounted by the main CLI as ``trace``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fairserve.cli.options import fail
from fairserve.workload import TraceError, load
from fairserve.workload.stats import compute_stats

trace_app = typer.Typer(
    name="trace",
    help="Inspect traces and workload specs.",
    no_args_is_help=True,
    add_completion=False,
)


@trace_app.callback()
def _trace_root() -> None:
    """Inspect traces and workload specs."""


@trace_app.command("stats")
def stats_command(
    source: Annotated[Path, typer.Argument(help="A trace file, ServeGen folder or YAML spec.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of rates and lengths.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Trace format (default: auto-detect).")
    ] = None,
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="Skip malformed rows and report how many.")
    ] = False,
    bin_s: Annotated[
        float | None, typer.Option("--bin-s", help="Bin width of the rate-over-time series.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="ServeGen: fail on a client without usable length histograms."
        ),
    ] = False,
) -> None:
    """Rate over time, inter-arrival CV, length percentiles, tenant shares, prefix reuse."""
    err = Console(stderr=True, soft_wrap=True)
    options: dict[str, Any] = {}
    if source.suffix.lower() not in (".yaml", ".yml"):
        options = {"fmt": fmt, "skip_bad_rows": skip_bad_rows}
        if strict:  # only ServeGen takes it; another format says so
            options["strict"] = True
    elif fmt is not None or skip_bad_rows or strict:
        raise fail("--format, --skip-bad-rows and --strict apply to trace files, not specs")
    try:
        workload = load(source, **options)
        stats = compute_stats(workload, bin_s=bin_s)
    except (TraceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if workload.skipped_rows:
        err.print(f"skipped {workload.skipped_rows} malformed rows", highlight=False)
    for warning in stats["warnings"]:
        err.print(f"warning: {warning}", highlight=False)
    if plot is not None:
        from fairserve.workload.plot import plot_workload

        plot_workload(workload, stats, plot)
        err.print(f"wrote {plot}", highlight=False)
    if as_json:
        typer.echo(json.dumps(stats, allow_nan=False))
    else:
        _print_human(stats)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _print_human(stats: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    head = Table(title=f"workload: {stats.get('source')}", show_header=False)
    head.add_column("key")
    head.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("format", stats.get("format")),
        ("requests", stats["requests"]),
        ("duration_s", stats["duration_s"]),
        ("rate_per_s", stats["rate_per_s"]),
        ("interarrival_cv", stats["interarrival_cv"]),
        ("failed", stats["failed"]),
        ("skipped_rows", stats["skipped_rows"]),
        ("prefix_reuse_ratio", stats["prefix_reuse_ratio"]),
        ("conversations", stats["conversations"]),
    ]
    for key in ("records_read", "truncated", "clients", "clients_skipped"):
        if key in stats:
            rows.append((key, stats[key]))
    for key, value in rows:
        if value is not None:
            head.add_row(key, _fmt(value, 3) if isinstance(value, float) else str(value))
    console.print(head)

    lengths = Table(title="lengths (tokens)")
    lengths.add_column("")
    for col in ("mean", "p50", "p90", "p99", "max"):
        lengths.add_column(col, justify="right")
    for name in ("prompt_tokens", "output_tokens"):
        summary = stats[name]
        lengths.add_row(name, *(_fmt(summary.get(c)) for c in ("mean", "p50", "p90", "p99", "max")))
    console.print(lengths)

    tenants = Table(title="tenants")
    for col in ("tenant", "requests", "share", "rate_per_s", "cv", "prompt mean", "output mean"):
        tenants.add_column(col, justify="right" if col != "tenant" else "left")
    for name, info in stats["per_tenant"].items():
        tenants.add_row(
            name,
            _fmt(info["requests"]),
            f"{info['share']:.1%}",
            _fmt(info["rate_per_s"], 3),
            _fmt(info["interarrival_cv"], 2),
            _fmt(info["prompt_tokens_mean"]),
            _fmt(info["output_tokens_mean"]),
        )
    console.print(tenants)
    _print_conversations(console, stats.get("conversation_stats"))
    _print_failures(console, stats.get("failures"))
    timestamps = stats.get("timestamps")
    if timestamps is not None:
        console.print(
            f"zero gaps between arrivals: {timestamps['zero_gap_share']:.1%}"
            + (" (timestamps batched)" if timestamps["batched"] else ""),
            highlight=False,
        )

    series = stats["rate_over_time"]
    rates = series["rate_per_s"]
    if rates:
        console.print(
            f"rate over time ({len(rates)} bins of {series['bin_s']:g} s): "
            f"min {min(rates):.3f}, max {max(rates):.3f} req/s  {_sparkline(rates)}",
            highlight=False,
        )


def _print_conversations(console: Console, conv: dict[str, Any] | None) -> None:
    if conv is None:
        return
    table = Table(
        title=f"conversations: {conv['conversations']:,} "
        f"({conv['multi_turn_share']:.1%} with more than one turn)"
    )
    table.add_column("")
    for col in ("mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for name, key in (("turns", "turns"), ("interval between turns (s)", "turn_interval_s")):
        summary = conv[key]
        table.add_row(name, *(_fmt(summary.get(c)) for c in ("mean", "p50", "p90", "p99", "max")))
    console.print(table)


def _print_failures(console: Console, fit: dict[str, Any] | None) -> None:
    if fit is None:
        return
    verdict = "rise with load" if fit["rises_with_load"] else "do not rise measurably with load"
    console.print(
        f"failures: {fit['share']:.2%} of requests; {fit['share_quiet']:.2%} in the quietest "
        f"and {fit['share_busy']:.2%} in the busiest quarter of {fit['windows']} windows of "
        f"{fit['window_s']:g} s: they {verdict} (slope {fit['slope_per_rps']:.4g} log-odds "
        f"per req/s, p = {fit['p_value']:.2g}; intercept {fit['intercept']:.4g})",
        highlight=False,
    )


def _sparkline(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    top = max(values) or 1.0
    return "".join(bars[min(len(bars) - 1, int(v / top * (len(bars) - 1)))] for v in values)
