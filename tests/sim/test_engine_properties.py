"""Property tests: conservation, exactly-once endings, and event skipping = per-step reference."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairserve.core.model import Outcome, Request
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.core.route.basic import RoundRobinRouter
from fairserve.metrics.records import OUTCOME_CODES, RecordArrays, RequestRecords
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import cost_model
from fairserve.sim.engine import Engine
from fairserve.sim.stepper import StepEngine

MODEL = cost_model("H100-80GB", "Llama-3.1-8B")
COMPLETED = OUTCOME_CODES.index(Outcome.COMPLETED)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Request], EngineConfig, int, int]:
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0.0, 0.2), min_size=n, max_size=n))
    prefix = draw(st.booleans())
    reqs = []
    t = 0.0
    for i, gap in enumerate(gaps):
        t += gap
        prompt = draw(st.integers(1, 300))
        output = draw(st.integers(1, 60))
        hashes = None
        if prefix and prompt >= 32:
            family = draw(st.integers(0, 2))
            hashes = tuple(hash((family, j)) for j in range(prompt // 32))
        reqs.append(Request(i, t, prompt, output, prefix_hashes=hashes, prefix_block_tokens=32))
    seqs = draw(st.integers(1, 16))
    cfg = EngineConfig(
        max_num_batched_tokens=draw(st.integers(max(seqs, 16), 400)),
        max_num_seqs=seqs,
        block_size=16,
        num_gpu_blocks=draw(st.integers(24, 160)),
        enable_prefix_caching=prefix,
    )
    return reqs, cfg, draw(st.integers(1, 3)), draw(st.integers(1, 4))


def simulate(
    engine_cls: type[Engine] | type[StepEngine],
    reqs: list[Request],
    cfg: EngineConfig,
    instances: int,
    cap: int,
) -> tuple[RecordArrays, list[Engine] | list[StepEngine]]:
    records = RequestRecords()
    engines = [engine_cls(i, MODEL, cfg, records) for i in range(instances)]
    loop.run(iter(reqs), Cluster(engines, RoundRobinRouter(), FifoPolicy(), cap))
    return records.to_numpy(), engines  # type: ignore[return-value]


def assert_same_records(fast: RecordArrays, ref: RecordArrays, instance: bool) -> None:
    """The two engines' records agree: times to rounding, counts exactly (and the
    instance each request ran on, where both routed alike)."""
    for column in ("first_scheduled_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(
            ordered(fast, column), ordered(ref, column), rtol=1e-9, atol=1e-12, err_msg=column
        )
    exact = ("outcome", "output_tokens", "cached_prompt_tokens", "preemptions")
    for column in ("instance", *exact) if instance else exact:
        np.testing.assert_array_equal(ordered(fast, column), ordered(ref, column), err_msg=column)


def assert_exactly_once_and_conserved(
    rec: RecordArrays, reqs: list[Request], engines: list[Engine]
) -> None:
    """Every request ended once; completed ones produced their tokens; engines hold nothing
    (blocks allocated equal blocks freed)."""
    assert sorted(rec.request_id.tolist()) == [r.id for r in reqs]
    done = rec.outcome == COMPLETED
    by_id = {r.id: r for r in reqs}
    for rid, out in zip(
        rec.request_id[done].tolist(), rec.output_tokens[done].tolist(), strict=True
    ):
        assert out == by_id[rid].output_tokens
    for engine in engines:
        engine.check()
        assert engine.pool.used_blocks == 0 and not engine.running and engine.num_waiting == 0
        assert engine.waiting_prefill_tokens == 0


def ordered(rec: RecordArrays, column: str) -> np.ndarray:
    return np.asarray(getattr(rec, column))[np.argsort(rec.request_id)]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(scenarios())
@SETTINGS
def test_event_skipping_agrees_with_the_per_step_reference(
    scenario: tuple[list[Request], EngineConfig, int, int],
) -> None:
    reqs, cfg, instances, cap = scenario
    fast, fast_engines = simulate(Engine, reqs, cfg, instances, cap)
    ref, ref_engines = simulate(StepEngine, reqs, cfg, instances, cap)
    assert_same_records(fast, ref, instance=True)
    assert sum(e.preemptions for e in fast_engines) == sum(e.preemptions for e in ref_engines)


@given(scenarios())
@SETTINGS
def test_conservation_and_exactly_once(
    scenario: tuple[list[Request], EngineConfig, int, int],
) -> None:
    reqs, cfg, instances, cap = scenario
    rec, engines = simulate(Engine, reqs, cfg, instances, cap)
    assert_exactly_once_and_conserved(rec, reqs, engines)
    done = rec.outcome == COMPLETED
    by_id = {r.id: r for r in reqs}
    # Requests fail only when they can never fit.
    total_blocks = engines[0].pool.total_blocks
    for rid in rec.request_id[~done].tolist():
        r = by_id[rid]
        assert -(-(r.prompt_tokens + r.output_tokens - 1) // 16) > total_blocks
    # Time never goes back within a request.
    arrival, sched = rec.arrival_s[done], rec.first_scheduled_s[done]
    first, finish = rec.first_token_s[done], rec.finish_s[done]
    assert (sched >= arrival).all() and (first > sched).all() and (finish >= first).all()
    # Every engine went idle with its counters back at zero.
    for engine in engines:
        assert engine.outstanding_tokens == engine.predicted_tokens == 0
        assert engine.wake_s is None


def test_requests_out_of_order_are_rejected() -> None:
    import pytest

    reqs = [Request(0, 1.0, 10, 2), Request(1, 0.5, 10, 2)]
    with pytest.raises(ValueError, match="sorted by arrival"):
        simulate(Engine, reqs, EngineConfig(), 1, 8)


def test_same_inputs_same_results() -> None:
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(0.01, 500))
    reqs = [
        Request(i, float(t), int(rng.integers(1, 2000)), int(rng.integers(1, 400)))
        for i, t in enumerate(arrivals)
    ]
    cfg = EngineConfig(num_gpu_blocks=2000)
    a, _ = simulate(Engine, reqs, cfg, 2, 4)
    b, _ = simulate(Engine, reqs, cfg, 2, 4)
    for column in ("request_id", "finish_s", "first_token_s", "preemptions", "instance"):
        assert np.array_equal(getattr(a, column), getattr(b, column))


@given(
    scenarios(),
    st.sampled_from(
        ["vtc", "uwfq", "sjf", "priority", "oracle-srpt", "oracle-srpt:preempt=true", "fair-sjf"]
    ),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_engine_placement_policies_conserve_requests_and_blocks(
    scenario: tuple[list[Request], EngineConfig, int, int], policy: str
) -> None:
    from fairserve.core.policies import POLICIES

    reqs, cfg, instances, _ = scenario
    records = RequestRecords()
    engines = []
    for i in range(instances):
        own = POLICIES.build(policy)
        engines.append(Engine(i, MODEL, cfg, records, own))
    # Route on arrival (a huge engine queue cap): each engine's policy orders its queue.
    loop.run(iter(reqs), Cluster(engines, RoundRobinRouter(), FifoPolicy(), 1 << 30))
    assert_exactly_once_and_conserved(records.to_numpy(), reqs, engines)


# Tenant weights that keep every charge a dyadic rational: the per-step engine
# reports service step by step and the event-skipping one per run, so the sums
# must be exact for the two to see the same counters (uwfq divides by the sum
# of the active tenants' weights, hence equal weights there).
CHARGING_WEIGHTS = {
    "vtc": {"a": 1.0, "b": 2.0},
    "fair-sjf": {"a": 1.0, "b": 2.0},
    "wrr": {"a": 1.0, "b": 2.0},
    "uwfq": {"a": 1.0, "b": 1.0},
    # Not a charging policy, but the engine tells it each sequence's progress and it
    # preempts for a shorter waiting head: the two engines must agree on that too.
    "oracle-srpt": {"a": 1.0, "b": 1.0},
    "fifo": {"a": 1.0, "b": 1.0},  # for the per-tenant prefill cap below
    "priority": {"a": 1.0, "b": 1.0},  # for the service quantum below
}


@st.composite
def tenant_scenarios(draw: st.DrawFn) -> tuple[list[Request], EngineConfig, int, int]:
    """``scenarios`` with two tenants and, for some requests, a predicted length."""
    reqs, cfg, instances, cap = draw(scenarios())
    for r in reqs:
        r.tenant = draw(st.sampled_from("ab"))
        r.predicted_output_tokens = draw(st.none() | st.integers(1, 80))
    return reqs, cfg, instances, cap


def simulate_engine_placement(
    engine_cls: type[Engine] | type[StepEngine],
    reqs: list[Request],
    cfg: EngineConfig,
    instances: int,
    policy: str,
) -> tuple[RecordArrays, list[Engine] | list[StepEngine]]:
    """Route on arrival; each engine runs its own instance of ``policy``."""
    from fairserve.core.model import Tenant
    from fairserve.core.policies import POLICIES

    weights = CHARGING_WEIGHTS[policy.partition(":")[0]]
    tenants = {name: Tenant(name, weight=w) for name, w in weights.items()}
    records = RequestRecords()
    engines = [
        engine_cls(i, MODEL, cfg, records, POLICIES.build(policy, tenants=tenants))
        for i in range(instances)
    ]
    fresh = [copy.copy(r) for r in reqs]  # each run its own requests (policies key on them)
    loop.run(iter(fresh), Cluster(engines, RoundRobinRouter(), FifoPolicy(), 1 << 30))
    return records.to_numpy(), engines  # type: ignore[return-value]


@given(tenant_scenarios(), st.sampled_from([*sorted(CHARGING_WEIGHTS), "oracle-srpt:preempt=true"]))
@SETTINGS
def test_engine_placement_with_charging_policies_agrees_with_the_per_step_engine(
    scenario: tuple[list[Request], EngineConfig, int, int], policy: str
) -> None:
    reqs, cfg, instances, _ = scenario
    fast, fast_engines = simulate_engine_placement(Engine, reqs, cfg, instances, policy)
    ref, ref_engines = simulate_engine_placement(StepEngine, reqs, cfg, instances, policy)
    assert_same_records(fast, ref, instance=True)
    assert_exactly_once_and_conserved(fast, reqs, fast_engines)  # type: ignore[arg-type]
    for engine in ref_engines:
        engine.check()
        assert engine.pool.used_blocks == 0 and not engine.running and engine.num_waiting == 0


def test_a_blocked_head_yields_as_soon_as_the_charges_reorder_the_queue() -> None:
    # Tenant b was charged a long prompt; tenant a's long decode then raises a's
    # counter step by step. a's next request is at the head but does not fit in
    # the KV cache; once a's counter passes b's, VTC puts b's small request at
    # the head and it runs at once, long before a's decode ends. The
    # event-skipping engine must look at the head again after every step.
    reqs = [
        Request(0, 0.0, 2000, 10, tenant="b"),
        Request(1, 0.0, 20, 2000, tenant="a"),
        Request(2, 0.5, 3180, 1, tenant="a"),
        Request(3, 0.5, 16, 5, tenant="b"),
    ]
    cfg = EngineConfig(num_gpu_blocks=200, enable_prefix_caching=False)
    fast, _ = simulate_engine_placement(Engine, reqs, cfg, 1, "vtc")
    ref, _ = simulate_engine_placement(StepEngine, reqs, cfg, 1, "vtc")
    np.testing.assert_allclose(
        ordered(fast, "first_scheduled_s"), ordered(ref, "first_scheduled_s")
    )
    sched = ordered(fast, "first_scheduled_s")
    finish = ordered(fast, "finish_s")
    assert sched[2] >= finish[1] > sched[3] > 0.5


@given(tenant_scenarios(), st.integers(1, 200), st.sampled_from(["gateway", "vtc", "fifo"]))
@SETTINGS
def test_a_per_tenant_prefill_cap_agrees_with_the_per_step_engine(
    scenario: tuple[list[Request], EngineConfig, int, int], prefill_cap: int, where: str
) -> None:
    import dataclasses

    reqs, cfg, instances, cap = scenario
    cfg = dataclasses.replace(cfg, max_tenant_prefill_tokens=prefill_cap)
    if where == "gateway":
        fast, fast_engines = simulate(Engine, reqs, cfg, instances, cap)
        ref, _ = simulate(StepEngine, reqs, cfg, instances, cap)
    else:
        fast, fast_engines = simulate_engine_placement(Engine, reqs, cfg, instances, where)
        ref, _ = simulate_engine_placement(StepEngine, reqs, cfg, instances, where)
    assert_same_records(fast, ref, instance=False)
    assert_exactly_once_and_conserved(fast, reqs, fast_engines)  # type: ignore[arg-type]


@given(
    tenant_scenarios(),
    st.integers(1, 60),
    st.sampled_from(["vtc", "uwfq", "priority", "fifo", "wrr"]),
)
@SETTINGS
def test_a_service_quantum_agrees_with_the_per_step_engine(
    scenario: tuple[list[Request], EngineConfig, int, int], quantum: int, where: str
) -> None:
    import dataclasses

    reqs, cfg, instances, _ = scenario
    cfg = dataclasses.replace(cfg, service_quantum_tokens=quantum)
    fast, fast_engines = simulate_engine_placement(Engine, reqs, cfg, instances, where)
    ref, _ = simulate_engine_placement(StepEngine, reqs, cfg, instances, where)
    assert_same_records(fast, ref, instance=False)
    assert_exactly_once_and_conserved(fast, reqs, fast_engines)  # type: ignore[arg-type]


def test_a_long_request_yields_its_seat_after_its_quantum() -> None:
    # One seat. Tenant a's long decode holds it; b's short request arrives behind it.
    # Without a quantum b waits for all 2,000 of a's tokens; with a 50-token quantum
    # under vtc, a yields (one recompute preemption) and b runs, then a resumes.
    reqs = [Request(0, 0.0, 20, 2000, tenant="a"), Request(1, 0.1, 20, 10, tenant="b")]
    base = EngineConfig(max_num_seqs=1, max_num_batched_tokens=64, enable_prefix_caching=False)
    runs = {}
    for quantum in (None, 50):
        cfg = dataclasses.replace(base, service_quantum_tokens=quantum)
        for engine in (Engine, StepEngine):
            records, _ = simulate_engine_placement(engine, reqs, cfg, 1, "vtc")
            runs[quantum, engine] = records
    np.testing.assert_allclose(ordered(runs[50, Engine], "finish_s"),
                               ordered(runs[50, StepEngine], "finish_s"), rtol=1e-9)  # fmt: skip
    slow, fast = ordered(runs[None, Engine], "finish_s"), ordered(runs[50, Engine], "finish_s")
    assert fast[1] < 0.1 * slow[1]  # b no longer waits for a's whole answer
    assert fast[0] > slow[0]  # a pays: b's service and its own recompute
    assert list(ordered(runs[50, Engine], "preemptions")) == [1, 0]
    assert list(ordered(runs[None, Engine], "preemptions")) == [0, 0]
    assert list(ordered(runs[50, Engine], "output_tokens")) == [2000, 10]
    # fifo would not put b first: nothing yields
    cfg = dataclasses.replace(base, service_quantum_tokens=50)
    fifo, _ = simulate_engine_placement(Engine, reqs, cfg, 1, "fifo")
    assert list(ordered(fifo, "preemptions")) == [0, 0]
