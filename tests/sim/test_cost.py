"""The roofline cost model and its closed-form decode runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.sim.cost import (
    CostModel,
    DecodeLine,
    Efficiency,
    UnknownProfileError,
    cost_model,
    known_gpus,
    known_models,
    load_profile,
    write_profile,
)


def test_ships_the_required_gpus_and_models() -> None:
    assert {"A100-80GB", "H100-80GB", "H200", "L4"} <= set(known_gpus())
    assert {"Llama-3.1-8B", "Llama-3.1-70B", "Qwen2.5-7B", "Qwen2.5-1.5B"} <= set(known_models())


def test_unknown_gpu_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError) as info:
        cost_model("B9000", "Llama-3.1-8B")
    assert "B9000" in str(info.value)
    for name in known_gpus():
        assert name in str(info.value)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError, match=r"Qwen2\.5-7B"):
        cost_model("H100-80GB", "Llama-5")


def test_decode_step_is_memory_bound_at_batch_one() -> None:
    model = cost_model("H100-80GB", "Llama-3.1-8B")
    eff = model.efficiency
    weights_s = model.model.weight_bytes / (model.gpu.hbm_bandwidth_gb_s * 1e9 * eff.mbu)
    kv_s = 1000 * model.model.kv_bytes_per_token(1) / (model.gpu.hbm_bandwidth_gb_s * 1e9 * eff.mbu)
    expected = eff.step_overhead_s + eff.per_seq_overhead_s + weights_s + kv_s
    assert model.step_time_s(0, 1, 1000, 1000, 1) == pytest.approx(expected, rel=1e-12)


def test_long_prefill_is_compute_bound_and_grows_with_tokens() -> None:
    model = cost_model("H100-80GB", "Llama-3.1-8B")
    small = model.step_time_s(512, 0, 512, 512 * 513 // 2, 1)
    large = model.step_time_s(8192, 0, 8192, 8192 * 8193 // 2, 1)
    assert large > 10 * small


def test_tensor_parallel_speeds_up_and_adds_communication() -> None:
    tp4 = cost_model("H100-80GB", "Llama-3.1-70B", tp=4)
    tp8 = cost_model("H100-80GB", "Llama-3.1-70B", tp=8)
    t4 = tp4.step_time_s(0, 64, 64_000, 64_000, 64)
    t8 = tp8.step_time_s(0, 64, 64_000, 64_000, 64)
    assert t8 < t4
    assert tp4.decode_line(64, 64_000).c > tp4.step_overhead_s + 64 * tp4.per_seq_overhead_s


def test_kv_capacity_matches_memory_left_after_weights() -> None:
    model = cost_model("H100-80GB", "Llama-3.1-8B")
    blocks = model.kv_cache_blocks(16, 0.9, 8192, 256)
    tokens = blocks * 16
    gib = tokens * model.model.kv_bytes_per_token(1) / 2**30
    # 79.6 GiB x 0.9 - 15 GiB of weights - activations: about 55 GiB of KV.
    assert 50 < gib < 58


def test_a_model_that_does_not_fit_says_so() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        cost_model("L4", "Llama-3.1-70B").kv_cache_blocks(16, 0.9, 8192, 256)


lines = st.builds(
    DecodeLine,
    c=st.floats(0, 1e-2),
    u0=st.floats(0, 1e-1),
    u1=st.floats(0, 1e-4),
    v0=st.floats(0, 1e-1),
    v1=st.floats(0, 1e-4),
)


@given(line=lines, k=st.integers(0, 3000))
@settings(max_examples=300, deadline=None)
def test_closed_form_sum_equals_step_by_step_sum(line: DecodeLine, k: int) -> None:
    assert line.total_s(k) == pytest.approx(
        math.fsum(line.step_s(j) for j in range(k)), rel=1e-9, abs=1e-15
    )


@given(line=lines, dt=st.floats(1e-6, 50.0))
@settings(max_examples=300, deadline=None)
def test_steps_within_and_to_reach_invert_the_sum(line: DecodeLine, dt: float) -> None:
    if line.c + max(line.u0, line.v0) <= 1e-9:
        return  # zero-time steps never reach dt
    k = line.steps_within(dt)
    assert line.total_s(k) <= dt < line.total_s(k + 1)
    r = line.steps_to_reach(dt)
    assert line.total_s(r) >= dt
    assert r == 0 or line.total_s(r - 1) < dt


def test_decode_line_matches_step_time() -> None:
    model = cost_model("A100-80GB", "Qwen2.5-7B", tp=2)
    line = model.decode_line(37, 12_345)
    for j in (0, 1, 10, 500):
        kv = 12_345 + 37 * j
        assert line.step_s(j) == pytest.approx(model.step_time_s(0, 37, kv, kv, 37), rel=1e-12)


def test_efficiency_rejects_out_of_range_factors() -> None:
    with pytest.raises(ValueError, match="mfu"):
        Efficiency(mfu=1.5)
    with pytest.raises(ValueError, match="step_overhead_s"):
        Efficiency(step_overhead_s=-1)


def test_profile_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = CostModel.from_names("L4", "Qwen2.5-1.5B", 1, Efficiency(mfu=0.4, mbu=0.7))
    path = tmp_path / "p.yaml"
    write_profile(path, model, {"rows": 3.0})
    gpu, spec, tp, eff = load_profile(path)
    assert (gpu.name, spec.name, tp) == ("L4", "Qwen2.5-1.5B", 1)
    assert eff == Efficiency(mfu=0.4, mbu=0.7)
    loaded = cost_model("L4", "Qwen2.5-1.5B", 1, profile=path)
    assert loaded.step_time_s(0, 4, 400, 400, 4) == pytest.approx(
        model.step_time_s(0, 4, 400, 400, 4)
    )
    with pytest.raises(UnknownProfileError, match="not H100-80GB"):
        cost_model("H100-80GB", "Qwen2.5-1.5B", 1, profile=path)
