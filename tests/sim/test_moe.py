"""MoE in the cost model: a step reads the routed experts its tokens go to, and expert
parallelism waits for the busiest GPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.sim.cost import CostModel, ModelSpec, cost_model, gpu_spec, model_spec

MIXTRAL = model_spec("Mixtral-8x7B")
H100 = gpu_spec("H100-80GB")


def _all_experts_read(spec: ModelSpec) -> ModelSpec:
    """The same model as if every step read every expert (no routing known)."""
    return dataclasses.replace(spec, num_experts=None, experts_per_token=None, expert_params=None)


def _decode_s(model: CostModel, batch: int, context: int = 1000) -> float:
    kv = batch * context
    return model.step_time_s(0, batch, kv, kv, batch, 0)


def test_touched_share_follows_uniform_routing() -> None:
    assert MIXTRAL.touched_expert_share(1) == pytest.approx(2 / 8)
    assert MIXTRAL.touched_expert_share(2) == pytest.approx(1 - (6 / 8) ** 2)
    assert MIXTRAL.touched_expert_share(200) == pytest.approx(1.0)
    assert model_spec("Llama-3.1-8B").touched_expert_share(1) == 1.0


def test_small_decode_batches_read_only_the_experts_they_route_to() -> None:
    routed, every = CostModel(H100, MIXTRAL, 2), CostModel(H100, _all_experts_read(MIXTRAL), 2)
    # One sequence reads 2 of 8 experts: about the active weights, not the 46.7 B total.
    assert _decode_s(routed, 1) < 0.45 * _decode_s(every, 1)
    assert _decode_s(routed, 1) < _decode_s(routed, 4) < _decode_s(routed, 16)
    # A large batch touches every expert: the same as reading them all.
    assert _decode_s(routed, 256) == pytest.approx(_decode_s(every, 256), rel=1e-6)


def test_expert_parallelism_costs_small_batches_and_not_large_ones() -> None:
    tp, ep = CostModel(H100, MIXTRAL, 8), CostModel(H100, MIXTRAL, 8, expert_parallel=True)
    # Batch 1: two GPUs each read one whole expert while the others idle, where
    # tensor parallelism reads an eighth of two experts on every GPU.
    assert _decode_s(ep, 1) > 1.2 * _decode_s(tp, 1)
    assert _decode_s(ep, 256) == pytest.approx(_decode_s(tp, 256), rel=0.02)
    prefill = 8192 * 8193 // 2
    t_tp, t_ep = (
        tp.step_time_s(8192, 0, 8192, prefill, 1, 1),
        ep.step_time_s(8192, 0, 8192, prefill, 1, 1),
    )
    assert t_tp <= t_ep <= 1.05 * t_tp  # 16k token-expert pairs: the busiest GPU is near the mean
    # No effect on one GPU or on a dense model.
    assert _decode_s(CostModel(H100, MIXTRAL, 1, expert_parallel=True), 1) == _decode_s(
        CostModel(H100, MIXTRAL, 1), 1
    )
    dense = model_spec("Llama-3.1-8B")
    assert not CostModel(H100, dense, 4, expert_parallel=True).expert_parallel


@pytest.mark.parametrize("expert_parallel", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 37, 300])
def test_decode_line_matches_step_time_for_moe(expert_parallel: bool, batch: int) -> None:
    model = cost_model("H100-80GB", "DeepSeek-V2-Lite", 4, expert_parallel=expert_parallel)
    line = model.decode_line(batch, 12_345)
    for j in (0, 1, 10, 500):
        kv = 12_345 + batch * j
        assert line.step_s(j) == pytest.approx(
            model.step_time_s(0, batch, kv, kv, batch, 0), rel=1e-12
        )


def test_expert_fields_go_together() -> None:
    with pytest.raises(ValueError, match="num_experts, experts_per_token and expert_params"):
        dataclasses.replace(MIXTRAL, expert_params=None)
    with pytest.raises(ValueError, match="experts_per_token <= num_experts"):
        dataclasses.replace(MIXTRAL, experts_per_token=9)


def test_simulate_an_moe_model_with_expert_parallelism() -> None:
    runner = CliRunner()
    base = ["simulate", "--model", "Mixtral-8x7B", "--tp", "2", "--requests", "200",
            "--rate", "2", "--json"]  # fmt: skip
    tp = runner.invoke(app, base)
    ep = runner.invoke(app, [*base, "--expert-parallel"])
    assert tp.exit_code == 0 and ep.exit_code == 0, tp.output + ep.output
    tpot_tp = json.loads(tp.stdout)["tpot_s"]["p50"]
    tpot_ep = json.loads(ep.stdout)["tpot_s"]["p50"]
    assert tpot_ep > tpot_tp  # light load: small batches, where expert parallelism costs
