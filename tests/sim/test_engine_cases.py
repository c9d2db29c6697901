"""Hand-worked cases of the engine model."""

from __future__ import annotations

import math

import pytest

from fairserve.sim.cost import cost_model
from tests.sim.factories import by_id, config, req, run

MODEL = cost_model("H100-80GB", "Llama-3.1-8B")


def prefill_s(chunk: int, cached: int = 0) -> float:
    pairs = chunk * cached + chunk * (chunk + 1) // 2
    return MODEL.step_time_s(chunk, 0, cached + chunk, pairs, 1, 1)


def decode_s(context: int) -> float:
    return MODEL.step_time_s(0, 1, context, context, 1, 0)


@pytest.mark.parametrize("reference", [False, True])
def test_one_request_alone(reference: bool) -> None:
    result = run([req(0, 1.0, 100, 5)], config(reference=reference))
    rec = result.records
    ttft = prefill_s(100)
    assert rec.ttft_s[0] == pytest.approx(ttft, rel=1e-12)
    # Four decode steps read 101, 102, 103, 104 tokens of context.
    e2e = ttft + math.fsum(decode_s(101 + j) for j in range(4))
    assert rec.e2e_s[0] == pytest.approx(e2e, rel=1e-12)
    assert rec.queue_s[0] == 0.0
    assert rec.output_tokens[0] == 5


@pytest.mark.parametrize("reference", [False, True])
def test_prompt_longer_than_the_budget_takes_ceil_steps(reference: bool) -> None:
    budget = 256
    result = run([req(0, 0.0, 1000, 1)], config(reference=reference, max_num_batched_tokens=budget))
    chunks = [256, 256, 256, 232]
    assert len(chunks) == math.ceil(1000 / budget)
    expected = math.fsum(prefill_s(c, 256 * i) for i, c in enumerate(chunks))
    assert result.records.ttft_s[0] == pytest.approx(expected, rel=1e-12)
    assert result.steps == 4


@pytest.mark.parametrize("reference", [False, True])
def test_kv_room_for_one_preempts_and_both_finish(reference: bool) -> None:
    # Each needs ceil((64 + 64 - 1) / 16) = 8 blocks at the end; 10 exist.
    reqs = [req(0, 0.0, 64, 64), req(1, 0.0, 64, 64)]
    result = run(reqs, config(reference=reference, num_gpu_blocks=10))
    rec = result.records
    assert sorted(rec.request_id.tolist()) == [0, 1]
    assert rec.completed.all()
    assert rec.output_tokens.tolist() == [64, 64]
    assert result.engine.preemptions >= 1
    preempted = by_id(result, "preemptions")
    # vLLM preempts the most recently admitted request: the second one.
    assert preempted[0] == 0 and preempted[1] >= 1
    finish = by_id(result, "finish_s")
    assert finish[0] < finish[1]


@pytest.mark.parametrize("reference", [False, True])
def test_repeated_prefix_is_served_from_the_cache(reference: bool) -> None:
    hashes = [11, 12, 13, 14]  # four 64-token blocks of a 256-token prompt
    reqs = [
        req(0, 0.0, 256, 4, hashes=hashes, block_tokens=64),
        req(1, 10.0, 256, 4, hashes=hashes, block_tokens=64),
        req(2, 20.0, 256, 4, hashes=[99, 98, 97, 96], block_tokens=64),
    ]
    result = run(reqs, config(reference=reference))
    cached = by_id(result, "cached_prompt_tokens")
    # At least one token is always computed, so 3 of the 4 blocks are hits.
    assert cached == {0: 0, 1: 192, 2: 0}
    ttft = by_id(result, "ttft_s")
    assert ttft[1] == pytest.approx(prefill_s(64, 192), rel=1e-12)
    assert ttft[1] < ttft[0] == pytest.approx(ttft[2])
    assert result.engine.prefix_cache_hit_rate == pytest.approx(192 / 768)


def test_prefix_cache_off_computes_everything() -> None:
    hashes = [1, 2, 3, 4]
    reqs = [
        req(0, 0.0, 256, 4, hashes=hashes, block_tokens=64),
        req(1, 5.0, 256, 4, hashes=hashes, block_tokens=64),
    ]
    result = run(reqs, config(enable_prefix_caching=False))
    assert by_id(result, "cached_prompt_tokens") == {0: 0, 1: 0}


def test_a_request_that_can_never_fit_fails_with_a_reason() -> None:
    result = run([req(0, 0.0, 500, 10), req(1, 0.0, 50, 10)], config(num_gpu_blocks=8))
    outcome = by_id(result, "outcome")
    assert outcome[1] == 0  # completed
    assert outcome[0] == 2  # failed
    assert "KV blocks" in result.failure_reasons[0]


def test_too_long_for_the_model_fails() -> None:
    result = run([req(0, 0.0, 140_000, 10)], config())
    assert "max_model_len" in result.failure_reasons[0]


def test_batching_shares_steps() -> None:
    # Two requests arriving together share their prefill step and decode steps.
    result = run([req(0, 0.0, 100, 3), req(1, 0.0, 100, 3)], config())
    ttft = by_id(result, "ttft_s")
    assert ttft[0] == ttft[1]
    assert ttft[0] == pytest.approx(MODEL.step_time_s(200, 0, 200, 2 * 5050, 2, 2), rel=1e-12)
    assert result.steps == 3


def test_max_num_seqs_caps_the_batch() -> None:
    reqs = [req(i, 0.0, 10, 50) for i in range(3)]
    result = run(reqs, config(max_num_seqs=2, max_num_batched_tokens=64))
    first = by_id(result, "first_scheduled_s")
    assert first[0] == first[1] == 0.0
    assert first[2] == pytest.approx(by_id(result, "finish_s")[0])


def test_global_queue_spreads_over_instances() -> None:
    reqs = [req(i, 0.0, 100, 20) for i in range(4)]
    result = run(reqs, config(instances=2, max_engine_waiting=1))
    inst = by_id(result, "instance")
    assert sorted(inst.values()) == [0, 0, 1, 1]


def test_least_tokens_router_prefers_the_idle_instance() -> None:
    reqs = [req(0, 0.0, 4000, 500), req(1, 0.001, 10, 5), req(2, 0.002, 10, 5)]
    result = run(reqs, config(instances=2, router="least-tokens"))
    inst = by_id(result, "instance")
    assert inst[0] != inst[1]
    assert inst[2] == inst[1]


@pytest.mark.parametrize("reference", [False, True])
def test_a_malformed_request_ends_as_failed_with_its_problem(reference: bool) -> None:
    result = run(
        [req(0, 0.0, 0, 5), req(1, 0.0, 10, 0), req(2, 0.0, 10, 3)], config(reference=reference)
    )
    outcome = by_id(result, "outcome")
    assert outcome == {0: 2, 1: 2, 2: 0}
    assert "prompt_tokens must be >= 1" in result.failure_reasons[0]
    assert "output_tokens must be >= 1" in result.failure_reasons[1]
