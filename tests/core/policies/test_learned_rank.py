"""The learned-rank policy: its order, its model file, its parameters, and its training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fairserve.core.model import Request
from fairserve.core.policies import POLICIES
from fairserve.core.policies.learned_rank import PRIOR, LearnedRankPolicy, RankModel
from fairserve.core.registry import ComponentError, ComponentSpec
from fairserve.experiments.rank_train import fit_pairwise, imitate, run_e2e, train_ranker
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig
from fairserve.store import ModelNotFound, load_model, load_ranker, save_ranker
from fairserve.workload import Workload
from tests.core.policies.factories import drain, push_all, req

SIZES = RankModel({"log_predicted_output": 1.0, "log_prompt": 0.5})


def _policy(model: RankModel) -> LearnedRankPolicy:
    return LearnedRankPolicy(model=model)


# ---------------------------------------------------------------- order


def test_orders_by_the_learned_score() -> None:
    policy = _policy(SIZES)
    # scores: log1p(pred) + 0.5 log1p(prompt)
    reqs = [req(0, prompt=10, predicted=400), req(1, prompt=4000, predicted=20),
            req(2, prompt=10, predicted=20), req(3, prompt=100, predicted=100)]  # fmt: skip
    push_all(policy, reqs)
    expected = sorted(range(4), key=lambda i: SIZES.score(reqs[i]))
    assert expected == [2, 3, 1, 0]
    assert drain(policy) == expected


def test_waiting_time_weight_lets_an_old_long_request_overtake() -> None:
    aging = RankModel({"log_predicted_output": 1.0, "arrival_s": 0.1})
    old_long = req(0, arrival_s=0.0, predicted=19)  # size log(20) = 3.0, arrived at 0 s
    young_short = req(1, arrival_s=25.0, predicted=2)  # size log(3) = 1.1, at 25 s
    policy = _policy(aging)
    push_all(policy, [old_long, young_short])
    # 3.0 + 0.1 * 0 < 1.1 + 0.1 * 25: 25 s of waiting outweigh the longer job.
    assert drain(policy, now=30.0) == [0, 1]
    plain = _policy(PRIOR)
    push_all(plain, [req(0, predicted=19), req(1, 25.0, predicted=2)])
    assert drain(plain, now=30.0) == [1, 0]


def test_the_order_does_not_depend_on_now() -> None:
    model = RankModel({"log_predicted_output": 1.0, "log_prompt": -0.3, "arrival_s": 0.05})
    reqs = [req(i, arrival_s=3.0 * i, prompt=50 + 97 * i % 700, predicted=10 + 37 * i % 300)
            for i in range(12)]  # fmt: skip
    orders = []
    for now in (40.0, 4000.0):
        policy = _policy(model)
        push_all(policy, reqs)
        orders.append(drain(policy, now))
    assert orders[0] == orders[1] == sorted(range(12), key=lambda i: model.score(reqs[i]))


def test_tenant_offsets_and_the_default_prediction() -> None:
    model = RankModel({"log_predicted_output": 1.0}, {"batch": 10.0}, default_output_tokens=50)
    batch = req(0, tenant="batch", predicted=1)
    unpredicted = req(1)  # no prediction: counts as 50 tokens
    short = req(2, predicted=10)
    policy = _policy(model)
    push_all(policy, [batch, unpredicted, short])
    assert model.score(unpredicted) == pytest.approx(math.log1p(50))
    assert drain(policy) == [2, 1, 0]


def test_victim_is_the_latest_admitted_and_requeued_go_first() -> None:
    policy = _policy(SIZES)
    running = [req(0, predicted=5), req(1, predicted=500), req(2, predicted=50)]
    assert policy.pick_victim(running, 0.0) is running[-1]
    push_all(policy, [req(3, predicted=1)])
    policy.requeue(running[1], 1.0)
    assert drain(policy) == [1, 3]


# ---------------------------------------------------------------- the model file


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = RankModel({"log_predicted_output": 0.9, "log_prompt": 0.2, "arrival_s": 0.01},
                      {"a": -0.5}, 128, {"train_objective": 3.5})  # fmt: skip
    path = save_ranker(model, tmp_path / "sub" / "ranker.json")
    assert json.loads(path.read_text())["kind"] == "fairserve-learned-ranker"
    assert load_ranker(path) == model
    opened = load_model(path)  # the drivers' one loader recognises it
    assert opened == model
    reqs = [req(i, float(i), prompt=20 * i + 1, predicted=300 - 20 * i, tenant="ab"[i % 2])
            for i in range(10)]  # fmt: skip
    orders = []
    for m in (model, opened):
        assert isinstance(m, RankModel)
        policy = _policy(m)
        push_all(policy, reqs)
        orders.append(drain(policy, 10.0))
    assert orders[0] == orders[1]


def test_other_files_go_to_the_other_loaders(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something-else"}))
    # Not a ranker: fairserve.store.models.load_model answers, as it did before rankers.
    with pytest.raises(ValueError, match=f"{other}: not a saved fairserve model"):
        load_model(other)
    with pytest.raises(ModelNotFound, match=r"no saved model here.*fairserve predictor train"):
        load_model(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ({"kind": "fairserve-learned-ranker", "version": 1}, "'weights'"),
        ({"kind": "fairserve-learned-ranker", "version": 1, "weights": {"size": 1}},
         "'weights': unknown feature 'size'; allowed: log_predicted_output, log_prompt, arrival_s"),
        ({"kind": "fairserve-learned-ranker", "version": 1,
          "weights": {"log_prompt": "high"}}, "'weights.log_prompt' must be a finite number"),
        ({"kind": "fairserve-learned-ranker", "version": 1, "weights": {},
          "default_output_tokens": 0}, "'default_output_tokens'"),
        ({"kind": "fairserve-learned-ranker", "version": 1, "weights": {},
          "tenant_offsets": [1]}, "'tenant_offsets'"),
        ({"kind": "fairserve-learned-ranker", "version": 1, "weights": {}, "bias": 2},
         "unknown key 'bias'"),
        ({"kind": "fairserve-learned-ranker", "version": 7, "weights": {}}, "'version' must be 1"),
    ],
)  # fmt: skip
def test_a_bad_model_file_names_the_file_and_the_key(
    tmp_path: Path, content: dict[str, object], key: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"no learned ranker here.*fairserve policy train"):
        load_ranker(tmp_path / "absent.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something-else", "weights": {}}))
    with pytest.raises(ValueError, match=f"{other}: key 'kind' must be 'fairserve-learned-ranker'"):
        load_ranker(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=f"{broken}: not a JSON file"):
        load_ranker(broken)


# ---------------------------------------------------------------- parameters


def test_parameters_are_validated_through_the_registry(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="unknown parameter 'weights'; allowed: path, model"):
        POLICIES.build("learned-rank:weights=1", load=load_model)
    with pytest.raises(ComponentError, match="not both"):
        POLICIES.build(ComponentSpec("learned-rank", {"path": "x", "model": SIZES}))
    with pytest.raises(ComponentError, match=r"load=fairserve\.store\.load_model"):
        POLICIES.build("learned-rank:path=ranker.json")  # no loader in the context
    with pytest.raises(
        ComponentError,
        match=r"absent.json: no saved model here \(a learned ranker from `fairserve policy train",
    ):
        POLICIES.build(f"learned-rank:path={tmp_path / 'absent.json'}", load=load_model)
    with pytest.raises(ComponentError, match="holds a object, not a learned ranker"):
        POLICIES.build("learned-rank:path=x.json", load=lambda path: object())
    path = save_ranker(SIZES, tmp_path / "ranker.json")
    built = POLICIES.build(f"learned-rank:path={path}", load=load_model)
    assert isinstance(built, LearnedRankPolicy) and built.model == SIZES
    prior = POLICIES.create("learned-rank")
    assert isinstance(prior, LearnedRankPolicy) and prior.model == PRIOR


# ---------------------------------------------------------------- in the simulator, and training


INSTANCE = InstanceSpec(engine=EngineConfig(max_num_seqs=8))


def _workload(n: int = 400, seed: int = 3) -> Workload:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.02, n))
    prompt = rng.integers(20, 2000, n)
    output = np.maximum(1, rng.lognormal(4.5, 1.0, n).astype(np.int64))
    return Workload.from_arrays(arrivals, prompt, output)


@pytest.mark.parametrize("placement", ["gateway", "engine"])
def test_runs_in_both_placements_and_a_good_order_beats_fifo(placement: str) -> None:
    config = SimConfig(instances=(INSTANCE,), placement=placement, predictor="oracle")
    wl = _workload()
    fifo = run_e2e(wl, config, "fifo")
    ranked = run_e2e(wl, config, ComponentSpec("learned-rank", {"model": PRIOR}))
    assert fifo.completed == ranked.completed == len(wl)
    # With exact predictions, shortest-output-first must cut the mean well below FIFO's.
    assert ranked.mean_s < 0.8 * fifo.mean_s


def test_pairwise_fit_recovers_the_direction_of_a_known_score() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    true_w = np.array([2.0, -1.0])
    y = (rng.random(4000) < 1 / (1 + np.exp(x @ true_w))).astype(float)
    w = fit_pairwise(x, y, l2=1e-6)
    cosine = w @ true_w / (np.linalg.norm(w) * np.linalg.norm(true_w))
    assert cosine > 0.99
    with pytest.raises(ValueError, match="no labelled pairs"):
        fit_pairwise(np.zeros((0, 2)), np.zeros(0))


def test_imitation_of_the_oracle_weighs_the_exact_prediction() -> None:
    config = SimConfig(instances=(INSTANCE,), placement="engine", predictor="oracle")
    base = imitate([_workload()], config, teacher_prompt_weight=0.0)
    # The predictor is exact and the teacher orders by output: the prediction decides.
    assert base.pred > 0.95 and abs(base.prompt) < 0.3
    assert base.info["pairwise_accuracy"] > 0.95 and base.info["pairs"] > 100


def test_training_is_deterministic_and_no_worse_than_its_start_on_training_data() -> None:
    config = SimConfig(instances=(INSTANCE,), placement="engine", predictor="oracle")
    wl = _workload(300)
    first = train_ranker(wl, config, teacher_prompt_weights=(0.0,))
    again = train_ranker(wl, config, teacher_prompt_weights=(0.0,))
    assert first == again
    tried = first.metrics["search"]
    assert first.metrics["train_objective"] == min(t["objective"] for t in tried)
    assert len(tried) >= 6
    trained = run_e2e(wl, config, ComponentSpec("learned-rank", {"model": first}))
    assert trained.mean_s == pytest.approx(first.metrics["train_objective"])
    with pytest.raises(ValueError, match="tail_weight"):
        train_ranker(wl, config, tail_weight=-1.0)


def test_request_features_are_those_known_at_arrival() -> None:
    r = Request(0, 2.5, 99, 1_000_000, predicted_output_tokens=9)
    assert SIZES.features(r) == (math.log1p(9), math.log1p(99), 2.5)
