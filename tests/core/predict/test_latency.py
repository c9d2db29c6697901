"""The latency predictor: hand-checked design terms, exact recovery, simulator telemetry."""

from __future__ import annotations

import numpy as np
import pytest

from fairserve.core.predict.latency import BatchState, LatencyModel, design, fit, mae_percent


def state(d: int = 0, k: int = 0, q: int = 0, p: int = 100, o: int = 10) -> BatchState:
    return BatchState(d, k, q, p, o)


def test_design_terms_hand_checked() -> None:
    ttft, e2e = design([state(d=2, k=1000, q=150, p=50, o=4)], token_budget=102)
    # 200 prefill tokens, 100 budget tokens per step beside 2 decodes -> 2 steps.
    assert ttft[0].tolist() == [200.0, 2.0, 4.0, 2.0]
    # decode: out 4, batch 3, context 1000 + 2*4/2 + 50 + 4/2 = 1056 -> 4.224 (k-tokens x out)
    assert e2e[0, 4:].tolist() == pytest.approx([4.0, 12.0, 4.224])


def test_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    states = [
        state(
            int(rng.integers(0, 200)),
            int(rng.integers(0, 200_000)),
            int(rng.integers(0, 20_000)),
            int(rng.integers(1, 4000)),
            int(rng.integers(1, 1000)),
        )
        for _ in range(300)
    ]
    true = LatencyModel((2e-5, 5e-3, 3e-5, 1e-5), (2e-5, 5e-3, 3e-5, 1e-5, 6e-3, 4e-5, 2e-6), 8192)
    ttft, e2e = true.predict_many(states)
    fitted = fit(states, ttft, e2e, 8192)
    p_ttft, p_e2e = fitted.predict_many(states)
    assert mae_percent(p_ttft, ttft) < 0.5
    assert mae_percent(p_e2e, e2e) < 0.5
    one = fitted.predict(states[0])
    assert one == pytest.approx((p_ttft[0], p_e2e[0]))


def test_more_load_means_more_latency() -> None:
    model = LatencyModel((2e-5, 5e-3, 3e-5, 1e-5), (2e-5, 5e-3, 3e-5, 1e-5, 6e-3, 4e-5, 2e-6), 8192)
    idle = model.predict(state())
    busy = model.predict(state(d=100, k=100_000, q=30_000))
    assert busy[0] > idle[0] and busy[1] > idle[1] >= idle[0]


def test_state_validation() -> None:
    with pytest.raises(ValueError, match="num_decodes"):
        BatchState(-1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="prompt_tokens"):
        BatchState(0, 0, 0, 0, 1)


def test_fitted_on_simulator_telemetry() -> None:
    from fairserve.core.predict.latency import fit_and_score
    from fairserve.sim.telemetry import latency_telemetry

    states, ttft, e2e, budget = latency_telemetry(1500, seed=1, period_s=40.0)
    assert len(states) == 1500 and np.all(ttft > 0) and np.all(e2e >= ttft)
    assert max(s.num_decodes for s in states) > 20  # the load swing fills the batch
    model, report = fit_and_score(states, ttft, e2e, budget, seed=1)
    assert report.e2e_mae_pct < 25.0, report
    # Measured 59.9% on this 1,500-row run (26.5% on the 6,000-row run that
    # docs/policies.md quotes): with the shipped H100 profile short TTFTs are a few
    # steps, and the step in flight at dispatch, unknown to the state, dominates.
    assert report.ttft_mae_pct < 65.0, report
    assert all(c >= 0 for c in model.e2e_coef)
