"""Saved models: round trips, one loader for every kind, and registry components that open them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.predict.latency import E2E_TERMS, TTFT_TERMS, LatencyModel
from fairserve.core.registry import ComponentError, ComponentSpec
from fairserve.core.route import ADMISSION, ROUTERS
from fairserve.core.route.latency import SloAdmission, SloAwareRouter
from fairserve.store import (
    ModelNotFound,
    load_latency_model,
    load_model,
    save_latency_model,
)

MODEL = LatencyModel(
    ttft_coef=tuple(0.001 * (i + 1) for i in range(len(TTFT_TERMS))),
    e2e_coef=tuple(0.002 * (i + 1) for i in range(len(E2E_TERMS))),
    token_budget=2048,
)


def test_latency_model_round_trips_and_names_its_kind(tmp_path: Path) -> None:
    path = save_latency_model(MODEL, tmp_path / "latency.json")
    assert json.loads(path.read_text())["kind"] == "fairserve-latency-model"
    assert load_latency_model(path) == MODEL
    assert load_model(path) == MODEL


def test_latency_files_without_a_kind_still_load(tmp_path: Path) -> None:
    # What `fairserve predictor latency --out` wrote before files named their kind.
    path = tmp_path / "old.json"
    path.write_text(json.dumps(MODEL.as_dict(), indent=2) + "\n")
    assert load_model(path) == MODEL


def test_load_model_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no saved model here"):
        load_model(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match=r"other\.json: not a saved fairserve model"):
        load_model(other)
    text = tmp_path / "notes.txt"
    text.write_text("not json")
    with pytest.raises(ValueError, match=r"notes\.txt: not a saved fairserve model"):
        load_model(text)
    with pytest.raises(ModelNotFound, match="predictor train"):
        load_model(tmp_path)  # a folder without model.pkl


def test_slo_aware_router_takes_a_model_or_a_path(tmp_path: Path) -> None:
    path = save_latency_model(MODEL, tmp_path / "latency.json")
    by_object = ROUTERS.build(ComponentSpec("slo-aware", {"model": MODEL}))
    by_path = ROUTERS.build(f"slo-aware:path={path}", load=load_model)
    by_model_path = ROUTERS.build(f"slo-aware:model={path},objective=e2e", load=load_model)
    for router in (by_object, by_path, by_model_path):
        assert isinstance(router, SloAwareRouter) and router.model == MODEL
    with pytest.raises(ComponentError, match=r"load=fairserve\.store\.load_model"):
        ROUTERS.build(f"slo-aware:path={path}")


def test_slo_admission_from_the_registry(tmp_path: Path) -> None:
    path = save_latency_model(MODEL, tmp_path / "latency.json")
    tenants = {"chat": Tenant("chat", slo=SLO("chat", ttft_s=0.5)), "batch": Tenant("batch")}
    admission = ADMISSION.build(f"slo:model={path},slack=2", tenants=tenants, load=load_model)
    assert isinstance(admission, SloAdmission)
    assert admission.model == MODEL and admission.slack == 2.0
    assert admission.slos["chat"].ttft_s == 0.5
    default = ADMISSION.build(ComponentSpec("slo", {"model": MODEL}))
    assert isinstance(default, SloAdmission) and default.slack == 1.0
    assert ADMISSION.parameters("slo") == ["model", "slack"]
    with pytest.raises(ComponentError, match="slack must be > 0"):
        ADMISSION.build(ComponentSpec("slo", {"model": MODEL, "slack": 0}))
    with pytest.raises(ComponentError, match="no saved model"):
        ADMISSION.build("slo:model=/nonexistent/latency.json", load=load_model)


class FakeEmbedder:
    """A 384-d embedding of the text's length (enough to train a text model quickly)."""

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        out[:, 0] = [len(t) for t in texts]
        return out


def _requests(n: int) -> list[Request]:
    rng = np.random.default_rng(0)
    reqs = []
    for i in range(n):
        prompt = int(rng.integers(10, 500))
        reqs.append(Request(i, float(i), prompt, max(1, prompt // 3), tenant=f"t{i % 2}",
                            text="x" * (prompt // 10)))  # fmt: skip
    return reqs


def test_learned_model_round_trips_without_its_embedder(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the learned predictor needs the 'learned' extra")
    from fairserve.core.predict.learned import LearnedModel, LearnedPredictor, train
    from fairserve.store import load_learned_model, save_learned_model

    model = train(_requests(200), max_iter=10, quantile=None)
    assert model.embedder is None
    folder = save_learned_model(model, tmp_path / "model")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "fairserve-learned-length-predictor" and meta["text"] is False
    loaded = load_model(folder)
    assert isinstance(loaded, LearnedModel) and loaded.tenants == ("t0", "t1")
    by_file = load_model(folder / "model.pkl")
    assert isinstance(by_file, LearnedModel) and by_file.tenants == loaded.tenants
    assert load_learned_model(folder).metrics == model.metrics
    reqs = _requests(5)
    by_path = LearnedPredictor(path=folder, load=load_model)
    by_object = LearnedPredictor(model=model)
    assert [by_path.predict(r).mean_tokens for r in reqs] == pytest.approx(
        [by_object.predict(r).mean_tokens for r in reqs]
    )
    with pytest.raises(ValueError, match="not a LearnedModel"):
        LearnedPredictor(path=save_latency_model(MODEL, tmp_path / "l.json"), load=load_model)


def test_a_text_model_pickles_without_the_embedder_and_needs_one() -> None:
    pytest.importorskip("sklearn", reason="the learned predictor needs the 'learned' extra")
    from fairserve.core.predict.learned import LearnedPredictor, train

    model = train(_requests(200), embedder=FakeEmbedder(), max_iter=10, quantile=None)
    assert model.text and isinstance(model.embedder, FakeEmbedder)
    LearnedPredictor(model=model).predict(_requests(1)[0])  # the trained model carries it
    copy = pickle.loads(pickle.dumps(model))
    assert copy.embedder is None and "embedder" not in copy.__dict__
    with pytest.raises(ValueError, match="needs an embedder"):
        LearnedPredictor(model=copy)
    LearnedPredictor(model=copy, embedder=FakeEmbedder()).predict(_requests(1)[0])


def test_a_saved_text_model_comes_back_with_the_installed_embedder(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the learned predictor needs the 'learned' extra")
    from fairserve.core.predict.embed import Embedder
    from fairserve.core.predict.learned import train
    from fairserve.store import EmbeddingUnavailable, load_embedder, save_learned_model

    try:
        load_embedder()
    except EmbeddingUnavailable as exc:
        pytest.skip(f"embedding package missing: {exc}")
    model = train(_requests(200), embedder=FakeEmbedder(), max_iter=10, quantile=None)
    loaded = load_model(save_learned_model(model, tmp_path / "text-model"))
    assert isinstance(getattr(loaded, "embedder", None), Embedder)
