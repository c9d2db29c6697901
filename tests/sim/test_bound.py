"""The lower bound (each request alone on an empty engine) is never beaten, by any policy."""

from __future__ import annotations

import numpy as np
import pytest

from fairserve.core.model import Request
from fairserve.core.policies import POLICIES
from fairserve.sim.bound import alone_e2e_s
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig, simulate


def _requests(n: int = 300, seed: int = 5) -> list[Request]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.05, n))
    out = []
    for i in range(n):
        shared = i % 3 == 0  # a third share a 4-block prefix
        out.append(
            Request(
                i, float(arrivals[i]), int(rng.integers(64, 3000)), int(rng.integers(1, 600)),
                tenant="ab"[i % 2], predicted_output_tokens=int(rng.integers(1, 600)),
                priority=i % 3, prefix_hashes=(7, 8, 9, 10) if shared else None,
            )
        )  # fmt: skip
    return out


# A small KV cache and batch cap: requests queue and get preempted.
INSTANCE = InstanceSpec(engine=EngineConfig(max_num_seqs=16, num_gpu_blocks=2000))


@pytest.mark.parametrize("placement", ["gateway", "engine"])
@pytest.mark.parametrize("policy", POLICIES.names())
def test_no_policy_beats_the_bound_on_any_request(policy: str, placement: str) -> None:
    reqs = _requests()
    bound = alone_e2e_s(reqs, INSTANCE)
    config = SimConfig(instances=(INSTANCE,), policy=policy, placement=placement)
    result = simulate(reqs, config)
    e2e = dict(zip(result.records.request_id.tolist(), result.records.e2e_s.tolist(),
                   strict=True))  # fmt: skip
    assert result.engine.preemptions > 0 or placement == "gateway"
    for i, alone in enumerate(bound):
        assert e2e[i] >= alone - 1e-9, (i, e2e[i], alone)


def test_the_bound_is_exact_for_a_request_alone() -> None:
    reqs = [Request(0, 0.0, 3000, 200), Request(1, 100.0, 20_000, 50)]
    result = simulate(reqs, SimConfig())
    assert np.allclose(alone_e2e_s(reqs), result.records.e2e_s)


def test_a_cached_prefix_lowers_the_bound() -> None:
    cold = Request(0, 0.0, 8192, 10)
    warm = Request(0, 0.0, 8192, 10, prefix_hashes=tuple(range(512)))
    assert alone_e2e_s([warm])[0] < alone_e2e_s([cold])[0]
