"""The report's verdict: what the runs say about each tenant's SLO, in sentences from the data.

Nothing here is canned: every sentence is computed from the per-request
records and the tenants' SLOs stored in the run directory. Per tenant with an
SLO, the runs are ranked by the share of the tenant's requests that met every
objective (a request that did not complete missed it); the objective missed
most is named with its p99. Runs within :data:`SAME_PP` percentage points of
the best are named together. Then the runs are compared over all tenants with
an SLO, and on fairness (Jain's index over backlogged tenants).

Runs whose latencies coincide (:func:`coinciding_groups`: TTFT and E2E
p50/p90/p99 of every tenant within :data:`COINCIDE_REL`) are drawn as one
curve in the figures and named together here.

The definitions are those of :mod:`fairserve.metrics.summary` (goodput): TPOT
is undefined for one-token outputs and then not held against the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from fairserve.core.model import SLO
from fairserve.report.run_dir import RunDir

__all__ = [
    "COINCIDE_REL",
    "OBJECTIVES",
    "SAME_PP",
    "TenantOutcome",
    "coinciding_groups",
    "format_duration",
    "slo_met",
    "slo_met_arrays",
    "slo_text",
    "tenant_outcomes",
    "verdict",
]

#: Runs this many percentage points of SLO attainment from the best are named with it.
SAME_PP = 0.5
#: Runs whose per-tenant latency quantiles agree within this relative difference coincide.
COINCIDE_REL = 0.05
_COINCIDE_ABS_S = 0.005  # ... or within 5 ms: sub-millisecond noise is not a difference
_QUANTILES = (0.5, 0.9, 0.99)
#: The objectives of an SLO: (attribute, short name).
OBJECTIVES = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))


def format_duration(seconds: float) -> str:
    """A duration for a sentence: ``850 ms``, ``1 s``, ``1.46 s``, ``24.3 s``, ``1,234 s``."""
    if not np.isfinite(seconds):
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1e3:,.0f} ms"
    if seconds < 100.0:
        return f"{seconds:.3g} s"
    return f"{seconds:,.0f} s"


def slo_text(slo: SLO) -> str:
    """``TTFT ≤ 1 s, TPOT ≤ 150 ms``."""
    return ", ".join(
        f"{name} ≤ {format_duration(limit)}"
        for attr, name in OBJECTIVES
        if (limit := getattr(slo, attr)) is not None
    )


@dataclass(frozen=True)
class TenantOutcome:
    """How one run treated one tenant against its SLO."""

    run: str
    requests: int
    met_fraction: float  # of all the tenant's requests (not completed: missed)
    miss_fraction: Mapping[str, float]  # objective attr -> share of requests that missed it
    p99_s: Mapping[str, float]  # objective attr -> p99 over completed requests (NaN: none)


def _latencies(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    def col(name: str) -> np.ndarray:
        return frame[name].cast(pl.Float64).to_numpy()

    arrival, first, finish = col("arrival_s"), col("first_token_s"), col("finish_s")
    gaps = col("output_tokens") - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gaps > 0, (finish - first) / gaps, np.nan)
    return {"ttft_s": first - arrival, "tpot_s": tpot, "e2e_s": finish - arrival}


def slo_met_arrays(
    completed: np.ndarray,
    latencies: Mapping[str, np.ndarray],
    slo: SLO,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per request: met every objective; and per objective attr, missed it.

    ``latencies`` maps ``ttft_s``, ``tpot_s`` and ``e2e_s`` to per-request
    seconds. A request that did not complete missed every objective; TPOT is
    undefined (NaN) for one-token outputs and not held against them.
    """
    met = completed.copy()
    missed = {}
    for attr, _ in OBJECTIVES:
        limit = getattr(slo, attr)
        if limit is None:
            continue
        v = latencies[attr]
        within = v <= limit
        if attr == "tpot_s":
            within |= np.isnan(v)
        ok = completed & within
        missed[attr] = ~ok
        met &= ok
    return met, missed


def slo_met(frame: pl.DataFrame, slo: SLO) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`slo_met_arrays` for the requests of a records frame."""
    return slo_met_arrays((frame["outcome"] == "completed").to_numpy(), _latencies(frame), slo)


def tenant_outcomes(run: RunDir, tenant: str, slo: SLO) -> list[TenantOutcome]:
    """Every run's :class:`TenantOutcome` for ``tenant`` (runs where it sent nothing left out)."""
    out = []
    for label in run.labels:
        frame = run.records_of(label).filter(pl.col("tenant") == tenant)
        if not frame.height:
            continue
        met, missed = slo_met(frame, slo)
        done = (frame["outcome"] == "completed").to_numpy()
        values = _latencies(frame)
        p99 = {}
        for attr in missed:
            v = values[attr][done]
            v = v[np.isfinite(v)]
            p99[attr] = float(np.percentile(v, 99)) if v.size else float("nan")
        out.append(
            TenantOutcome(
                label,
                frame.height,
                float(met.mean()),
                {a: float(m.mean()) for a, m in missed.items()},
                p99,
            )
        )
    return out


def _names(labels: Sequence[str]) -> str:
    if len(labels) <= 2:
        return " and ".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _pct(fraction: float) -> str:
    value = 100 * fraction
    return f"{value:.1f}%" if value < 99.95 or value == 100 else f"{value:.2f}%"


def _worst_objective(outcomes: Sequence[TenantOutcome]) -> str:
    """The objective missed most, summed over the runs (the first one on a tie)."""
    attrs = list(outcomes[0].miss_fraction)
    return max(attrs, key=lambda a: sum(o.miss_fraction[a] for o in outcomes))


def _one_run_sentence(tenant: str, slo: SLO, o: TenantOutcome) -> str:
    attr = _worst_objective([o])
    name = dict(OBJECTIVES)[attr]
    limit = getattr(slo, attr)
    side = "under" if o.p99_s[attr] <= limit else "over"
    return (
        f"{tenant} ({slo_text(slo)}): {_pct(o.met_fraction)} of its {o.requests:,} requests met "
        f"the SLO; {name} p99 {format_duration(o.p99_s[attr])}, {side} its "
        f"{format_duration(limit)} objective."
    )


def _duration_range(values: Sequence[float]) -> str:
    lo, hi = format_duration(min(values)), format_duration(max(values))
    if lo == hi:
        return lo
    if lo.split()[-1] == hi.split()[-1]:  # same unit: "1.1-1.3 s"
        return f"{lo.split()[0]}-{hi}"
    return f"{lo} to {hi}"


def _pct_range(values: Sequence[float]) -> str:
    lo, hi = _pct(min(values)), _pct(max(values))
    return lo if lo == hi else f"{lo[:-1]}-{hi}"


def _p99_phrase(name: str, limit: float, p99s: Sequence[float]) -> str:
    values = _duration_range(p99s)
    if max(p99s) <= limit:
        verb = "keeps" if len(p99s) == 1 else "keep"
        return f"{verb} {name} p99 under its {format_duration(limit)} objective ({values})"
    return f"{name} p99 {values}"


def _tenant_sentence(tenant: str, slo: SLO, outcomes: Sequence[TenantOutcome]) -> str:
    if len(outcomes) == 1:
        return _one_run_sentence(tenant, slo, outcomes[0])
    attr = _worst_objective(outcomes)
    name, limit = dict(OBJECTIVES)[attr], getattr(slo, attr)
    ranked = sorted(outcomes, key=lambda o: -o.met_fraction)
    best = ranked[0].met_fraction
    top = [o for o in ranked if o.met_fraction >= best - SAME_PP / 100]
    rest = [o for o in ranked if o not in top]
    head = f"{tenant} ({slo_text(slo)})"
    p99s = [o.p99_s[attr] for o in top]
    if not rest:
        share = (
            "every request"
            if best == 1.0
            else f"{_pct_range([o.met_fraction for o in top])} of requests"
        )
        return (
            f"{head}: every run meets it for {share}, {name} p99 {_duration_range(p99s)} against "
            f"{format_duration(limit)}: the runs do not differ for {tenant} here."
        )
    share = _pct_range([o.met_fraction for o in top])
    phrase = _p99_phrase(name, limit, p99s)
    verb = "meets" if len(top) == 1 else "meet"
    if phrase.startswith("keep"):
        best_part = f"{_names([o.run for o in top])} {phrase} and {verb} the SLO for {share}"
    else:
        best_part = f"{_names([o.run for o in top])} {verb} it for {share} of requests ({phrase})"
    misses = [
        f"{o.run} for {_pct(1 - o.met_fraction)} ({name} p99 {format_duration(o.p99_s[attr])})"
        for o in reversed(rest)
    ]
    return f"{head}: {best_part}; it is missed by " + ", ".join(misses) + "."


def _overall_sentence(run: RunDir) -> str | None:
    """Which run meets the most SLO-bound requests overall, which the fewest."""
    tenants = [t for t in run.tenants if t in run.slos]
    if not tenants or len(run.labels) < 2:
        return None
    shares = {}
    for label in run.labels:
        met = total = 0
        for t in tenants:
            frame = run.records_of(label).filter(pl.col("tenant") == t)
            if frame.height:
                met += int(slo_met(frame, run.slos[t])[0].sum())
                total += frame.height
        if total:
            shares[label] = met / total
    if len(shares) < 2:
        return None
    order = sorted(shares, key=lambda k: -shares[k])
    best = [k for k in order if shares[k] >= shares[order[0]] - SAME_PP / 100]
    worst = order[-1]
    if worst in best:
        return f"Over all tenants with an SLO, every run meets it for about {_pct(shares[worst])}."
    return (
        f"Over all tenants with an SLO, {_names(best)} {'meets' if len(best) == 1 else 'meet'} "
        f"it for the most requests ({_pct(shares[best[0]])}), {worst} for the fewest "
        f"({_pct(shares[worst])})."
    )


def _fairness_sentence(run: RunDir) -> str | None:
    jain = {
        label: j
        for label in run.labels
        if isinstance(
            j := ((run.summaries.get(label) or {}).get("fairness") or {}).get("jain"), float
        )
    }
    if len(jain) < 2:
        return None
    order = sorted(jain, key=lambda k: -jain[k])
    hi, lo = order[0], order[-1]
    if jain[hi] - jain[lo] < 0.01:
        return (
            f"Fairness (Jain's index over backlogged tenants) is about {jain[hi]:.2f} in every run."
        )
    return (
        f"Fairness (Jain's index over backlogged tenants, 1 = shares in proportion to the "
        f"weights): highest under {hi} ({jain[hi]:.3f}), lowest under {lo} ({jain[lo]:.3f})."
    )


def _coincide_sentence(groups: Sequence[Sequence[str]]) -> str | None:
    same = [g for g in groups if len(g) > 1]
    if not same:
        return None
    parts = [_names(list(g)) for g in same]
    return (
        f"{'; '.join(parts)} give the same latencies (every tenant's TTFT and E2E p50, p90 "
        f"and p99 within {COINCIDE_REL:.0%}): each such group is drawn as one curve."
    )


def verdict(run: RunDir, groups: Sequence[Sequence[str]] | None = None) -> list[str]:
    """The verdict's sentences: per tenant with an SLO, then overall, fairness, coinciding runs.

    Empty when no tenant has an SLO (there is then nothing to judge against).
    """
    judged = []
    for tenant in run.tenants:
        slo = run.slos.get(tenant)
        outcomes = tenant_outcomes(run, tenant, slo) if slo is not None else []
        if slo is not None and outcomes:
            spread = max(o.met_fraction for o in outcomes) - min(o.met_fraction for o in outcomes)
            judged.append((-spread, tenant, _tenant_sentence(tenant, slo, outcomes)))
    if not judged:
        return []
    # The tenants the choice matters most for come first.
    sentences = [text for _, _, text in sorted(judged)]
    overall = _overall_sentence(run)
    if overall:
        sentences.insert(0, overall)
    for extra in (
        _fairness_sentence(run),
        _coincide_sentence(groups if groups is not None else coinciding_groups(run)),
    ):
        if extra:
            sentences.append(extra)
    return sentences


def _profile(run: RunDir, label: str) -> np.ndarray:
    """TTFT and E2E quantiles of every tenant's completed requests (NaN where none)."""
    frame = run.records_of(label).filter(pl.col("outcome") == "completed")
    values: list[float] = []
    for tenant in run.tenants:
        mine = frame.filter(pl.col("tenant") == tenant)
        lat = _latencies(mine)
        for attr in ("ttft_s", "e2e_s"):
            v = lat[attr][np.isfinite(lat[attr])]
            values.extend(np.quantile(v, _QUANTILES) if v.size else [np.nan] * len(_QUANTILES))
    return np.asarray(values, dtype=np.float64)


def coinciding_groups(run: RunDir) -> list[list[str]]:
    """The runs in groups whose latency quantiles coincide (in run order; most are alone)."""
    profiles = {label: _profile(run, label) for label in run.labels}
    groups: list[list[str]] = []
    for label in run.labels:
        mine = profiles[label]
        for group in groups:
            ref = profiles[group[0]]
            both = np.isfinite(mine) & np.isfinite(ref)
            if not np.array_equal(np.isfinite(mine), np.isfinite(ref)):
                continue
            diff = np.abs(mine[both] - ref[both])
            scale = np.maximum(np.abs(ref[both]), np.abs(mine[both]))
            if np.all((diff <= COINCIDE_REL * scale) | (diff <= _COINCIDE_ABS_S)):
                group.append(label)
                break
        else:
            groups.append([label])
    return groups
