"""Reproducible experiments behind the figures in docs/policies.md.

Each function builds its workloads from seeded generators, runs the simulator
and returns plain numbers, so tests can assert on a small instance and
``benchmarks/`` scripts can print and record the full-size one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairserve.core.registry import ComponentSpec
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig, simulate
from fairserve.workload import Workload
from fairserve.workload.spec import build, parse_spec


@dataclass(frozen=True)
class Flood:
    """A light tenant beside a heavy tenant that sends far more than the engine can serve."""

    heavy_rate_per_s: float = 100.0
    heavy_prompt_tokens: float = 100.0
    heavy_output_tokens: float = 400.0
    light_rate_per_s: float = 1.0
    light_prompt_tokens: float = 300.0
    light_output_tokens: float = 150.0
    duration_s: float = 300.0
    max_num_seqs: int = 128
    seed: int = 3

    def _source(self, tenant: str, rate: float, prompt: float, output: float) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "arrival": {"process": "poisson", "rate_per_s": rate},
            "prompt": {
                "dist": "lognormal",
                "mean_tokens": prompt,
                "sigma": 0.5,
                "max_tokens": 4096,
            },
            "output": {
                "dist": "lognormal",
                "mean_tokens": output,
                "sigma": 0.5,
                "max_tokens": 2048,
            },
        }

    def workload(self, with_heavy: bool = True) -> Workload:
        """Both tenants, or the light tenant alone (the same light requests)."""
        light = self._source(
            "light", self.light_rate_per_s, self.light_prompt_tokens, self.light_output_tokens
        )
        sources = [light]
        if with_heavy:
            heavy = self._source(
                "heavy", self.heavy_rate_per_s, self.heavy_prompt_tokens, self.heavy_output_tokens
            )
            sources.append(heavy)
        spec = {"seed": self.seed, "duration_s": self.duration_s, "sources": sources}
        return build(parse_spec(spec, "flood"))

    def config(self, policy: str) -> SimConfig:
        """One Llama-3.1-8B/H100 engine behind the policy's global queue (engine queue of 1)."""
        engine = EngineConfig(max_num_seqs=self.max_num_seqs)
        return SimConfig(
            instances=(InstanceSpec(engine=engine),), policy=policy, max_engine_waiting=1
        )


@dataclass(frozen=True)
class IsolationResult:
    """The light tenant's latency under a policy, and alone."""

    policy: str
    light_p50_e2e_s: float
    light_p99_e2e_s: float
    alone_p99_e2e_s: float
    heavy_throughput_req_s: float

    @property
    def p99_ratio(self) -> float:
        """Light p99 E2E beside the flood over light p99 E2E alone."""
        return self.light_p99_e2e_s / self.alone_p99_e2e_s


def isolation(flood: Flood, policies: tuple[str, ...]) -> list[IsolationResult]:
    """Run the flood under each policy and the light tenant alone (fifo, same engine)."""
    alone = simulate(flood.workload(with_heavy=False).requests(), flood.config("fifo"))
    alone_p99 = alone.summary().per_tenant["light"].e2e_s.p99
    out = []
    for policy in policies:
        result = simulate(flood.workload().requests(), flood.config(policy))
        summary = result.summary()
        light = summary.per_tenant["light"]
        heavy = summary.per_tenant["heavy"]
        out.append(
            IsolationResult(
                policy=policy,
                light_p50_e2e_s=light.e2e_s.p50,
                light_p99_e2e_s=light.e2e_s.p99,
                alone_p99_e2e_s=alone_p99,
                heavy_throughput_req_s=heavy.completed / summary.sim_time_s,
            )
        )
    return out


@dataclass(frozen=True)
class SjfGap:
    """Mean E2E of FIFO, SJF on predictions, and the oracle, on Azure conversation lengths.

    Requests draw (prompt, output) pairs from the Azure LLM conversation trace,
    arrive by a Gamma process (CV ``cv``) at ``load`` times the throughput the
    engine sustains when saturated, and queue at one Llama-3.1-8B/H100 engine
    whose own waiting queue the policy orders (``placement="engine"``).
    ``max_num_seqs`` 64 makes the batch cap bind, as in memory-constrained
    deployments, so that requests really wait and order matters.
    """

    prompt_tokens: Any  # numpy arrays of the trace's lengths
    output_tokens: Any
    load: float = 0.95
    cv: float = 2.0
    requests: int = 10_000
    max_num_seqs: int = 64
    seed: int = 1

    def _instances(self) -> tuple[InstanceSpec, ...]:
        return (InstanceSpec(engine=EngineConfig(max_num_seqs=self.max_num_seqs)),)

    def _workload(self, rate_per_s: float, seed: int) -> Workload:
        import numpy as np

        from fairserve.workload.generate import gamma_arrivals

        rng = np.random.default_rng(seed)
        rows = rng.integers(0, len(self.prompt_tokens), self.requests)
        arrivals = (
            gamma_arrivals(self.requests, rate_per_s, self.cv, rng)
            if rate_per_s
            else np.zeros(self.requests)
        )
        return Workload.from_arrays(arrivals, self.prompt_tokens[rows], self.output_tokens[rows])

    def _capacity(self) -> float:
        # Measured once per instance (a frozen dataclass: cache it beside it).
        cached = _CAPACITY.get(id(self))
        if cached is None or cached[0] is not self:
            cached = _CAPACITY[id(self)] = (self, self.capacity_req_s())
        return cached[1]

    def capacity_req_s(self) -> float:
        """Completed requests per second when all requests are there at t=0."""
        result = simulate(
            self._workload(0.0, self.seed + 1000).requests(), SimConfig(self._instances())
        )
        return float(result.records.completed.sum() / result.records.finish_s.max())

    def mean_e2e_s(
        self,
        policy: str,
        predictor: str | None = None,
        params: dict[str, Any] | None = None,
        policy_params: dict[str, Any] | None = None,
    ) -> float:
        """Mean E2E of the workload under ``policy`` with ``predictor``."""
        import numpy as np

        rate = self.load * self._capacity()
        config = SimConfig(
            instances=self._instances(),
            policy=ComponentSpec(policy, policy_params or {}),
            placement="engine",
            predictor=None if predictor is None else ComponentSpec(predictor, params or {}),
        )
        result = simulate(self._workload(rate, self.seed).requests(), config)
        return float(np.mean(result.records.e2e_s))


_CAPACITY: dict[int, tuple[SjfGap, float]] = {}


def gap_closed(fifo_s: float, oracle_s: float, candidate_s: float) -> float:
    """Share of the FIFO -> oracle gap in mean E2E that ``candidate_s`` closes."""
    return (fifo_s - candidate_s) / (fifo_s - oracle_s)
