"""Warnings on preemption storms and on runs past the capacity knee."""

from __future__ import annotations

import numpy as np

from fairserve.core.model import Request
from fairserve.metrics.run_warnings import preemption_storm
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig, simulate


def _run(rate_per_s: float, n: int = 400, output: int = 200, **engine: int) -> list[str]:
    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    reqs = [Request(i, float(arrivals[i]), 500, output) for i in range(n)]
    config = SimConfig(instances=(InstanceSpec(engine=EngineConfig(**engine)),))  # type: ignore[arg-type]
    return list(simulate(reqs, config).summary().warnings)


def test_a_run_below_capacity_has_no_warning() -> None:
    assert _run(rate_per_s=2.0) == []


def test_an_overloaded_run_is_past_the_knee() -> None:
    warnings = _run(rate_per_s=400.0, max_num_seqs=8)
    assert any(w.startswith("past the capacity knee") for w in warnings)


def test_a_preemption_storm_is_named() -> None:
    # Prompts fit at admission; the answers then outgrow the KV cache.
    warnings = _run(rate_per_s=400.0, n=200, output=1500, num_gpu_blocks=400)
    assert any(w.startswith("preemption storm") for w in warnings), warnings
    assert preemption_storm(10, 100) is None
    assert "3.00 each" in (preemption_storm(300, 100) or "")
