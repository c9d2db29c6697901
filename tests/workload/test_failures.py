"""The failure model: fitted on a trace, it finds failures that rise with load (and does not
invent them); applied to a workload, it draws them at the rate it says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.failures import FailureModel, fit_failures, local_rate_per_s
from fairserve.workload.spec import build as build_spec
from fairserve.workload.spec import parse_spec

TRUE = FailureModel(intercept=-5.0, slope_per_rps=0.25, window_s=60.0)


def _swinging_arrivals(seed: int, hours: float = 2.0) -> np.ndarray:
    """Poisson arrivals whose rate swings between 2 and 14 req/s every 10 minutes."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < hours * 3600:
        rate = 8.0 + 6.0 * math.sin(2 * math.pi * t / 1200.0)
        t += rng.exponential(1.0 / rate)
        times.append(t)
    return np.asarray(times)


def _workload(arrival_s: np.ndarray, failed: np.ndarray) -> Workload:
    n = arrival_s.size
    return Workload.from_arrays(arrival_s, np.full(n, 100), np.where(failed, 0, 50), failed=failed)


def test_the_fit_recovers_failures_that_rise_with_load() -> None:
    t = _swinging_arrivals(0)
    failed = np.random.default_rng(1).random(t.size) < TRUE.probabilities(t)
    fit = fit_failures(_workload(t, failed))
    assert fit is not None and fit.rises_with_load
    assert fit.slope_per_rps == pytest.approx(0.25, abs=0.05)
    assert fit.intercept == pytest.approx(-5.0, abs=0.5)
    assert fit.share_busy > 3 * fit.share_quiet


def test_a_constant_failure_share_is_not_read_as_rising() -> None:
    t = _swinging_arrivals(2)
    rising = 0
    for seed in range(5):
        failed = np.random.default_rng(seed).random(t.size) < 0.02
        fit = fit_failures(_workload(t, failed))
        assert fit is not None and fit.share == pytest.approx(0.02, abs=0.003)
        rising += fit.rises_with_load
    assert rising <= 1  # p < 0.01 by chance at most once in five


def test_the_model_draws_the_share_it_is_given() -> None:
    t = _swinging_arrivals(3, hours=1.0)
    wl = _workload(t, np.zeros(t.size, dtype=bool))
    rate = float(np.mean(local_rate_per_s(t, 60.0)))
    flat = FailureModel.at_share(0.05, rate).apply(wl, seed=4)
    assert flat.failed is not None and flat.failed.mean() == pytest.approx(0.05, abs=0.01)
    rising = FailureModel.at_share(0.05, rate, slope_per_rps=0.3).apply(wl, seed=4)
    fit = fit_failures(rising)
    assert fit is not None and fit.rises_with_load
    again = FailureModel.at_share(0.05, rate, slope_per_rps=0.3).apply(wl, seed=4)
    assert again.failed is not None and (again.failed == rising.failed).all()  # seeded


def test_local_rate_does_not_read_the_edges_as_quiet() -> None:
    t = np.arange(0.0, 600.0, 0.1)  # 10 req/s for 10 minutes
    rate = local_rate_per_s(t, 60.0)
    assert rate.min() == pytest.approx(10.0, rel=0.02) and rate.max() == pytest.approx(
        10.0, rel=0.02
    )


def test_the_spec_transform_and_its_errors() -> None:
    spec = {
        "seed": 3,
        "sources": [{"tenant": "a", "arrival": {"process": "poisson", "rate_per_s": 5.0},
                     "prompt": {"dist": "constant", "tokens": 100},
                     "output": {"dist": "constant", "tokens": 50}, "n_requests": 4000}],
        "transforms": [{"op": "failures", "share": 0.1}],
    }  # fmt: skip
    wl = build_spec(parse_spec(spec))
    assert wl.failed is not None and wl.failed.mean() == pytest.approx(0.1, abs=0.02)
    assert sum(r.fails for r in wl.requests()) == int(wl.failed.sum())
    both = {**spec, "transforms": [{"op": "failures", "share": 0.1, "intercept": -3.0}]}
    with pytest.raises(TraceError, match="exactly one of 'share' and 'intercept'"):
        parse_spec(both)
    bad = {**spec, "transforms": [{"op": "failures", "share": 1.5}]}
    with pytest.raises(TraceError, match="share"):
        parse_spec(bad)


def test_trace_stats_reports_failures_that_rise_with_load(tmp_path: Path) -> None:
    t = _swinging_arrivals(5, hours=1.0)
    failed = np.random.default_rng(6).random(t.size) < TRUE.probabilities(t)
    rows = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"]
    for ts, f in zip(t.tolist(), failed.tolist(), strict=True):
        out = 0 if f else 40
        rows.append(f"{ts:.3f},ChatGPT,100,{out},{100 + out},Conversation log\n")
    path = tmp_path / "burst.csv"
    path.write_text("".join(rows))
    result = CliRunner().invoke(app, ["trace", "stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["failures"]["rises_with_load"] is True
    assert any("failures rise with load" in w for w in stats["warnings"])
    # Output means leave the failed rows' 0 tokens out, per tenant too.
    assert stats["output_tokens"]["mean"] == 40.0
    assert all(t["output_tokens_mean"] == 40.0 for t in stats["per_tenant"].values())
    human = CliRunner().invoke(app, ["trace", "stats", str(path)])
    assert human.exit_code == 0 and "they rise with load" in human.output
