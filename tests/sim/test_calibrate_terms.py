"""Calibration of every term: identifiability, several tp degrees, request-level rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fairserve.sim.calibrate import (
    UnidentifiableError,
    errors,
    fit,
    read_steps,
)
from fairserve.sim.cost import CostModel, Efficiency

TRUTH = Efficiency(
    mfu=0.6,
    mbu=0.75,
    attention_mfu=0.3,
    kv_mbu=0.5,
    step_overhead_s=0.002,
    per_seq_overhead_s=5e-5,
    layer_overhead_s=1e-5,
    interconnect_efficiency=0.3,
    allreduce_latency_s=3e-5,
)
MEASURED_ON = ("A100-80GB", "Llama-2-70B")


def request_rows(path: Path, tps: tuple[int, ...]) -> None:
    """Request-level rows whose times the TRUTH factors give exactly."""
    lines = ["prompt,batch,out,prefill_s,tbt_s,tp"]
    for tp in tps:
        model = CostModel.from_names(*MEASURED_ON, tp, TRUTH)
        for prompt, batch in ((128, 1), (512, 1), (2048, 1), (8192, 1), (512, 8), (512, 32)):
            pre = model.step_time_s(
                prompt * batch, 0, prompt * batch, batch * prompt * (prompt + 1) // 2, batch, batch
            )
            kv = batch * (prompt + 64)  # out = 128: the mean context
            dec = model.step_time_s(0, batch, kv, kv, batch, 0)
            lines.append(f"{prompt},{batch},128,{pre:.12g},{dec:.12g},{tp}")
    path.write_text("\n".join(lines) + "\n")


def test_request_rows_become_a_prefill_and_a_mean_decode_step(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("prompt,batch,out,prefill_s,tbt_s\n100,4,50,0.5,0.04\n")
    steps = read_steps(path, tp=2)
    assert steps.prefill_tokens.tolist() == [400, 0]
    assert steps.decode_seqs.tolist() == [0, 4]
    assert steps.num_seqs.tolist() == [4, 4]
    assert steps.kv_tokens.tolist() == [400, 4 * 125]
    assert steps.attn_pairs.tolist() == [4 * 100 * 101 / 2, 4 * 125]
    assert steps.tp.tolist() == [2, 2]
    assert steps.step_time_s.tolist() == [0.5, 0.04]


def test_fit_over_three_tp_degrees_recovers_every_term_but_one(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    request_rows(path, (2, 4, 8))
    steps = read_steps(path)
    base = CostModel.from_names(*MEASURED_ON, 2)
    # One model: per-step and per-layer fixed costs act alike; hold the per-layer one true.
    start = CostModel.from_names(*MEASURED_ON, 2, Efficiency(layer_overhead_s=1e-5))
    result = fit(start, steps, fixed=("layer_overhead_s",))
    eff = result.model.efficiency
    for name in ("mfu", "mbu", "allreduce_latency_s"):
        assert getattr(eff, name) == pytest.approx(getattr(TRUTH, name), rel=0.05), name
    # Small fixed terms (1-5% of a step) trade with one another: the weak prior
    # toward the defaults still pulls them a little.
    for name in ("step_overhead_s", "per_seq_overhead_s"):
        assert getattr(eff, name) == pytest.approx(getattr(TRUTH, name), rel=0.15), name
    assert result.mape_after < 0.005
    assert set(result.errors["by_tp"]) == {"2", "4", "8"}  # type: ignore[arg-type]
    assert errors(base, eff, steps)["mape_decode"] < 0.5


def test_one_model_cannot_separate_step_and_layer_costs(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    request_rows(path, (2, 4, 8))
    # The later term of the pair is refused, naming the one that explains it.
    with pytest.raises(UnidentifiableError, match="cannot identify layer_overhead_s") as info:
        fit(CostModel.from_names(*MEASURED_ON, 2), read_steps(path))
    assert "step_overhead_s" in str(info.value) and "--fix layer_overhead_s" in str(info.value)


def test_one_tp_degree_cannot_separate_all_reduce_latency(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    request_rows(path, (4,))
    with pytest.raises(
        UnidentifiableError, match=r"allreduce_latency_s|step_overhead_s|interconnect_efficiency"
    ):
        fit(CostModel.from_names(*MEASURED_ON, 4), read_steps(path), fixed=("layer_overhead_s",))


def test_a_factor_on_its_bound_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    request_rows(path, (2, 4, 8))
    steps = read_steps(path)
    # Twice as fast as any physical factor allows: mbu is pushed to its bound of 1.
    steps.step_time_s[:] = steps.step_time_s * np.where(steps.is_prefill, 1.0, 0.4)
    result = fit(CostModel.from_names(*MEASURED_ON, 2), steps, fixed=("layer_overhead_s",))
    assert any("sits on its bound" in w for w in result.warnings)


def test_unknown_fixed_factor_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    request_rows(path, (2,))
    with pytest.raises(ValueError, match=r"unknown factor.*mfuu.*factors: mfu"):
        fit(CostModel.from_names(*MEASURED_ON, 2), read_steps(path), fixed=("mfuu",))
