"""Rich tables of a ``Summary``: one row overall, one per tenant, plus engine figures.

TTFT and TPOT are shown in milliseconds (they are usually well under a second);
E2E latency in seconds (usually several); every unit is in its column header.
Undefined figures (NaN: no samples, no engine stats) are shown as "-".
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from fairserve.metrics.summary import Goodput, LatencyStats, Summary

__all__ = ["engine_table", "print_summary", "summary_table"]

MISSING = "-"


def _number(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """``value * scale`` with ``digits`` decimals and thousands separators; "-" if undefined."""
    if value is None or math.isnan(value):
        return MISSING
    return f"{value * scale:,.{digits}f}"


def _percent(value: float | None) -> str:
    """A fraction (0..1) as a percentage; "-" if undefined."""
    return MISSING if value is None or math.isnan(value) else f"{value * 100:.1f}%"


def _row(
    label: str,
    requests: int,
    completed: int,
    latency: tuple[LatencyStats, LatencyStats, LatencyStats],
    goodput: Goodput,
) -> list[str]:
    ttft, tpot, e2e = latency
    return [
        label,
        f"{requests:,}",
        f"{completed:,}",
        _number(ttft.p50, 1e3),
        _number(ttft.p99, 1e3),
        _number(tpot.p50, 1e3, 2),
        _number(tpot.p99, 1e3, 2),
        _number(e2e.p50, 1.0, 2),
        _number(e2e.p99, 1.0, 2),
        _percent(goodput.fraction),
    ]


def summary_table(summary: Summary, title: str = "Run summary") -> Table:
    """Overall row then one row per tenant: counts, latency percentiles, goodput share."""
    table = Table(title=title)
    table.add_column("Tenant")
    for header in (
        "Requests",
        "Completed",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "TPOT p50 (ms)",
        "TPOT p99 (ms)",
        "E2E p50 (s)",
        "E2E p99 (s)",
        "Goodput (% of requests)",
    ):
        table.add_column(header, justify="right")
    table.add_row(
        *_row(
            "all",
            summary.requests,
            summary.completed,
            (summary.ttft_s, summary.tpot_s, summary.e2e_s),
            summary.goodput,
        ),
        style="bold",
        end_section=bool(summary.per_tenant),
    )
    for name, tenant in summary.per_tenant.items():
        table.add_row(
            *_row(
                name,
                tenant.requests,
                tenant.completed,
                (tenant.ttft_s, tenant.tpot_s, tenant.e2e_s),
                tenant.goodput,
            )
        )
    return table


def engine_table(summary: Summary) -> Table:
    """Run-wide figures: time, throughput, goodput rate, preemptions, KV and prefix cache."""
    table = Table(title="Engine", show_header=False)
    table.add_column("Figure")
    table.add_column("Value", justify="right")
    rows = [
        ("Simulated time (s)", _number(summary.sim_time_s, digits=2)),
        (
            "Outcomes (completed / cancelled / failed)",
            f"{summary.completed:,} / {summary.cancelled:,} / {summary.failed:,}",
        ),
        ("Output throughput (tok/s)", _number(summary.throughput_tok_s)),
        ("Input throughput (tok/s)", _number(summary.input_throughput_tok_s)),
        ("Request throughput (req/s)", _number(summary.throughput_req_s, digits=2)),
        ("Goodput (req/s)", _number(summary.goodput.req_s, digits=2)),
        ("Goodput (tok/s)", _number(summary.goodput.tok_s)),
        ("Preemptions", f"{summary.preemptions:,}"),
        ("KV utilisation mean", _percent(summary.kv_util_mean)),
        ("KV utilisation peak", _percent(summary.kv_util_peak)),
        ("Prefix-cache hit rate (prompt tokens)", _percent(summary.prefix_cache_hit_rate)),
    ]
    if summary.engine is not None and summary.engine.prefix_cache_hit_rate is not None:
        rows.append(
            ("Prefix-cache hit rate (engine)", _percent(summary.engine.prefix_cache_hit_rate))
        )
    if summary.engine is not None and summary.engine.kv_tiers is not None:
        for tier, figures in summary.engine.kv_tiers.items():
            rows.append((f"KV hit rate, {tier} tier", _percent(figures["hit_rate"])))
            if "transfer_s" in figures:
                rows.append((f"KV loaded from {tier} (GB / s of transfer)",
                             f"{figures['loaded_bytes'] / 1e9:,.1f} / {figures['transfer_s']:,.2f}"))  # fmt: skip
    for label, value in rows:
        table.add_row(label, value)
    return table


def print_summary(summary: Summary, console: Console) -> None:
    """Print the per-tenant table, then throughput, preemptions, KV use and cache hits."""
    console.print(summary_table(summary))
    console.print(engine_table(summary))
