"""Fair shares in the simulator: VTC's weighted service between backlogged tenants."""

from __future__ import annotations

from typing import Any

import pytest

from fairserve.metrics.fairness import fairness
from fairserve.metrics.records import RecordArrays
from fairserve.sim.run import SimConfig, simulate
from fairserve.workload import Workload
from fairserve.workload.spec import build, parse_spec


def flood(rates: dict[str, float], weights: dict[str, float], duration_s: float) -> Workload:
    def source(tenant: str) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "weight": weights[tenant],
            "arrival": {"process": "poisson", "rate_per_s": rates[tenant]},
            "prompt": {"dist": "lognormal", "mean_tokens": 300, "sigma": 0.5},
            "output": {"dist": "lognormal", "mean_tokens": 200, "sigma": 0.5},
        }

    spec = {"seed": 1, "duration_s": duration_s, "sources": [source(t) for t in rates]}
    return build(parse_spec(spec, "flood"))


def service_by(records: RecordArrays, until_s: float) -> dict[str, float]:
    """VTC service (prompt + 2 x output) of the requests finished by ``until_s``."""
    done = records.completed & (records.finish_s <= until_s)
    service = records.prompt_tokens + 2 * records.output_tokens
    return {
        name: float(service[done & (records.tenant == code)].sum())
        for code, name in enumerate(records.tenant_names)
    }


def run(wl: Workload, policy: str, placement: str = "gateway") -> RecordArrays:
    tenants = tuple(wl.tenant_config(n) for n in wl.tenant_names())
    config = SimConfig(policy=policy, placement=placement, tenants=tenants, max_engine_waiting=1)
    return simulate(wl.requests(), config).records


@pytest.mark.parametrize("placement", ["gateway", "engine"])
def test_vtc_weights_two_to_one_converge_within_5_percent(placement: str) -> None:
    # Both tenants send 60 req/s; one engine completes about 12 req/s in all.
    wl = flood({"a": 60.0, "b": 60.0}, {"a": 2.0, "b": 1.0}, duration_s=300)
    served = service_by(run(wl, "vtc", placement), until_s=300)
    assert served["a"] / served["b"] == pytest.approx(2.0, rel=0.05)
    fifo = service_by(run(wl, "fifo"), until_s=300)
    # FIFO ignores weights: the ratio is that of what each tenant sent first. The
    # 3,652 requests it completes in 300 s (Poisson arrivals, lognormal sizes)
    # differ by tenant by a few percent (measured 1.053).
    assert fifo["a"] / fifo["b"] == pytest.approx(1.0, rel=0.08)


def test_vtc_keeps_the_service_difference_bounded_when_one_tenant_sends_10x() -> None:
    # The light tenant alone sends more than half of what the engine serves (about
    # 12 req/s of these requests), so both are always backlogged; the heavy one
    # sends 10x more.
    wl = flood({"heavy": 500.0, "light": 50.0}, {"heavy": 1.0, "light": 1.0}, duration_s=300)
    weights = {"heavy": 1.0, "light": 1.0}
    vtc = run(wl, "vtc")
    fifo = run(wl, "fifo")
    # Equal weights, both always backlogged: equal service under VTC ...
    served = service_by(vtc, until_s=300)
    assert served["heavy"] / served["light"] == pytest.approx(1.0, rel=0.05)
    # ... and the accumulated difference does not grow with time, unlike FIFO's.
    half = fairness(_until(vtc, 150.0), weights, window_s=1.0).max_service_diff
    full = fairness(vtc, weights, window_s=1.0).max_service_diff
    fifo_half = fairness(_until(fifo, 150.0), weights, window_s=1.0).max_service_diff
    fifo_full = fairness(fifo, weights, window_s=1.0).max_service_diff
    assert full <= 1.2 * half + 20_000
    assert fifo_full >= 1.8 * fifo_half
    assert full < 0.05 * fifo_full
    assert fairness(vtc, weights, window_s=1.0).jain > 0.95


def _until(records: RecordArrays, t_s: float) -> RecordArrays:
    """The records of requests that arrived before ``t_s``."""
    return records.select(records.arrival_s < t_s)
