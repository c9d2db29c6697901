"""Predictors inside the simulator: batch warming gives the same predictions as one by one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pytest

import fairserve.sim.run as sim_run
from fairserve.core.model import Request
from fairserve.sim.run import SimConfig, simulate
from fairserve.workload.generate import synthetic

pytest.importorskip("sklearn")


def test_warmed_learned_predictor_matches_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from fairserve.core.predict.learned import train

    rng = np.random.default_rng(0)
    # Outputs that depend on the prompt, so the model has something to learn.
    history = [
        Request(i, 0.0, int(p), int(max(1, p // 4 + rng.integers(0, 20))))
        for i, p in enumerate(rng.integers(10, 2000, 600))
    ]
    model = train(history, quantile=None, max_iter=30)
    wl = synthetic(2000, 30.0, prompt_mean_tokens=800, output_mean_tokens=200, seed=1)
    config = SimConfig(policy="sjf", predictor={"name": "learned", "params": {"model": model}})
    warmed = simulate(wl.requests(), config)

    def passthrough(requests: Iterable[Request], warm: object) -> Iterator[Request]:
        return iter(requests)

    monkeypatch.setattr(sim_run, "_warmed", passthrough)
    single = simulate(wl.requests(), config)
    assert len(warmed.predicted_tokens) == 2000
    np.testing.assert_array_equal(warmed.predicted_tokens, single.predicted_tokens)
    np.testing.assert_array_equal(warmed.records.finish_s, single.records.finish_s)
