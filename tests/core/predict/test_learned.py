"""The learned predictor: beats a per-tenant mean when lengths depend on features."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from fairserve.core.model import Request
from fairserve.core.predict import PREDICTORS
from fairserve.core.predict.metrics import accuracy, kendall_tau, mae_tokens, rmse_tokens
from fairserve.core.registry import ComponentSpec
from fairserve.store import load_model, save_learned_model
from tests.core.predict.helpers import req

pytest.importorskip("sklearn", reason="the learned predictor needs the 'learned' extra")

from fairserve.core.predict import learned


def feature_requests(n: int, seed: int) -> list[Request]:
    """Output grows with the prompt, depends on the model, and is capped by max_tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tenant = ("a", "b", "c")[i % 3]
        model = ("small", "large")[int(rng.integers(2))]
        prompt = int(rng.integers(10, 2000))
        max_tokens = int(rng.choice([64, 512, 2048]))
        mean = 20 + 0.4 * prompt * (2.0 if model == "large" else 1.0)
        output = int(min(max(1, round(mean * rng.lognormal(-0.02, 0.2))), max_tokens))
        out.append(Request(i, float(i), prompt, output, tenant=tenant, model=model,
                           max_tokens=max_tokens, turn=int(rng.integers(0, 4))))  # fmt: skip
    return out


def test_metrics_hand_checked() -> None:
    assert mae_tokens([1, 2, 3], [2, 2, 5]) == 1.0
    assert rmse_tokens([0, 0], [3, 4]) == pytest.approx(math.sqrt(12.5))
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([3, 2, 1], [10, 20, 30]) == -1.0
    assert math.isnan(kendall_tau([1, 1], [1, 2]))
    assert accuracy([1, 2], [1, 2]).as_dict() == {
        "n": 2, "mae_tokens": 0.0, "rmse_tokens": 0.0, "kendall_tau": 1.0
    }  # fmt: skip


def test_learned_beats_tenant_mean_and_round_trips(tmp_path: Path) -> None:
    reqs = feature_requests(3000, seed=1)
    model = learned.train(reqs, max_iter=80, seed=0)
    m = model.metrics
    assert m["learned"]["mae_tokens"] < 0.5 * m["tenant_mean_baseline"]["mae_tokens"], m
    assert m["learned"]["kendall_tau"] > 0.7
    save_learned_model(model, tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["text"] is False and meta["tenants"] == ["a", "b", "c"]
    p = PREDICTORS.build(ComponentSpec("learned", {"path": tmp_path / "model"}), load=load_model)
    fresh = feature_requests(200, seed=2)
    pred = [p.predict(r).mean_tokens for r in fresh]
    base = [float(np.mean([r.output_tokens for r in reqs if r.tenant == f.tenant])) for f in fresh]
    true = [r.output_tokens for r in fresh]
    assert mae_tokens(pred, true) < 0.5 * mae_tokens(base, true)
    est = p.predict(fresh[0])
    assert est.quantile_tokens is not None and est.quantile_tokens >= est.mean_tokens
    assert est.mean_tokens <= (fresh[0].max_tokens or math.inf)


def test_learned_online_calibration_follows_a_shift() -> None:
    model = learned.train(feature_requests(1000, seed=3), max_iter=40, quantile=None)
    p = learned.LearnedPredictor(model=model, alpha=0.5)
    r = req("a", prompt_tokens=500, output_tokens=1, model="small", max_tokens=None)
    before = p.predict(r).mean_tokens
    other = req("b", prompt_tokens=500, model="small")
    other_before = p.predict(other).mean_tokens
    for _ in range(10):  # this tenant now answers 3x longer than the model thinks
        probe = req("a", prompt_tokens=500, model="small")
        p.observe(probe, round(3 * p.model.predict_tokens(p.model.features([probe]))[0][0]))
    after = p.predict(r).mean_tokens
    assert after == pytest.approx(3 * before, rel=0.01)
    # Another tenant is unaffected; alpha 0 turns calibration off.
    assert p.predict(other).mean_tokens == pytest.approx(other_before)
    off = learned.LearnedPredictor(model=model, alpha=0.0)
    off.observe(r, 10_000)
    assert off.predict(r).mean_tokens == pytest.approx(before)


def test_learned_updates_alone_teach_another_replica_the_same() -> None:
    model = learned.train(feature_requests(300, seed=5), max_iter=20, quantile=None)
    seen = learned.LearnedPredictor(model=model, alpha=0.5)
    told = learned.LearnedPredictor(model=model, alpha=0.5)
    for r in feature_requests(30, seed=6):
        update = seen.feedback(r, 2 * r.output_tokens)
        assert update is not None
        seen.learn(*update)
        told.learn(*update)
    assert told.residuals and not seen._pending  # feedback let go of what it estimated
    for r in feature_requests(10, seed=7):
        assert told.predict(r) == seen.predict(r)


def test_learned_warm_matches_one_by_one() -> None:
    model = learned.train(feature_requests(500, seed=4), max_iter=20, quantile=None)
    reqs = feature_requests(20, seed=5)
    one = [learned.LearnedPredictor(model=model).predict(r).mean_tokens for r in reqs]
    warm = learned.LearnedPredictor(model=model)
    warm.warm(reqs)
    assert [warm.predict(r).mean_tokens for r in reqs] == pytest.approx(one)


def test_learned_needs_a_model() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        learned.LearnedPredictor()
    with pytest.raises(FileNotFoundError, match="predictor train"):
        learned.LearnedPredictor(path="/nonexistent/model", load=load_model)
    with pytest.raises(ValueError, match=r"load=fairserve\.store\.load_model"):
        learned.LearnedPredictor(path="/nonexistent/model")


def test_embeddings_load_offline_and_are_384_d(monkeypatch: pytest.MonkeyPatch) -> None:
    from fairserve.core.predict.embed import EMBEDDING_DIM
    from fairserve.store import EmbeddingUnavailable, load_embedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        embedder = load_embedder()
    except EmbeddingUnavailable as exc:
        pytest.skip(f"embedding package missing: {exc}")
    vectors = embedder.embed(["How do I bake bread?", "Recipe for sourdough bread", "Fix my SQL"])
    assert vectors.shape == (3, EMBEDDING_DIM) == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The first values of the same text's embedding computed by the PyTorch
    # BERT model with mean pooling (as sentence-transformers does).
    reference = [0.04219, 0.04323, -0.02057, -0.01827, -0.09989, -0.00113]
    assert np.allclose(vectors[0, :6], reference, atol=2e-5)
    # Similar texts are closer than unrelated ones.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert os.environ["HF_HUB_OFFLINE"] == "1"
