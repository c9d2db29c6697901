"""The roofline cost model and its closed-form decode runs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.sim.cost import (
    CostModel,
    DecodeLine,
    Efficiency,
    Link,
    UnknownProfileError,
    allreduce_hops,
    cost_model,
    default_efficiency,
    derived_efficiency,
    gpu_spec,
    graph_batch,
    known_gpus,
    known_models,
    load_profile,
    model_spec,
    write_profile,
)

LLAMA_70B = model_spec("Llama-2-70B")


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
    eff, spec, bw = model.efficiency, model.model, model.gpu.hbm_bandwidth_gb_s * 1e9
    read_params = spec.body_params + spec.vocab_size * spec.hidden_size
    weights_s = read_params * spec.dtype_bytes / (bw * eff.mbu)
    kv_s = 1000 * spec.kv_bytes_per_token(1) / (bw * eff.kv_mbu)
    attn_s = (
        4 * spec.num_layers * 4096 * 1000 / (model.gpu.peak_bf16_tflops * 1e12 * eff.attention_mfu)
    )
    fixed = eff.step_overhead_s + eff.per_seq_overhead_s + spec.num_layers * eff.layer_overhead_s
    expected = fixed + weights_s + kv_s + attn_s
    assert model.step_time_s(0, 1, 1000, 1000, 1, 0) == pytest.approx(expected, rel=1e-12)


def test_decode_batches_are_padded_to_cuda_graph_sizes() -> None:
    assert [graph_batch(n) for n in (1, 2, 3, 5, 8, 9, 17, 512, 513)] == [
        1,
        2,
        4,
        8,
        8,
        16,
        24,
        512,
        513,
    ]
    # A compute-bound decode batch (L4, 400 sequences): 393 runs as 400.
    model = cost_model("L4", "Qwen2.5-1.5B")
    per_seq = model.per_seq_overhead_s
    t393 = model.step_time_s(0, 393, 0, 0, 393, 0)
    t400 = model.step_time_s(0, 400, 0, 0, 400, 0)
    assert t393 == pytest.approx(t400 - 7 * per_seq, rel=1e-12)
    # A compute-bound prefill step is not padded: 7 fewer tokens take less time.
    assert model.step_time_s(3993, 0, 0, 0, 1, 1) < model.step_time_s(4000, 0, 0, 0, 1, 1)


def test_fixed_costs_do_not_shrink_with_tensor_parallelism() -> None:
    eff = Efficiency(allreduce_latency_s=2e-5, layer_overhead_s=5e-5)
    tps = {tp: CostModel.from_names("H100-80GB", "Llama-3.1-70B", tp, eff) for tp in (1, 2, 4, 8)}
    layers = 80
    base = eff.step_overhead_s + layers * eff.layer_overhead_s
    assert tps[1].fixed_step_s == pytest.approx(base)
    for tp, hops in ((2, 1), (4, 2), (8, 3)):
        assert allreduce_hops(tp) == hops
        assert tps[tp].fixed_step_s == pytest.approx(base + 2 * layers * hops * 2e-5)
    # Batch-1 decode: the weight read shrinks with tp, the fixed part does not.
    t = {tp: m.step_time_s(0, 1, 512, 512, 1, 0) for tp, m in tps.items()}
    assert t[8] < t[4] < t[2]
    assert t[8] > tps[8].fixed_step_s > t[1] / 8


def test_long_prefill_is_compute_bound_and_grows_with_tokens() -> None:
    model = cost_model("H100-80GB", "Llama-3.1-8B")
    tiny = model.step_time_s(1, 0, 1, 1, 1, 1)
    small = model.step_time_s(512, 0, 512, 512 * 513 // 2, 1, 1)
    large = model.step_time_s(8192, 0, 8192, 8192 * 8193 // 2, 1, 1)
    # Above the fixed cost of a prefill (a one-token one), 16x the tokens cost
    # at least 16x: GEMMs linear, attention quadratic in the sequence's length.
    assert large - tiny > 16 * (small - tiny) > 0


def test_tensor_parallel_speeds_up_and_adds_communication() -> None:
    tp2 = cost_model("H100-80GB", "Llama-3.1-70B", tp=2)
    tp4 = cost_model("H100-80GB", "Llama-3.1-70B", tp=4)
    tp8 = cost_model("H100-80GB", "Llama-3.1-70B", tp=8)
    t2, t4, t8 = (m.step_time_s(0, 64, 64_000, 64_000, 64, 0) for m in (tp2, tp4, tp8))
    # Halving the weight reads pays from tp 2 to 4; from 4 to 8 the extra
    # all-reduce hop eats the gain (as measured on DGX-A100: 73.0 vs 71.6 ms).
    assert t4 < t2
    assert t8 == pytest.approx(t4, rel=0.1)
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
        assert line.step_s(j) == pytest.approx(model.step_time_s(0, 37, kv, kv, 37, 0), rel=1e-12)


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
    assert loaded.step_time_s(0, 4, 400, 400, 4, 0) == pytest.approx(
        model.step_time_s(0, 4, 400, 400, 4, 0)
    )
    with pytest.raises(UnknownProfileError, match=r"not Qwen2\.5-1\.5B on H100-80GB"):
        cost_model("H100-80GB", "Qwen2.5-1.5B", 1, profile=path)
    # A profile's efficiencies hold at every tp degree: another tp is taken, not refused.
    assert cost_model("L4", "Qwen2.5-1.5B", 2, profile=path).tp == 2


def test_unmeasured_gpus_take_the_a100_fit_with_the_hop_latency_scaled_by_clock() -> None:
    a100 = default_efficiency("A100-80GB")
    for name in ("H100-80GB", "H200"):
        derived = default_efficiency(name)
        assert derived.allreduce_latency_s == pytest.approx(a100.allreduce_latency_s * 1410 / 1980)
        same = {k: v for k, v in vars_of(derived).items() if k != "allreduce_latency_s"}
        assert same == {k: v for k, v in vars_of(a100).items() if k != "allreduce_latency_s"}
    # The L4's all-reduces cross PCIe, not NVLink: no figure to scale the latency by.
    assert gpu_spec("L4").link is Link.PCIE
    assert default_efficiency("L4") == a100


def test_a_derived_profile_shrinks_only_the_latency_bound_part_of_a_tp_decode() -> None:
    a100, h100 = gpu_spec("A100-80GB"), gpu_spec("H100-80GB")
    fitted = default_efficiency("A100-80GB")
    derived = derived_efficiency(fitted, a100, h100)

    # Same link, faster clock: every hop quicker. One GPU: nothing to scale.
    def decode_s(tp: int, eff: Efficiency) -> float:
        return CostModel(h100, LLAMA_70B, tp, eff).step_time_s(0, 1, 576, 576, 1, 0)

    assert decode_s(8, derived) < decode_s(8, fitted)
    assert decode_s(1, derived) == decode_s(1, fitted)
    # A GPU without a clock figure keeps the fitted factors.
    assert derived_efficiency(fitted, a100, replace(h100, boost_clock_mhz=None)) == fitted


def vars_of(eff: Efficiency) -> dict[str, float]:
    return {k: getattr(eff, k) for k in Efficiency.__dataclass_fields__}


def test_a_profile_from_before_the_per_layer_terms_still_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old.yaml"
    path.write_text("gpu: L4\nmodel: Qwen2.5-1.5B\ntp: 1\nefficiency:\n  mfu: 0.5\n  mbu: 0.6\n")
    eff = load_profile(path)[3]
    assert (eff.mfu, eff.mbu, eff.kv_mbu) == (0.5, 0.6, Efficiency().kv_mbu)


def test_steps_within_holds_for_a_nearly_flat_line() -> None:
    """A slope many orders below the intercept: the estimate must not cancel to 0 (a
    step-by-step walk from there would take ~1e10 steps)."""
    line = DecodeLine(c=0.0, u0=2e-9, u1=1e-200, v0=0.0, v1=0.0)
    k = line.steps_within(50.0)
    assert line.total_s(k) <= 50.0 < line.total_s(k + 1)
    assert k == pytest.approx(50.0 / 2e-9, rel=1e-6)
