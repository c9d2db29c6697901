"""Reproducible experiments behind the figures in docs/policies.md.

Each function builds its workloads from seeded generators, runs the simulator
and returns plain numbers, so tests can assert on a small instance and
``benchmarks/`` scripts can print and record the full-size one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairserve.core.model import SLO, Tenant
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
    light_tpot_s: float | None = None  # the light tenant's TPOT objective, if any
    max_tenant_prefill_tokens: int | None = None  # the engine's per-tenant cap per step
    placement: str = "gateway"  # "engine": the policy is the engine's own waiting queue
    service_quantum_tokens: int | None = None  # the engine's service quantum

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
        if self.light_tpot_s is not None:
            light["slo"] = {"name": "light", "tpot_s": self.light_tpot_s}
        sources = [light]
        if with_heavy:
            heavy = self._source(
                "heavy", self.heavy_rate_per_s, self.heavy_prompt_tokens, self.heavy_output_tokens
            )
            sources.append(heavy)
        spec = {"seed": self.seed, "duration_s": self.duration_s, "sources": sources}
        return build(parse_spec(spec, "flood"))

    def config(self, policy: str, slo_concurrency: str = "auto") -> SimConfig:
        """One Llama-3.1-8B/H100 engine behind the policy's global queue (engine queue of 1),
        or with the policy as its own waiting queue (``placement="engine"``).

        With ``light_tpot_s`` the light tenant carries that TPOT objective, and
        SLO-driven concurrency (``slo_concurrency``) holds the batch to it.
        """
        engine = EngineConfig(
            max_num_seqs=self.max_num_seqs,
            max_tenant_prefill_tokens=self.max_tenant_prefill_tokens,
            service_quantum_tokens=self.service_quantum_tokens,
        )
        tenants: tuple[Tenant, ...] = ()
        if self.light_tpot_s is not None:
            tenants = (Tenant("light", slo=SLO("light", tpot_s=self.light_tpot_s)),)
        return SimConfig(
            instances=(InstanceSpec(engine=engine),),
            policy=policy,
            max_engine_waiting=1,
            tenants=tenants,
            slo_concurrency=slo_concurrency,
            placement=self.placement,
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

    def setup(
        self, policy: ComponentSpec | None = None, predictor: ComponentSpec | None = None
    ) -> tuple[Workload, SimConfig]:
        """The study's workload (Gamma arrivals at ``load`` x the capacity) and its
        deployment: ``policy`` (fifo by default) as the engine's own queue."""
        config = SimConfig(
            instances=self._instances(),
            policy=policy if policy is not None else ComponentSpec("fifo", {}),
            placement="engine",
            predictor=predictor,
        )
        return self._workload(self.load * self._capacity(), self.seed), config

    def mean_e2e_s(
        self,
        policy: str,
        predictor: str | None = None,
        params: dict[str, Any] | None = None,
        policy_params: dict[str, Any] | None = None,
    ) -> float:
        """Mean E2E of the workload under ``policy`` with ``predictor``."""
        import numpy as np

        workload, config = self.setup(
            ComponentSpec(policy, policy_params or {}),
            None if predictor is None else ComponentSpec(predictor, params or {}),
        )
        result = simulate(workload.requests(), config)
        return float(np.mean(result.records.e2e_s))

    def bound_mean_e2e_s(self) -> float:
        """Mean E2E of the same requests, each alone on an empty engine: no policy beats it."""
        import numpy as np

        from fairserve.sim.bound import alone_e2e_s

        rate = self.load * self._capacity()
        requests = self._workload(rate, self.seed).requests()
        return float(np.nanmean(alone_e2e_s(requests, self._instances()[0])))


_CAPACITY: dict[int, tuple[SjfGap, float]] = {}


def gap_closed(reference_s: float, bound_s: float, candidate_s: float) -> float:
    """Share of the gap in mean E2E between ``reference_s`` (FIFO) and the lower bound
    ``bound_s`` (``SjfGap.bound_mean_e2e_s``, ``sim.bound``) that ``candidate_s`` closes.

    Always in [0, 1]: 1 at the bound, 0 for a candidate no better than the
    reference (a worse one is 0 too: compare the means to see by how much).
    Raises ``ValueError`` if ``candidate_s`` or ``reference_s`` beat the bound,
    which would mean it is not one.
    """
    tolerance = 1e-9 * max(abs(bound_s), 1.0)
    for name, value in (("candidate_s", candidate_s), ("reference_s", reference_s)):
        if value < bound_s - tolerance:
            raise ValueError(f"{name} {value!r} is below the lower bound {bound_s!r}")
    if reference_s - bound_s <= tolerance:
        return 1.0  # the reference is at the bound: nothing left to close
    return min(1.0, max(0.0, (reference_s - candidate_s) / (reference_s - bound_s)))


@dataclass(frozen=True)
class DriftSchedMix:
    """A DriftSched-like setup: three tenants with priorities and heterogeneous lengths.

    ``interactive`` (priority 0, ~80-token answers), ``standard`` (priority 1,
    ~300) and ``batch`` (priority 2, ~900) send Gamma arrivals (CV 1.5) in the
    ratio 6:3:1 for ``duration_s`` to one Llama-3.1-8B engine on an L4 (the
    derived profile: 24 GB, about 44k tokens of KV cache, so memory binds and
    requests queue). The engine orders its own waiting queue with the policy
    (``placement="engine"``); the ``driftsched`` predictor (per-tenant prior,
    calibrated online) gives SJF its sizes. ``rate_per_s`` is the total
    arrival rate: 0.9 keeps the engine in sustained contention (FIFO queues
    for ~26 s on average) without growing its queue for ever.
    """

    rate_per_s: float = 0.9
    duration_s: float = 1200.0
    gpu: str = "L4"
    seed: int = 11

    def workload(self) -> Workload:
        """The three tenants' requests (seeded)."""
        tenants = (
            ("interactive", 0, 0.6, 300.0, 80.0, 1024),
            ("standard", 1, 0.3, 800.0, 300.0, 2048),
            ("batch", 2, 0.1, 1500.0, 900.0, 4096),
        )
        sources = [
            {
                "tenant": name,
                "priority": priority,
                "arrival": {"process": "gamma", "rate_per_s": share * self.rate_per_s, "cv": 1.5},
                "prompt": {"dist": "lognormal", "mean_tokens": prompt, "sigma": 0.8,
                           "max_tokens": 4096},
                "output": {"dist": "lognormal", "mean_tokens": output, "sigma": 0.6,
                           "max_tokens": cap},
            }
            for name, priority, share, prompt, output, cap in tenants
        ]  # fmt: skip
        spec = {"seed": self.seed, "duration_s": self.duration_s, "sources": sources}
        return build(parse_spec(spec, "driftsched-mix"))

    def e2e_s(self, policy: str, predictor: str | None = "driftsched") -> dict[str, float]:
        """p50, p99 and mean E2E of every request under ``policy``."""
        import numpy as np

        wl = self.workload()
        config = SimConfig(
            instances=(InstanceSpec(gpu=self.gpu),),
            policy=policy,
            placement="engine",
            predictor=predictor,
            tenants=tuple(wl.tenant_config(n) for n in wl.tenant_names()),
        )
        result = simulate(wl.requests(), config)
        e2e = result.records.e2e_s[result.records.completed]
        return {
            "p50": float(np.percentile(e2e, 50)),
            "p99": float(np.percentile(e2e, 99)),
            "mean": float(np.mean(e2e)),
        }


@dataclass(frozen=True)
class BurstyMisprediction:
    """UWFQ's small-job claim under bursty overload with a real predictor.

    Two steady tenants (``small1``, ``small2``: 1.5 req/s each of ~60-token
    answers) beside ``bursty``, which sends 1 req/s of the same small requests
    and, in on/off bursts (``burst_rate_per_s`` for ~10 s every ~60 s), large
    ones (~1,200-token answers). A per-tenant predictor (``history``) has
    learned ``bursty``'s small answers, so each burst arrives under-predicted
    twenty-fold: the case where tags fixed at push would let it keep early
    tags. One Llama-3.1-8B/H100 engine (``max_num_seqs`` 128) behind the
    policy's global queue with an engine queue of one, as ``Flood``.
    """

    burst_rate_per_s: float = 20.0
    duration_s: float = 600.0
    seed: int = 4
    small_output_tokens: int = 150  # a request is small when its answer is at most this

    def workload(self) -> Workload:
        """The three tenants' requests (seeded)."""

        def source(tenant: str, arrival: dict[str, Any], output: float) -> dict[str, Any]:
            lengths = {"dist": "lognormal", "sigma": 0.5, "max_tokens": 4096}
            return {
                "tenant": tenant,
                "arrival": arrival,
                "prompt": {**lengths, "mean_tokens": 200.0},
                "output": {**lengths, "mean_tokens": output},
            }

        burst = {"process": "onoff", "rate_on_per_s": self.burst_rate_per_s,
                 "mean_on_s": 10.0, "mean_off_s": 50.0}  # fmt: skip
        sources = [
            source("bursty", {"process": "poisson", "rate_per_s": 1.0}, 60.0),
            source("bursty", burst, 1200.0),
            source("small1", {"process": "poisson", "rate_per_s": 1.5}, 60.0),
            source("small2", {"process": "poisson", "rate_per_s": 1.5}, 60.0),
        ]
        spec = {"seed": self.seed, "duration_s": self.duration_s, "sources": sources}
        return build(parse_spec(spec, "bursty-misprediction"))

    def small_job_e2e_s(self, policy: str, predictor: str | None = "history") -> dict[str, float]:
        """Mean E2E of small requests: all of them, and those of the steady tenants."""
        import numpy as np

        wl = self.workload()
        config = SimConfig(
            instances=(InstanceSpec(engine=EngineConfig(max_num_seqs=128)),),
            policy=policy,
            predictor=predictor,
            max_engine_waiting=1,
        )
        rec = simulate(wl.requests(), config).records
        small = rec.completed & (rec.output_tokens <= self.small_output_tokens)
        steady = small & (rec.tenant != rec.tenant_names.index("bursty"))
        return {
            "small_mean_s": float(np.mean(rec.e2e_s[small])),
            "steady_small_mean_s": float(np.mean(rec.e2e_s[steady])),
            "all_mean_s": float(np.mean(rec.e2e_s[rec.completed])),
        }
