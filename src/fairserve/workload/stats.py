"""Summary statistics of a workload (what ``fairserve trace stats`` prints).

Definitions, so that numbers can be checked independently:
  * ``rate_per_s``: ``(n - 1) / duration_s``, the inverse of the mean gap
    between consecutive arrivals (``duration_s`` is first to last arrival).
  * ``interarrival_cv``: standard deviation (population, ``ddof=0``) of the
    gaps divided by their mean.
  * percentiles: numpy's default linear interpolation.
  * ``output_tokens`` statistics (and each tenant's ``output_tokens_mean``)
    leave out rows flagged failed (0 tokens in a trace).
  * ``prefix_reuse_ratio``: of all prefix blocks in arrival order, the share
    whose hash already appeared in an earlier block (a prefix-cache upper
    bound with infinite cache).
  * ``tenants``: each tenant's share of the requests (rows).
  * ``rate_over_time``: arrivals per bin over the bin's width; the last bin
    ends at the last arrival, so it is divided by its real width (a last bin
    under half the width is joined to the one before it, so one arrival in a
    sliver is not a spike).
  * ``timestamps``: ``zero_gap_share``, the share of gaps between consecutive
    arrivals that are exactly 0, and ``batched``: true when more than
    :data:`BATCHED_ZERO_GAPS` of them are (arrival times recorded in batches:
    the inter-arrival CV then measures the batching, not the traffic);
    ``quantum_s``, the most common non-zero gap in that case.
  * ``conversation_stats`` (traces with conversation ids): turns per
    conversation (mean, p50, p90, p99, max; a one-request conversation has one
    turn) and the interval between consecutive turns of one conversation
    (arrival to arrival, seconds).
  * ``failures`` (traces with a ``failed`` column): the failure share and
    whether it rises with load, from :func:`fairserve.workload.failures.fit_failures`
    (60 s windows; ``intercept`` and ``slope_per_rps`` are a failure model's
    parameters, ``share_quiet``/``share_busy`` the share in the quietest and
    busiest quarter of windows); None with fewer than four full windows.
  * ``warnings``: sentences about figures not to be read at face value (the
    reader's, e.g. ServeGen clients skipped, then batched timestamps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fairserve.workload.base import Workload
from fairserve.workload.failures import FailureFit, fit_failures

PERCENTILES = (50, 90, 99)
#: More than this share of zero gaps between arrivals: timestamps come in batches.
BATCHED_ZERO_GAPS = 0.5


def length_summary(values: np.ndarray) -> dict[str, float]:
    """``mean``, ``p50``, ``p90``, ``p99``, ``min``, ``max`` of a length column."""
    if values.size == 0:
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan}
    pct = np.percentile(values, PERCENTILES)
    return {
        "mean": float(values.mean()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        "min": float(values.min()),
        "max": float(values.max()),
    }


def interarrival_cv(arrival_s: np.ndarray) -> float:
    """CV of the gaps between consecutive arrivals (NaN with fewer than 3 rows)."""
    if arrival_s.size < 3:
        return math.nan
    gaps = np.diff(arrival_s)
    mean = gaps.mean()
    return float(gaps.std() / mean) if mean > 0 else math.nan


def prefix_reuse_ratio(workload: Workload) -> float | None:
    """Share of prefix blocks whose hash appeared earlier; ``None`` without hashes."""
    if workload.prefix_hashes is None:
        return None
    seen: set[int] = set()
    total = reused = 0
    for hashes in workload.prefix_hashes.tolist():
        if not hashes:
            continue
        for h in hashes:
            total += 1
            if h in seen:
                reused += 1
            else:
                seen.add(h)
    return reused / total if total else None


def rate_over_time(workload: Workload, bin_s: float | None = None) -> dict[str, Any]:
    """Requests per second in consecutive bins (about 60 bins unless ``bin_s``)."""
    arr = workload.arrival_s
    if arr.size == 0:
        return {"bin_s": bin_s or 0.0, "start_s": [], "rate_per_s": []}
    start = float(arr[0])
    span = max(float(arr[-1]) - start, 1e-9)
    if bin_s is None:
        bin_s = _nice_bin(span / 60)
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    n_bins = max(1, math.ceil(span / bin_s - 1e-9))
    last_s = span - (n_bins - 1) * bin_s  # the last bin ends at the last arrival
    if n_bins > 1 and last_s < bin_s / 2:  # a sliver: joined to the bin before it
        n_bins -= 1
        last_s += bin_s
    counts = np.bincount(
        np.minimum(((arr - start) / bin_s).astype(np.int64), n_bins - 1), minlength=n_bins
    )
    # A partial last bin is divided by its own width, not the full one.
    widths = np.full(n_bins, bin_s)
    widths[-1] = last_s if last_s > 1e-9 else bin_s
    return {
        "bin_s": bin_s,
        "start_s": [start + i * bin_s for i in range(n_bins)],
        "rate_per_s": (counts / widths).tolist(),
        "last_bin_s": float(widths[-1]),
    }


def timestamp_batching(arrival_s: np.ndarray) -> dict[str, Any] | None:
    """Share of zero gaps, whether timestamps come in batches, the batch quantum (None: < 3 rows)."""
    if arrival_s.size < 3:
        return None
    gaps = np.diff(np.sort(arrival_s))
    zero = float(np.mean(gaps == 0))
    out: dict[str, Any] = {"zero_gap_share": zero, "batched": zero > BATCHED_ZERO_GAPS}
    if out["batched"]:
        nonzero = np.round(gaps[gaps > 0], 6)
        if nonzero.size:
            values, counts = np.unique(nonzero, return_counts=True)
            out["quantum_s"] = float(values[np.argmax(counts)])
    return out


def conversation_stats(workload: Workload) -> dict[str, Any] | None:
    """Turns per conversation and the interval between turns; None without conversation ids."""
    ids = workload.conversation_id
    if ids is None or len(workload) == 0:
        return None
    _, inverse, turns = np.unique(
        np.asarray(ids, dtype=str), return_inverse=True, return_counts=True
    )
    order = np.lexsort((workload.arrival_s, inverse))
    same = inverse[order][1:] == inverse[order][:-1]
    intervals = np.diff(workload.arrival_s[order])[same]
    return {
        "conversations": int(turns.size),
        "multi_turn_share": float(np.mean(turns > 1)),
        "turns": _clean_dict(length_summary(turns.astype(np.float64))),
        "turn_interval_s": _clean_dict(length_summary(intervals)),
    }


def _warnings(
    workload: Workload, batching: dict[str, Any] | None, failures: FailureFit | None
) -> list[str]:
    out = [str(w) for w in workload.meta.get("warnings", [])]
    if failures is not None and failures.rises_with_load:
        out.append(
            f"failures rise with load: {failures.share_quiet:.1%} of requests fail in the "
            f"quietest quarter of {failures.window_s:g} s windows, {failures.share_busy:.1%} "
            f"in the busiest (p = {failures.p_value:.1g})"
        )
    if batching is not None and batching["batched"]:
        quantum = batching.get("quantum_s")
        out.append(
            f"{batching['zero_gap_share']:.0%} of the gaps between arrivals are 0: the "
            "timestamps come in batches"
            + (f" (most often {quantum:g} s apart)" if quantum is not None else "")
            + ", so the inter-arrival CV measures the batching, not the traffic"
        )
    return out


def _nice_bin(raw_s: float) -> float:
    """Round a bin width up to 1, 2 or 5 times a power of ten."""
    if raw_s <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(raw_s))
    for step in (1, 2, 5, 10):
        if raw_s <= step * base:
            return float(step * base)
    return float(10 * base)  # pragma: no cover - the loop always returns


def compute_stats(workload: Workload, *, bin_s: float | None = None) -> dict[str, Any]:
    """All statistics of ``fairserve trace stats`` as one JSON-ready dict."""
    n = len(workload)
    duration = workload.duration_s
    ok = slice(None) if workload.failed is None else ~workload.failed
    codes = workload.tenant_codes
    batching = timestamp_batching(workload.arrival_s)
    failures = fit_failures(workload)
    counts = np.bincount(codes, minlength=len(workload.tenant_table)) if n else np.zeros(0)
    per_tenant: dict[str, Any] = {}
    for code, name in enumerate(workload.tenant_table):
        count = int(counts[code]) if code < counts.size else 0
        if count == 0:
            continue
        rows = codes == code
        t_arr = workload.arrival_s[rows]
        served = rows if workload.failed is None else rows & ~workload.failed
        per_tenant[name] = {
            "requests": count,
            "share": count / n,
            "rate_per_s": _rate(t_arr),
            "interarrival_cv": _clean(interarrival_cv(t_arr)),
            "prompt_tokens_mean": float(workload.prompt_tokens[rows].mean()),
            "output_tokens_mean": _clean(float(workload.output_tokens[served].mean()))
            if served.any()
            else None,
        }
    out: dict[str, Any] = {
        "source": workload.meta.get("source"),
        "format": workload.meta.get("format"),
        "requests": n,
        "duration_s": duration,
        "rate_per_s": _rate(workload.arrival_s),
        "interarrival_cv": _clean(interarrival_cv(workload.arrival_s)),
        "prompt_tokens": _clean_dict(length_summary(workload.prompt_tokens)),
        "output_tokens": _clean_dict(length_summary(workload.output_tokens[ok])),
        "tenants": {name: info["share"] for name, info in per_tenant.items()},
        "per_tenant": per_tenant,
        "failed": workload.n_failed,
        "skipped_rows": workload.skipped_rows,
        "prefix_reuse_ratio": prefix_reuse_ratio(workload),
        "prefix_block_tokens": workload.prefix_block_tokens
        if workload.prefix_hashes is not None
        else None,
        "conversations": None
        if workload.conversation_id is None
        else len(set(workload.conversation_id.tolist())),
        "conversation_stats": conversation_stats(workload),
        "failures": None if failures is None else failures.as_dict(),
        "timestamps": batching,
        "rate_over_time": rate_over_time(workload, bin_s),
        "warnings": _warnings(workload, batching, failures),
    }
    for key in ("records_read", "truncated", "clients", "clients_skipped", "skipped_clients"):
        if key in workload.meta:
            out[key] = workload.meta[key]
    return out


def _rate(arrival_s: np.ndarray) -> float | None:
    if arrival_s.size < 2:
        return None
    span = float(arrival_s[-1] - arrival_s[0])
    return (arrival_s.size - 1) / span if span > 0 else None


def _clean(value: float) -> float | None:
    """NaN is not JSON: report a statistic that does not exist as null."""
    return None if math.isnan(value) else value


def _clean_dict(values: dict[str, float]) -> dict[str, float | None]:
    return {key: _clean(value) for key, value in values.items()}
