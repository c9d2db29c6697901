"""Prefix affinity on the Mooncake synthetic trace (real data, when present)."""

from __future__ import annotations

from fairserve.sim.run import InstanceSpec, SimConfig, simulate
from fairserve.workload import load_trace
from tests.traces import real_trace


def test_prefix_affinity_raises_hits_without_raising_p99_ttft() -> None:
    trace = real_trace("mooncake-synthetic/synthetic_trace.jsonl")
    wl = load_trace(trace)
    figures = {}
    for router in ("round-robin", "prefix-affinity"):
        config = SimConfig(instances=(InstanceSpec(count=8),), router=router)
        summary = simulate(wl.requests(), config).summary()
        figures[router] = (summary.prefix_cache_hit_rate, summary.ttft_s.p99)
    rr_hits, rr_p99 = figures["round-robin"]
    pa_hits, pa_p99 = figures["prefix-affinity"]
    # Measured: 6.3% -> 16.7% of prompt tokens from the cache, p99 TTFT 4.06 -> 3.13 s.
    assert pa_hits >= 1.5 * rr_hits
    assert pa_p99 <= rr_p99
