"""driftsched, history and noisy-oracle: hand-checked EMA math, quantiles, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fairserve.core.predict import PREDICTORS, Estimate, Predictor, SharedLearning
from fairserve.core.predict._keys import class_key
from fairserve.core.predict.driftsched import DriftSchedPredictor
from fairserve.core.predict.history import HistoryPredictor
from fairserve.core.predict.oracle import NoisyOraclePredictor, standard_normal
from tests.core.predict.helpers import req


def test_registry_builds_every_predictor() -> None:
    for name in ("driftsched", "history", "noisy-oracle", "oracle"):
        assert isinstance(PREDICTORS.create(name), Predictor)


def test_class_key_fields_and_errors() -> None:
    r = req("alice", model="llama")
    assert class_key("tenant")(r) == "alice"
    assert class_key("tenant+model")(r) == "alice|llama"
    assert class_key("slo_class")(r) == "-"
    with pytest.raises(ValueError, match="allowed: tenant, model"):
        class_key("colour")


# ------------------------------------------------------------------ driftsched
def test_driftsched_ema_of_ratio_hand_checked() -> None:
    p = DriftSchedPredictor({"a": 100.0}, alpha=0.5)
    assert p.predict(req("a")).mean_tokens == 100.0
    p.observe(req("a"), 300)  # ratio 3: r = 1 + 0.5 * (3 - 1) = 2
    assert p.predict(req("a")).mean_tokens == pytest.approx(200.0)
    p.observe(req("a"), 100)  # ratio 1: r = 2 + 0.5 * (1 - 2) = 1.5
    assert p.predict(req("a")).mean_tokens == pytest.approx(150.0)
    # Other classes are untouched and use the default prior.
    assert p.predict(req("b")).mean_tokens == 256.0


def test_driftsched_moves_toward_observations_both_ways() -> None:
    up = DriftSchedPredictor({"a": 100.0})
    down = DriftSchedPredictor({"a": 100.0})
    for _ in range(5):
        up.observe(req("a"), 400)
        down.observe(req("a"), 20)
    assert up.predict(req("a")).mean_tokens > 100 > down.predict(req("a")).mean_tokens


def test_driftsched_uncalibrated_ignores_feedback() -> None:
    p = DriftSchedPredictor({"a": 100.0}, calibrate=False)
    p.observe(req("a"), 10_000)
    assert p.predict(req("a")).mean_tokens == 100.0


def test_driftsched_caps_and_clips() -> None:
    p = DriftSchedPredictor({"a": 100.0}, alpha=1.0, max_ratio=4.0)
    assert p.predict(req("a", max_tokens=30)).mean_tokens == 30.0
    p.observe(req("a"), 100_000)  # ratio clipped to 4
    assert p.predict(req("a")).mean_tokens == pytest.approx(400.0)
    assert p.predict(req("a", max_tokens=250)).mean_tokens == 250.0


def test_driftsched_class_key_tenant_and_model() -> None:
    p = DriftSchedPredictor({"a|m1": 100.0, "a|m2": 10.0}, key="tenant+model")
    assert p.predict(req("a", model="m1")).mean_tokens == 100.0
    assert p.predict(req("a", model="m2")).mean_tokens == 10.0


def test_driftsched_rejects_bad_params() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DriftSchedPredictor(alpha=0)
    with pytest.raises(ValueError, match="prior of class"):
        DriftSchedPredictor({"a": -1.0})


# ------------------------------------------------------------------ history
def test_history_ema_hand_checked_and_default() -> None:
    p = HistoryPredictor(alpha=0.5, default_tokens=77)
    assert p.predict(req("a")) == Estimate(77.0)
    p.observe(req("a"), 100)  # first value starts the EMA
    assert p.predict(req("a")).mean_tokens == 100.0
    p.observe(req("a"), 300)  # 100 + 0.5 * 200
    assert p.predict(req("a")).mean_tokens == 200.0
    p.observe(req("a"), 0)  # 200 - 0.5 * 200
    assert p.predict(req("a")).mean_tokens == 100.0


def test_history_quantile_over_bounded_window() -> None:
    p = HistoryPredictor(window=10, quantile=0.9)
    for v in range(1, 101):  # only the last 10 (91..100) remain
        p.observe(req("a"), v)
    est = p.predict(req("a"))
    assert est.quantile_tokens == pytest.approx(float(np.quantile(np.arange(91, 101), 0.9)))
    p.observe(req("a"), 1000)  # the cached quantile is refreshed
    assert p.predict(req("a")).quantile_tokens == pytest.approx(
        float(np.quantile([*range(92, 101), 1000], 0.9))
    )


def test_history_new_class_borrows_overall_history() -> None:
    p = HistoryPredictor(alpha=1.0)
    p.observe(req("a"), 40)
    assert p.predict(req("new")).mean_tokens == 40.0
    p.observe(req("new"), 10)
    assert p.predict(req("new")).mean_tokens == 10.0


# ------------------------------------------------------------------ noisy oracle
def test_noisy_oracle_log_error_std_matches_sigma() -> None:
    p = NoisyOraclePredictor(sigma=0.5, seed=3)
    reqs = [req(output_tokens=1000, id=i) for i in range(20_000)]
    log_err = np.log([p.predict(r).mean_tokens / 1000 for r in reqs])
    assert abs(float(log_err.std()) - 0.5) < 0.02
    assert abs(float(log_err.mean())) < 0.02  # median-unbiased


def test_noisy_oracle_is_seeded_and_order_independent() -> None:
    reqs = [req(output_tokens=500, id=i) for i in range(50)]
    a = [NoisyOraclePredictor(0.7, seed=1).predict(r).mean_tokens for r in reqs]
    b_pred = NoisyOraclePredictor(0.7, seed=1)
    b = [b_pred.predict(r).mean_tokens for r in reversed(reqs)][::-1]
    c = [NoisyOraclePredictor(0.7, seed=2).predict(r).mean_tokens for r in reqs]
    assert a == b
    assert a != c


def test_oracle_is_exact_and_normal_draws_are_standard() -> None:
    assert PREDICTORS.create("oracle").predict(req(output_tokens=123)).mean_tokens == 123.0
    z = np.asarray([standard_normal(0, k) for k in range(20_000)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    assert all(math.isfinite(v) for v in z)


@pytest.mark.parametrize(
    "make",
    [lambda: HistoryPredictor(alpha=0.3, window=8),
     lambda: DriftSchedPredictor(priors_tokens={"a": 100.0}, alpha=0.3)],
    ids=["history", "driftsched"],
)  # fmt: skip
def test_updates_alone_teach_another_replica_the_same(make: object) -> None:
    # What a gateway replica shares: the (class, value) updates, no request. A
    # predictor fed only another's updates predicts what that one predicts.
    seen, told = make(), make()  # type: ignore[operator]
    assert isinstance(seen, SharedLearning)
    rng = np.random.default_rng(0)
    for i in range(40):
        r = req("ab"[i % 2], int(rng.integers(1, 500)), max_tokens=400)
        update = seen.feedback(r, r.output_tokens)
        assert update is not None
        seen.learn(*update)
        told.learn(*update)
    for tenant in "abc":
        probe = req(tenant, max_tokens=400)
        assert told.predict(probe) == seen.predict(probe)
    # observe is feedback then learn
    direct, stepwise = make(), make()  # type: ignore[operator]
    r = req("a", 321)
    direct.observe(r, 321)
    stepwise.learn(*stepwise.feedback(r, 321))
    assert direct.predict(r) == stepwise.predict(r) != make().predict(r)  # type: ignore[operator]
