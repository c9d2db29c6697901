"""KV tiers behind the GPU prefix cache: the tier itself, the engines' use of it (both
engines alike), the transfer time, the conservation of blocks and bytes, the summary's
per-tier figures, the kv-aware router and the CLI options."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairserve.core.model import Request
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.core.registry import ComponentError
from fairserve.core.route import ROUTERS
from fairserve.core.route.basic import RoundRobinRouter
from fairserve.core.route.kvaware import KVAwareRouter
from fairserve.metrics.records import RecordArrays, RequestRecords
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig, engine_config_from
from fairserve.sim.engine import Engine, tiered_step_s
from fairserve.sim.kvcache import BlockPool, KVTier, check_tiers, tier_chain
from fairserve.sim.stepper import StepEngine
from tests.sim.factories import req
from tests.sim.test_engine_properties import (
    MODEL,
    SETTINGS,
    assert_exactly_once_and_conserved,
    assert_same_records,
    scenarios,
    simulate_engine_placement,
)

KV_BYTES_PER_TOKEN = MODEL.model.kv_bytes_per_token(1)
BLOCK_BYTES = KV_BYTES_PER_TOKEN * 16  # 16-token blocks


def gb_for_blocks(blocks: int) -> float:
    """A tier size (10^9 bytes) that holds exactly ``blocks`` 16-token blocks of the model."""
    return (blocks * BLOCK_BYTES + BLOCK_BYTES // 2) / 1e9


# --- the tier on its own ---------------------------------------------------------------


def test_a_full_tier_pushes_its_oldest_runs_down_and_a_take_moves_one_up() -> None:
    remote = KVTier("remote", 4, BLOCK_BYTES, 1e9)
    cpu = KVTier("cpu", 4, BLOCK_BYTES, 1e9, lower=remote)
    for key in (1, 2, 3):
        cpu.put(key, 2)
    # 1 was put first: out to the remote tier to make room for 3.
    assert list(cpu.runs) == [2, 3] and list(remote.runs) == [1]
    assert cpu.used_blocks == 4 and cpu.evictions == 1
    assert cpu.take(2) == 2
    assert list(cpu.runs) == [3] and cpu.loaded_blocks == 2 and cpu.loaded_bytes == 2 * BLOCK_BYTES
    cpu.discard(1)  # a fresher copy exists above: dropped from the tier that has it
    assert not remote.runs and remote.used_blocks == 0
    for tier in (cpu, remote):
        tier.check()


def test_a_run_larger_than_a_tier_goes_straight_below_it() -> None:
    remote = KVTier("remote", 10, BLOCK_BYTES, 1e9)
    cpu = KVTier("cpu", 2, BLOCK_BYTES, 1e9, lower=remote)
    cpu.put(7, 3)
    assert not cpu.runs and list(remote.runs) == [7]


def test_a_load_costs_the_latency_plus_bytes_over_bandwidth() -> None:
    tier = KVTier("remote", 10, BLOCK_BYTES, 12.5e9, latency_s=0.0005)
    assert tier.load_s(4) == pytest.approx(0.0005 + 4 * BLOCK_BYTES / 12.5e9)


def test_gpu_evictions_spill_into_the_cpu_tier_and_registering_supersedes_it() -> None:
    pool = BlockPool(4)
    pool.spill = KVTier("cpu", 8, BLOCK_BYTES, 1e9)
    pool.allocate(2)
    entry = pool.register(11, 2)
    assert entry is not None
    pool.release_entries([entry])
    pool.allocate(4)  # takes the cached run's blocks: it moves to the CPU tier
    assert not pool.is_cached(11) and list(pool.spill.runs) == [11]
    check_tiers(pool)
    pool.release(4)
    pool.allocate(2)
    assert pool.register(11, 2) is not None  # computed again: the GPU copy wins
    assert not pool.spill.runs
    check_tiers(pool)


# --- the engines -----------------------------------------------------------------------


def run_engines(
    engine_cls: type[Engine] | type[StepEngine],
    reqs: Sequence[Request],
    cfg: EngineConfig,
    instances: int = 1,
    cap: int = 8,
    router: Any = None,
    checked: bool = False,
) -> tuple[RecordArrays, list[Any]]:
    records = RequestRecords()
    engines = [engine_cls(i, MODEL, cfg, records) for i in range(instances)]
    views = [CheckedInstance(e) for e in engines] if checked else engines
    router = router if router is not None else RoundRobinRouter()
    fresh = [dataclasses.replace(r) for r in reqs]
    loop.run(iter(fresh), Cluster(views, router, FifoPolicy(), cap))  # type: ignore[arg-type]
    return records.to_numpy(), engines


class CheckedInstance:
    """An engine whose invariants (tiers included) are asserted after every event."""

    def __init__(self, engine: Engine | StepEngine) -> None:
        object.__setattr__(self, "_engine", engine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._engine, name, value)

    def add(self, request: Request, now: float) -> None:
        self._engine.add(request, now)
        assert_tiers_conserved(self._engine)

    def advance(self) -> None:
        self._engine.advance()
        assert_tiers_conserved(self._engine)


def assert_tiers_conserved(engine: Engine | StepEngine) -> None:
    """Blocks per tier within capacity and equal to its runs, every key in one tier at most,
    every GPU eviction kept by the tier below (and so on down), bytes and seconds of
    transfer equal to the blocks moved times their size over the bandwidth."""
    engine.check()
    tiers = tier_chain(engine.tiers)
    above_evictions = engine.pool.evictions
    for tier in tiers:
        assert tier.block_bytes == KV_BYTES_PER_TOKEN * engine.bs
        assert tier.puts == above_evictions, (tier.name, tier.puts, above_evictions)
        above_evictions = tier.evictions
        assert tier.loaded_bytes == tier.loaded_blocks * KV_BYTES_PER_TOKEN * engine.bs
        if tier.latency_s == 0:
            expected = tier.loaded_blocks * tier.block_bytes / tier.bandwidth_bytes_s
            assert tier.transfer_s == pytest.approx(expected, rel=1e-9, abs=1e-15)


def tier_counters(engines: Sequence[Engine | StepEngine]) -> list[tuple[Any, ...]]:
    rows = []
    for e in engines:
        rows.append(("gpu", e.gpu_hit_tokens, e.pool.evictions))
        for t in tier_chain(e.tiers):
            rows.append((t.name, t.hit_tokens, t.loaded_blocks, t.puts, t.evictions,
                         round(t.transfer_s, 12), sorted(t.runs)))  # fmt: skip
    return rows


@st.composite
def tiered_scenarios(draw: st.DrawFn) -> tuple[list[Request], EngineConfig, int, int]:
    """The engine-property scenarios with prefixes on and a CPU tier (a remote one below
    it half the time), both small enough to fill."""
    _, cfg, instances, cap = draw(scenarios())
    reqs = []
    t = 0.0
    for i in range(draw(st.integers(4, 30))):
        t += draw(st.floats(0.0, 0.2))
        prompt = draw(st.integers(1, 300))
        family = draw(st.integers(0, 3))
        hashes = tuple(hash((family, j)) for j in range(prompt // 32)) or None
        output = draw(st.integers(1, 60))
        reqs.append(req(i, t, prompt, output, hashes=hashes, block_tokens=32))
    remote = draw(st.none() | st.integers(2, 60))
    cfg = dataclasses.replace(
        cfg,
        enable_prefix_caching=True,
        # A GPU small enough to evict, and tiers small enough to evict in turn.
        num_gpu_blocks=draw(st.integers(24, 64)),
        cpu_kv_cache_gb=gb_for_blocks(draw(st.sampled_from([1, 3, 6, 12, 40]))),
        cpu_kv_bandwidth_gb_s=draw(st.sampled_from([1.0, 25.0])),
        remote_kv_cache_gb=None if remote is None else gb_for_blocks(remote),
        remote_kv_latency_s=draw(st.sampled_from([0.0, 0.002])),
    )
    return reqs, cfg, instances, cap


@given(tiered_scenarios(), st.booleans())
@SETTINGS
def test_with_tiers_event_skipping_agrees_with_the_per_step_reference(
    scenario: tuple[list[Request], EngineConfig, int, int], kv_aware: bool
) -> None:
    reqs, cfg, instances, cap = scenario

    def router() -> Any:
        return KVAwareRouter() if kv_aware else RoundRobinRouter()

    fast, fast_engines = run_engines(Engine, reqs, cfg, instances, cap, router())
    ref, ref_engines = run_engines(StepEngine, reqs, cfg, instances, cap, router())
    assert_same_records(fast, ref, instance=True)
    assert tier_counters(fast_engines) == tier_counters(ref_engines)


@given(
    tiered_scenarios(),
    st.integers(1, 4),
    st.sampled_from([1, 3, 6, 12]),
    st.integers(2, 3),
    st.integers(1, 2),
)
@SETTINGS
def test_a_router_reading_the_cache_mid_run_sees_what_the_per_step_engine_evicted(
    scenario: tuple[list[Request], EngineConfig, int, int],
    seqs: int,
    cpu_blocks: int,
    instances: int,
    cap: int,
) -> None:
    """Small batches on a small GPU: decode runs evict cached blocks while requests
    arrive, and kv-aware routing reads the cache at each arrival."""
    reqs = scenario[0]
    cfg = EngineConfig(
        max_num_batched_tokens=max(16, seqs),
        max_num_seqs=seqs,
        num_gpu_blocks=42,
        cpu_kv_cache_gb=gb_for_blocks(cpu_blocks),
        cpu_kv_bandwidth_gb_s=1.0,
    )
    fast, fast_engines = run_engines(Engine, reqs, cfg, instances, cap, KVAwareRouter())
    ref, ref_engines = run_engines(StepEngine, reqs, cfg, instances, cap, KVAwareRouter())
    assert_same_records(fast, ref, instance=True)
    assert tier_counters(fast_engines) == tier_counters(ref_engines)


@given(
    tiered_scenarios(),
    st.sampled_from(["vtc", "oracle-srpt:preempt=true", "fifo", "uwfq"]),
    st.none() | st.integers(1, 60),
    st.none() | st.integers(16, 200),
)
@SETTINGS
def test_with_tiers_engine_placement_policies_agree_with_the_per_step_reference(
    scenario: tuple[list[Request], EngineConfig, int, int],
    policy: str,
    quantum: int | None,
    prefill_cap: int | None,
) -> None:
    reqs, cfg, instances, _ = scenario
    for i, r in enumerate(reqs):
        r.tenant = "ab"[i % 2]
        r.predicted_output_tokens = r.output_tokens // 2 + 1
    cfg = dataclasses.replace(
        cfg, service_quantum_tokens=quantum, max_tenant_prefill_tokens=prefill_cap
    )
    fast, fast_engines = simulate_engine_placement(Engine, reqs, cfg, instances, policy)
    ref, ref_engines = simulate_engine_placement(StepEngine, reqs, cfg, instances, policy)
    assert_same_records(fast, ref, instance=True)
    assert tier_counters(fast_engines) == tier_counters(ref_engines)
    assert_exactly_once_and_conserved(fast, reqs, fast_engines)  # type: ignore[arg-type]


@given(tiered_scenarios(), st.sampled_from([Engine, StepEngine]))
@SETTINGS
def test_with_tiers_blocks_bytes_and_hits_are_conserved(
    scenario: tuple[list[Request], EngineConfig, int, int],
    engine_cls: type[Engine] | type[StepEngine],
) -> None:
    reqs, cfg, instances, cap = scenario
    rec, engines = run_engines(engine_cls, reqs, cfg, instances, cap, checked=True)
    if engine_cls is Engine:
        assert_exactly_once_and_conserved(rec, reqs, engines)
    # Every prompt token served from a cache came from exactly one tier.
    served = sum(e.gpu_hit_tokens + sum(t.hit_tokens for t in tier_chain(e.tiers)) for e in engines)
    assert served == int(rec.cached_prompt_tokens.sum())
    for e in engines:
        assert e.pool.used_blocks == 0
        for tier in tier_chain(e.tiers):
            # What is loaded was stored first; what is held fits.
            assert tier.loaded_blocks <= tier.puts * max(1, tier.total_blocks)
            assert tier.used_blocks <= tier.total_blocks


def test_a_tier_that_never_fills_changes_nothing_until_the_gpu_evicts() -> None:
    reqs = [req(i, 0.1 * i, 200, 20, hashes=[hash((i % 2, j)) for j in range(6)], block_tokens=32)
            for i in range(12)]  # fmt: skip
    plain = EngineConfig(num_gpu_blocks=400)
    tiered = dataclasses.replace(plain, cpu_kv_cache_gb=50.0)
    a, _ = run_engines(Engine, reqs, plain)
    b, engines = run_engines(Engine, reqs, tiered)
    assert engines[0].pool.evictions == 0
    assert_same_records(a, b, instance=True)


def evicting_workload() -> list[Request]:
    """A prefix P computed, then pushed out of a small GPU by other prompts, then reused."""
    prefix = [hash(("P", j)) for j in range(8)]  # 8 runs of 32 tokens: 256 tokens
    reqs = [req(0, 0.0, 288, 2, hashes=prefix, block_tokens=32)]
    for i in range(1, 4):
        reqs.append(
            req(i, 1.0 * i, 288, 2, hashes=[hash((i, j)) for j in range(9)], block_tokens=32)
        )
    reqs.append(req(9, 10.0, 288, 1, hashes=prefix, block_tokens=32))
    return reqs


@pytest.mark.parametrize("engine_cls", [Engine, StepEngine])
def test_a_prefix_evicted_to_cpu_comes_back_and_pays_its_transfer(
    engine_cls: type[Engine] | type[StepEngine],
) -> None:
    base = EngineConfig(num_gpu_blocks=24, max_num_seqs=1)
    bandwidth_gb_s = 2.0
    cfg = dataclasses.replace(base, cpu_kv_cache_gb=10.0, cpu_kv_bandwidth_gb_s=bandwidth_gb_s)
    without, _ = run_engines(engine_cls, evicting_workload(), base)
    rec, engines = run_engines(engine_cls, evicting_workload(), cfg)
    last = int(np.flatnonzero(rec.request_id == 9)[0])
    assert without.cached_prompt_tokens[np.flatnonzero(without.request_id == 9)[0]] == 0
    assert rec.cached_prompt_tokens[last] == 256
    cpu = engines[0].tiers
    assert cpu is not None and cpu.hit_tokens == 256 and engines[0].gpu_hit_tokens == 0
    # Its one step: 32 tokens computed over 256 loaded at the tier's bandwidth.
    load_s = 256 * KV_BYTES_PER_TOKEN / (bandwidth_gb_s * 1e9)
    assert cpu.transfer_s == pytest.approx(load_s)
    compute_s = MODEL.step_time_s(32, 0, 288, 32 * 256 + 32 * 33 // 2, 1, 1)
    expected = tiered_step_s(compute_s, load_s, MODEL.model.num_layers)
    step_s = rec.first_token_s[last] - rec.first_scheduled_s[last]
    assert step_s == pytest.approx(expected, rel=1e-12)
    assert step_s > load_s > compute_s  # a slow link: the load is not hidden


def test_a_remote_tier_catches_what_the_cpu_tier_evicts() -> None:
    cfg = EngineConfig(
        num_gpu_blocks=24,
        max_num_seqs=1,
        cpu_kv_cache_gb=gb_for_blocks(16),
        remote_kv_cache_gb=10.0,
        remote_kv_latency_s=0.001,
    )
    rec, engines = run_engines(Engine, evicting_workload(), cfg, checked=True)
    cpu = engines[0].tiers
    assert cpu is not None and cpu.lower is not None
    assert cpu.evictions > 0 and cpu.lower.hit_tokens > 0
    assert int(rec.cached_prompt_tokens[rec.request_id == 9][0]) == 256
    assert cpu.lower.transfer_s >= cpu.lower.latency_s


# --- the router view and the kv-aware router ---------------------------------------------


def drive_until(engine: Engine | StepEngine, reqs: Sequence[Request], until_s: float) -> None:
    """Run one engine alone through ``reqs`` up to (not including) ``until_s``."""
    pending = list(reqs)
    while True:
        wake = engine.wake_s
        if pending and (wake is None or pending[0].arrival_s <= wake):
            if pending[0].arrival_s >= until_s:
                return
            r = pending.pop(0)
            engine.add(r, r.arrival_s)
        elif wake is not None and wake < until_s:
            engine.advance()
        else:
            return


@pytest.mark.parametrize("at_s", [0.6, 0.9, 1.2, 1.4, 1.56])
def test_prefix_match_mid_run_sees_the_evictions_of_the_steps_before(at_s: float) -> None:
    """A long decode on a small GPU pushes a cached prefix out to the CPU tier during a
    decode run: read mid-run, the event-skipping engine reports what the per-step one does."""
    prefix = [hash(("P", j)) for j in range(2)]
    reqs = [req(0, 0.0, 64, 1, hashes=prefix, block_tokens=32), req(1, 0.5, 100, 150)]
    cfg = EngineConfig(num_gpu_blocks=18, cpu_kv_cache_gb=10.0)
    seen = []
    for engine_cls in (Engine, StepEngine):
        engine = engine_cls(0, MODEL, cfg, RequestRecords())
        drive_until(engine, reqs, at_s)
        seen.append(engine.prefix_match(tuple(prefix), 32, at_s))
        engine.check()
    assert seen[0] == seen[1]
    assert sum(seen[0]) == 64


def test_the_prefix_leaves_the_gpu_during_that_run() -> None:
    prefix = (hash(("P", 0)), hash(("P", 1)))
    reqs = [req(0, 0.0, 64, 1, hashes=prefix, block_tokens=32), req(1, 0.5, 100, 150)]
    engine = Engine(0, MODEL, EngineConfig(num_gpu_blocks=18, cpu_kv_cache_gb=10.0),
                    RequestRecords())  # fmt: skip
    drive_until(engine, reqs, 0.55)
    assert engine.prefix_match(prefix, 32, 0.55) == (64, 0, 0)
    run_end = engine.wake_s
    assert run_end is not None and run_end > 1.5  # one decode run to the end of request 1
    # Its decodes needed two blocks more than were free: one run went, the deeper one.
    assert engine.prefix_match(prefix, 32, run_end - 1e-6) == (32, 32, 0)


class View:
    def __init__(self, index: int, load: int, match: tuple[int, int, int] | None) -> None:
        self.index, self.outstanding_tokens, self.predicted_tokens = index, load, load
        self.num_waiting = self.num_running = 0
        if match is not None:
            self.prefix_match = lambda hashes, block_tokens, now: match


def test_kv_aware_prefers_gpu_then_cpu_then_a_miss_at_equal_load() -> None:
    r = req(0, 0.0, 1000, 10, hashes=[1, 2, 3], block_tokens=256)
    router = KVAwareRouter()
    views = [View(0, 0, (0, 0, 0)), View(1, 0, (0, 768, 0)), View(2, 0, (768, 0, 0))]
    assert router.choose(r, views, 0.0) == 2
    assert router.choose(r, views[:2], 0.0) == 1
    assert router.choose(r, [views[0], View(1, 0, (0, 0, 768))], 0.0) == 1


def test_kv_aware_leaves_a_cache_hit_on_an_overloaded_instance() -> None:
    r = req(0, 0.0, 1000, 10, hashes=[1, 2, 3], block_tokens=256)
    views = [View(0, 5000, (768, 0, 0)), View(1, 100, (0, 0, 0))]
    assert KVAwareRouter().choose(r, views, 0.0) == 1
    assert KVAwareRouter(load_weight=0.1).choose(r, views, 0.0) == 0


def test_kv_aware_without_prefix_views_is_least_tokens() -> None:
    r = req(0, 0.0, 1000, 10, hashes=[1, 2, 3], block_tokens=256)
    views = [View(0, 300, None), View(1, 200, None), View(2, 250, None)]
    assert KVAwareRouter().choose(r, views, 0.0) == 1


def test_kv_aware_is_registered_and_checks_its_parameters() -> None:
    assert isinstance(ROUTERS.build("kv-aware:cpu_weight=0.5"), KVAwareRouter)
    with pytest.raises(ComponentError, match="cpu_weight"):
        ROUTERS.build("kv-aware:cpu_weight=-1")


@pytest.mark.parametrize("engine_cls", [Engine, StepEngine])
def test_prefix_match_reports_tokens_per_tier(engine_cls: type[Engine] | type[StepEngine]) -> None:
    cfg = EngineConfig(num_gpu_blocks=24, max_num_seqs=1, cpu_kv_cache_gb=10.0)
    prefix = tuple(hash(("P", j)) for j in range(8))
    _, engines = run_engines(engine_cls, evicting_workload()[:-1], cfg)
    gpu, cpu, remote = engines[0].prefix_match(prefix, 32, 100.0)
    assert gpu + cpu == 256 and cpu > 0 and remote == 0
    assert engines[0].prefix_match((hash("nowhere"), *prefix), 32, 100.0) == (0, 0, 0)


# --- configuration, summary and CLI --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cpu_kv_cache_gb", 0.0),
        ("cpu_kv_bandwidth_gb_s", 0.0),
        ("remote_kv_bandwidth_gb_s", -1.0),
        ("remote_kv_latency_s", -0.1),
    ],
)
def test_bad_tier_settings_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        EngineConfig(**{"cpu_kv_cache_gb": 1.0, key: value})  # type: ignore[arg-type]


def test_a_remote_tier_needs_a_cpu_tier_and_tiers_need_prefix_caching() -> None:
    with pytest.raises(ValueError, match="remote_kv_cache_gb needs cpu_kv_cache_gb"):
        EngineConfig(remote_kv_cache_gb=10.0)
    with pytest.raises(ValueError, match="prefix caching"):
        EngineConfig(cpu_kv_cache_gb=10.0, enable_prefix_caching=False)


def test_engine_options_leave_unset_tier_keys_at_their_defaults() -> None:
    options = {"max_num_batched_tokens": 8192, "max_num_seqs": 256, "block_size": 16,
               "gpu_memory_utilization": 0.9, "prefix_caching": True, "num_gpu_blocks": None,
               "cpu_kv_cache_gb": 100.0, "cpu_kv_bandwidth_gb_s": None}  # fmt: skip
    cfg = engine_config_from(options)
    assert cfg.cpu_kv_cache_gb == 100.0 and cfg.cpu_kv_bandwidth_gb_s == 25.0
    assert cfg.remote_kv_cache_gb is None


def write_mooncake_trace(path: Path) -> None:
    rows = []
    for i in range(40):
        family = i % 4
        hashes = [family * 100 + j for j in range(6)] + [10_000 + i]
        rows.append({"timestamp": i * 200, "input_length": 7 * 512, "output_length": 4,
                     "hash_ids": hashes})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fairserve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fairserve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_simulate_reports_hits_and_transfers_per_tier(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    write_mooncake_trace(trace)
    common = ("simulate", "--json", "--trace", str(trace), "--num-gpu-blocks", "700")
    plain = fairserve(*common)
    tiered = fairserve(*common, "--cpu-kv-cache-gb", "20", "--router", "kv-aware")
    assert plain.returncode == 0 and tiered.returncode == 0, plain.stderr + tiered.stderr
    assert "kv_tiers" not in json.loads(plain.stdout)
    tiers = json.loads(tiered.stdout)["kv_tiers"]
    assert set(tiers) == {"gpu", "cpu"}
    assert tiers["cpu"]["hit_tokens"] > 0 and tiers["cpu"]["loaded_bytes"] > 0
    assert tiers["cpu"]["transfer_s"] > 0
    # Bytes moved: every load (a re-admission loads again), at least the first ones.
    assert tiers["cpu"]["loaded_bytes"] >= tiers["cpu"]["hit_tokens"] * KV_BYTES_PER_TOKEN
    assert 0 < tiers["gpu"]["hit_rate"] + tiers["cpu"]["hit_rate"] <= 1


def test_a_bad_tier_option_is_one_line_naming_it(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    write_mooncake_trace(trace)
    proc = fairserve("simulate", "--trace", str(trace), "--cpu-kv-cache-gb", "-3")
    assert proc.returncode == 2
    assert "cpu_kv_cache_gb" in proc.stderr and "Traceback" not in proc.stderr
