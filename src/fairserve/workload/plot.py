"""A one-page PNG of a workload: rate over time, gaps and length distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fairserve.workload.base import Workload


def plot_workload(workload: Workload, stats: dict[str, Any], out: Path) -> None:
    """Write a 2x2 figure: rate per tenant, inter-arrival histogram, length CDFs."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax_rate, ax_gap, ax_prompt, ax_output = axes.ravel()
    bin_s = stats["rate_over_time"]["bin_s"] or 1.0
    start = float(workload.arrival_s[0]) if len(workload) else 0.0
    span = max(workload.duration_s, bin_s)
    edges = start + np.arange(0, span + bin_s, bin_s)
    for code, name in enumerate(workload.tenant_table):
        rows = workload.tenant_codes == code
        if not rows.any():
            continue
        counts, _ = np.histogram(workload.arrival_s[rows], bins=edges)
        ax_rate.step(edges[:-1] - start, counts / bin_s, where="post", label=name)
    ax_rate.set(title="rate over time", xlabel="time (s)", ylabel="requests/s")
    if len(workload.tenant_table) <= 12:
        ax_rate.legend(fontsize="small")
    gaps = np.diff(workload.arrival_s)
    gaps = gaps[gaps > 0]
    if gaps.size:
        ax_gap.hist(gaps, bins=np.logspace(np.log10(gaps.min()), np.log10(gaps.max()) + 1e-9, 50))
        ax_gap.set_xscale("log")
    ax_gap.set(
        title=f"inter-arrival (CV {stats['interarrival_cv'] or float('nan'):.2f})",
        xlabel="gap (s)",
        ylabel="count",
    )
    for ax, values, title in (
        (ax_prompt, workload.prompt_tokens, "prompt tokens"),
        (ax_output, workload.output_tokens, "output tokens"),
    ):
        ordered = np.sort(values[values > 0])
        if ordered.size:
            ax.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size)
            ax.set_xscale("log")
        ax.set(title=f"{title} CDF", xlabel="tokens", ylabel="fraction")
    fig.suptitle(f"{stats.get('source')}: {stats['requests']:,} requests")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
