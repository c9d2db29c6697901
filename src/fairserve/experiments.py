"""Reproducible experiments behind the figures in docs/policies.md.

Each function builds its workloads from seeded generators, runs the simulator
and returns plain numbers, so tests can assert on a small instance and
``benchmarks/`` scripts can print and record the full-size one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
