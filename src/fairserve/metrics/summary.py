"""The run summary: latency percentiles, throughput, goodput and engine figures.

Definitions (DESIGN.md, "Metrics"), all times in seconds:

- **TTFT**: arrival to first output token (``RecordArrays.ttft_s``).
- **TPOT**: mean time between output tokens after the first,
  ``(finish - first token) / (output tokens - 1)``; undefined (NaN, left out of
  the statistics) for one-token outputs (``RecordArrays.tpot_s``).
- **E2E**: arrival to last output token (``RecordArrays.e2e_s``).
- **Queueing delay**: arrival to first being scheduled on an engine step
  (``RecordArrays.queue_s``).
- Latency statistics (p50, p90, p99, mean) are over **completed** requests
  only, NaN samples dropped; percentiles are numpy's default linear
  interpolation. Every statistic is NaN when there is no sample.
- **Simulated time** ``sim_time_s``: the ``duration_s`` given, else the last
  finish minus the first arrival over all records. Every ``*_s`` rate below is
  "per second of ``sim_time_s``" and is NaN when ``sim_time_s`` is not > 0.
- **Throughput**: output tokens (``throughput_tok_s``), requests
  (``throughput_req_s``) and prompt tokens (``input_throughput_tok_s``) of
  completed requests per second.
- **Goodput**: completed requests that met their tenant's SLO, per second
  (``req_s``) and their output tokens per second (``tok_s``). A tenant's SLO is
  ``slos[tenant]``, else ``default_slo``, else none (every completed request
  meets it). An objective left ``None`` is not checked; a one-token output has
  no TPOT and so meets any TPOT objective. ``fraction`` is the share of *all*
  ended requests (completed, cancelled and failed) that met their SLO: a
  request that did not complete did not meet it.
- **Prefix-cache hit rate**: cached prompt tokens over prompt tokens, of
  completed requests, from the records.
- **Preemptions**: the engine's count when ``engine`` is given, else the sum of
  the per-request counts in the records. **KV utilisation** (mean and peak
  fraction of KV blocks in use) comes only from ``engine``; NaN without it.
- **Warnings**: preemption storms and runs past the capacity knee, defined in
  :mod:`fairserve.metrics.run_warnings`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairserve.core.model import SLO, Outcome
from fairserve.metrics.percentiles import group_samples, sorted_percentiles
from fairserve.metrics.records import OUTCOME_CODES, RecordArrays
from fairserve.metrics.run_warnings import run_warnings

__all__ = [
    "EngineStats",
    "Goodput",
    "LatencyStats",
    "Summary",
    "TenantSummary",
    "latency_stats",
    "summarize",
]

NAN = float("nan")
_PERCENTILES = np.array([50.0, 90.0, 99.0])


def _json_float(value: float) -> float | None:
    """A float for JSON: NaN (an undefined figure) becomes ``None``."""
    return None if math.isnan(value) else float(value)


def _per_s(amount: float, sim_time_s: float) -> float:
    """``amount / sim_time_s``, NaN when the time is not a positive number."""
    return float(amount) / sim_time_s if sim_time_s > 0 else NAN


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is zero."""
    return float(numerator) / float(denominator) if denominator else NAN


@dataclass(frozen=True)
class LatencyStats:
    """p50, p90, p99 and mean of one latency, in seconds; all NaN without samples."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def empty(cls) -> LatencyStats:
        """The statistics of no samples."""
        return cls(NAN, NAN, NAN, NAN)

    def to_dict(self) -> dict[str, float | None]:
        """``{"p50", "p90", "p99", "mean"}`` with NaN as ``None``."""
        return {
            "p50": _json_float(self.p50),
            "p90": _json_float(self.p90),
            "p99": _json_float(self.p99),
            "mean": _json_float(self.mean),
        }


@dataclass(frozen=True)
class EngineStats:
    """Engine-side figures the records cannot give, provided by the simulator.

    ``kv_util_*`` are fractions of the KV blocks in use (0..1);
    ``prefix_cache_hit_rate`` is the engine's own view, ``None`` when it has no
    prefix cache. ``kv_tiers`` (``None`` without KV tiers): per tier (``gpu``,
    ``cpu``, ``remote``) the prompt tokens it served at first admissions
    (``hit_tokens``) and their share of all prompt tokens (``hit_rate``); for
    the tiers below the GPU also ``loaded_bytes`` and ``transfer_s`` (every
    load, re-admissions after a preemption included), ``capacity_blocks`` and
    ``evictions`` (runs pushed out of the tier), summed over instances.
    """

    preemptions: int
    kv_util_mean: float
    kv_util_peak: float
    prefix_cache_hit_rate: float | None
    kv_tiers: Mapping[str, Mapping[str, float]] | None = None


@dataclass(frozen=True)
class Goodput:
    """Completed requests that met their SLO: per second, tokens per second, share."""

    req_s: float
    tok_s: float
    fraction: float

    def to_dict(self) -> dict[str, float | None]:
        """``{"req_s", "tok_s", "fraction"}`` with NaN as ``None``."""
        return {
            "req_s": _json_float(self.req_s),
            "tok_s": _json_float(self.tok_s),
            "fraction": _json_float(self.fraction),
        }


@dataclass(frozen=True)
class TenantSummary:
    """The figures of one tenant (same definitions as the overall ones)."""

    requests: int
    completed: int
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    queue_s: LatencyStats
    goodput: Goodput
    throughput_tok_s: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form; see ``Summary.to_dict``."""
        return {
            "requests": self.requests,
            "completed": self.completed,
            "ttft_s": self.ttft_s.to_dict(),
            "tpot_s": self.tpot_s.to_dict(),
            "e2e_s": self.e2e_s.to_dict(),
            "queue_s": self.queue_s.to_dict(),
            "goodput": self.goodput.to_dict(),
            "throughput_tok_s": _json_float(self.throughput_tok_s),
        }


@dataclass(frozen=True)
class Summary:
    """Overall and per-tenant figures of one run; definitions in the module docstring."""

    requests: int
    completed: int
    failed: int
    cancelled: int
    sim_time_s: float
    throughput_tok_s: float
    throughput_req_s: float
    input_throughput_tok_s: float
    preemptions: int
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    queue_s: LatencyStats
    goodput: Goodput
    kv_util_mean: float
    kv_util_peak: float
    prefix_cache_hit_rate: float
    per_tenant: Mapping[str, TenantSummary] = field(default_factory=dict)
    engine: EngineStats | None = None
    warnings: tuple[str, ...] = ()
    slo_tpot_s: float | None = None  # SLO-driven concurrency: the tightest objective held to
    slo_held: int = 0  # ... and the dispatches it held back

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able data; undefined (NaN) figures are ``None``.

        Keys: ``requests``, ``completed``, ``failed``, ``cancelled``,
        ``sim_time_s``, ``throughput_tok_s``, ``throughput_req_s``,
        ``input_throughput_tok_s``, ``preemptions``, ``ttft_s``, ``tpot_s``,
        ``e2e_s``, ``queue_s`` (each ``{"p50", "p90", "p99", "mean"}``),
        ``goodput`` (``{"req_s", "tok_s", "fraction"}``), ``kv_utilization``
        (``{"mean", "peak"}``), ``prefix_cache_hit_rate`` and ``per_tenant``
        (tenant -> ``{requests, completed, ttft_s, tpot_s, e2e_s, queue_s,
        goodput, throughput_tok_s}``) and ``warnings`` (sentences about a run whose
        figures should not be read at face value, see ``metrics.run_warnings``),
        ``slo_concurrency_tpot_s`` (the tightest TPOT objective the simulator held
        batches to, null when off) and ``slo_concurrency_held`` (dispatches it held
        back); with KV tiers also ``kv_tiers`` (``EngineStats.kv_tiers``).
        """
        data: dict[str, Any] = {
            "requests": self.requests,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "sim_time_s": _json_float(self.sim_time_s),
            "throughput_tok_s": _json_float(self.throughput_tok_s),
            "throughput_req_s": _json_float(self.throughput_req_s),
            "input_throughput_tok_s": _json_float(self.input_throughput_tok_s),
            "preemptions": self.preemptions,
            "ttft_s": self.ttft_s.to_dict(),
            "tpot_s": self.tpot_s.to_dict(),
            "e2e_s": self.e2e_s.to_dict(),
            "queue_s": self.queue_s.to_dict(),
            "goodput": self.goodput.to_dict(),
            "kv_utilization": {
                "mean": _json_float(self.kv_util_mean),
                "peak": _json_float(self.kv_util_peak),
            },
            "prefix_cache_hit_rate": _json_float(self.prefix_cache_hit_rate),
            "per_tenant": {name: t.to_dict() for name, t in self.per_tenant.items()},
            "warnings": list(self.warnings),
            "slo_concurrency_tpot_s": self.slo_tpot_s,
            "slo_concurrency_held": self.slo_held,
        }
        if self.engine is not None and self.engine.kv_tiers is not None:
            data["kv_tiers"] = {
                tier: {k: v if isinstance(v, int) else _json_float(v) for k, v in fig.items()}
                for tier, fig in self.engine.kv_tiers.items()
            }
        return data


def latency_stats(values: np.ndarray) -> LatencyStats:
    """p50/p90/p99 (numpy's linear interpolation) and mean of ``values``, NaN ignored."""
    samples = np.asarray(values, dtype=np.float64).ravel()
    samples = np.sort(samples[~np.isnan(samples)])
    return _slice_stats(samples, 0, samples.shape[0], float(samples.sum()))


def _slice_stats(
    sorted_values: np.ndarray,
    start: int,
    count: int,
    total: float,
    quantiles: np.ndarray | None = None,
) -> LatencyStats:
    """Statistics of ``sorted_values[start : start + count]``, whose sum is ``total``.

    ``quantiles`` are the slice's p50/p90/p99 when already computed.
    """
    if count == 0:
        return LatencyStats.empty()
    if quantiles is None:
        quantiles = sorted_percentiles(
            sorted_values, np.array([start]), np.array([count]), _PERCENTILES
        )[0]
    low, high = float(sorted_values[start]), float(sorted_values[start + count - 1])
    # The true mean lies within [min, max]; the clamp undoes float rounding of the sum.
    mean = min(max(total / count, low), high)
    return LatencyStats(float(quantiles[0]), float(quantiles[1]), float(quantiles[2]), mean)


def _grouped_latency(
    values: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[LatencyStats, list[LatencyStats]]:
    """Statistics of ``values`` overall and for each group code in ``[0, n_groups)``."""
    samples = group_samples(values, codes, n_groups)
    overall = _slice_stats(
        samples.overall, 0, samples.overall.shape[0], float(samples.overall.sum())
    )
    quantiles = sorted_percentiles(samples.values, samples.starts, samples.counts, _PERCENTILES)
    groups = [
        _slice_stats(
            samples.values,
            int(samples.starts[g]),
            int(samples.counts[g]),
            float(samples.sums[g]),
            quantiles[g],
        )
        for g in range(n_groups)
    ]
    return overall, groups


def _slo_met(
    records: RecordArrays,
    completed: np.ndarray,
    slos: Mapping[str, SLO] | None,
    default_slo: SLO | None,
) -> np.ndarray:
    """Boolean mask: completed and met its tenant's SLO (see the module docstring)."""
    n_tenants = len(records.tenant_names)
    limits = np.full((3, n_tenants), np.inf)  # rows: ttft, tpot, e2e; inf = no objective
    for code, name in enumerate(records.tenant_names):
        slo = (slos or {}).get(name, default_slo)
        if slo is not None:
            for row, limit in enumerate((slo.ttft_s, slo.tpot_s, slo.e2e_s)):
                if limit is not None:
                    limits[row, code] = limit
    ttft_limit, tpot_limit, e2e_limit = (limits[row][records.tenant] for row in range(3))
    tpot = records.tpot_s
    met = completed.copy()
    met &= np.isinf(ttft_limit) | (records.ttft_s <= ttft_limit)
    met &= np.isinf(tpot_limit) | np.isnan(tpot) | (tpot <= tpot_limit)
    met &= np.isinf(e2e_limit) | (records.e2e_s <= e2e_limit)
    return met


def _sim_time_s(records: RecordArrays, duration_s: float | None) -> float:
    """``duration_s`` if given, else last finish minus first arrival (NaN if none)."""
    if duration_s is not None:
        if not duration_s > 0:
            raise ValueError(f"duration_s must be > 0 or None, got {duration_s!r}")
        return float(duration_s)
    finish = records.finish_s[~np.isnan(records.finish_s)]
    arrival = records.arrival_s[~np.isnan(records.arrival_s)]
    if finish.size == 0 or arrival.size == 0:
        return NAN
    return float(finish.max() - arrival.min())


@dataclass(frozen=True)
class _Totals:
    """Per-tenant counts and token sums, indexed by tenant code."""

    requests: np.ndarray
    completed: np.ndarray
    met: np.ndarray
    output_tokens: np.ndarray  # of completed requests
    met_output_tokens: np.ndarray  # of requests that met their SLO
    prompt_tokens: np.ndarray  # of completed requests
    cached_prompt_tokens: np.ndarray  # of completed requests

    @classmethod
    def of(cls, records: RecordArrays, completed: np.ndarray, met: np.ndarray) -> _Totals:
        """Sum the records per tenant with ``np.bincount`` (no loop over rows)."""
        tenant = records.tenant.astype(np.int64)
        n = len(records.tenant_names)

        def total(mask: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
            weights = None if tokens is None else tokens[mask].astype(np.float64)
            return np.bincount(tenant[mask], weights=weights, minlength=n)

        everything = np.ones(len(records), dtype=bool)
        return cls(
            requests=total(everything),
            completed=total(completed),
            met=total(met),
            output_tokens=total(completed, records.output_tokens),
            met_output_tokens=total(met, records.output_tokens),
            prompt_tokens=total(completed, records.prompt_tokens),
            cached_prompt_tokens=total(completed, records.cached_prompt_tokens),
        )


def _goodput(met: float, met_output_tokens: float, requests: float, sim_time_s: float) -> Goodput:
    """Goodput from the counts of requests that met their SLO."""
    return Goodput(
        req_s=_per_s(met, sim_time_s),
        tok_s=_per_s(met_output_tokens, sim_time_s),
        fraction=_ratio(met, requests),
    )


_LATENCIES = ("ttft_s", "tpot_s", "e2e_s", "queue_s")


def summarize(
    records: RecordArrays,
    *,
    duration_s: float | None = None,
    slos: Mapping[str, SLO] | None = None,
    default_slo: SLO | None = None,
    engine: EngineStats | None = None,
) -> Summary:
    """Summarise a run's records; every definition is in the module docstring.

    ``slos`` maps tenant names to their SLO; tenants not in it use
    ``default_slo``. Raises ``ValueError`` if ``duration_s`` is not > 0.
    Vectorised: measured 0.34 s for 1,000,000 records and 50 tenants (sorting dominates).
    """
    sim_time_s = _sim_time_s(records, duration_s)
    completed = records.completed
    met = _slo_met(records, completed, slos, default_slo)
    totals = _Totals.of(records, completed, met)
    tenant = records.tenant[completed]
    latencies = {
        name: _grouped_latency(getattr(records, name)[completed], tenant, len(records.tenant_names))
        for name in _LATENCIES
    }
    per_tenant = {
        name: TenantSummary(
            requests=int(totals.requests[code]),
            completed=int(totals.completed[code]),
            **{key: latencies[key][1][code] for key in _LATENCIES},
            goodput=_goodput(
                totals.met[code], totals.met_output_tokens[code], totals.requests[code], sim_time_s
            ),
            throughput_tok_s=_per_s(totals.output_tokens[code], sim_time_s),
        )
        for code, name in sorted(enumerate(records.tenant_names), key=lambda item: item[1])
    }
    outcomes = np.bincount(records.outcome.astype(np.int64), minlength=len(OUTCOME_CODES))
    prompt_tokens = float(totals.prompt_tokens.sum())
    preemptions = engine.preemptions if engine else int(records.preemptions.sum())
    return Summary(
        requests=len(records),
        completed=int(totals.completed.sum()),
        failed=int(outcomes[OUTCOME_CODES.index(Outcome.FAILED)]),
        cancelled=int(outcomes[OUTCOME_CODES.index(Outcome.CANCELLED)]),
        sim_time_s=sim_time_s,
        throughput_tok_s=_per_s(totals.output_tokens.sum(), sim_time_s),
        throughput_req_s=_per_s(totals.completed.sum(), sim_time_s),
        input_throughput_tok_s=_per_s(prompt_tokens, sim_time_s),
        preemptions=preemptions,
        ttft_s=latencies["ttft_s"][0],
        tpot_s=latencies["tpot_s"][0],
        e2e_s=latencies["e2e_s"][0],
        queue_s=latencies["queue_s"][0],
        goodput=_goodput(
            totals.met.sum(), totals.met_output_tokens.sum(), len(records), sim_time_s
        ),
        kv_util_mean=engine.kv_util_mean if engine else NAN,
        kv_util_peak=engine.kv_util_peak if engine else NAN,
        prefix_cache_hit_rate=_ratio(totals.cached_prompt_tokens.sum(), prompt_tokens),
        per_tenant=per_tenant,
        engine=engine,
        warnings=run_warnings(records, preemptions),
    )
