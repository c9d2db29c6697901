"""Build a simulated cluster from a frozen config and run a request stream through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fairserve.core.model import SLO, Request
from fairserve.core.policies import POLICIES
from fairserve.core.route import ROUTERS
from fairserve.metrics.records import RecordArrays, RequestRecords
from fairserve.metrics.summary import EngineStats, Summary, summarize
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel, cost_model
from fairserve.sim.engine import Engine
from fairserve.sim.reference import ReferenceEngine


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One kind of engine instance and how many of it."""

    gpu: str = "H100-80GB"
    model: str = "Llama-3.1-8B"
    tp: int = 1
    count: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    profile: Path | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.count}")
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, got {self.tp}")

    def cost_model(self) -> CostModel:
        """The cost model of this instance kind (clear error for unknown names)."""
        return cost_model(self.gpu, self.model, self.tp, self.profile)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A whole simulated deployment: instances, global policy, router."""

    instances: tuple[InstanceSpec, ...] = (InstanceSpec(),)
    policy: str = "fifo"
    router: str = "round-robin"
    max_engine_waiting: int = 8
    reference: bool = False  # the slow per-step engine (tests, validation)

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError("config: instances must not be empty")
        if self.policy not in POLICIES.names() and "." not in self.policy:
            raise ValueError(
                f"config: unknown policy {self.policy!r}; known: {', '.join(POLICIES.names())}"
            )
        if self.router not in ROUTERS.names() and "." not in self.router:
            raise ValueError(
                f"config: unknown router {self.router!r}; known: {', '.join(ROUTERS.names())}"
            )
        if self.max_engine_waiting < 1:
            raise ValueError(
                f"config: max_engine_waiting must be >= 1, got {self.max_engine_waiting}"
            )


@dataclass(frozen=True)
class SimResult:
    """Everything a run produced."""

    records: RecordArrays
    engine: EngineStats
    loop: loop.LoopStats
    wall_time_s: float
    steps: int
    failure_reasons: Mapping[int, str]

    def summary(
        self, slos: Mapping[str, SLO] | None = None, default_slo: SLO | None = None
    ) -> Summary:
        """The run's summary (latency, throughput, goodput, engine figures)."""
        return summarize(self.records, slos=slos, default_slo=default_slo, engine=self.engine)


def build_engines(config: SimConfig, records: RequestRecords) -> list[Engine | ReferenceEngine]:
    """One engine object per instance, indexed in config order."""
    engines: list[Engine | ReferenceEngine] = []
    for spec in config.instances:
        cost = spec.cost_model()
        for _ in range(spec.count):
            # Each engine runs its own FCFS queue (and vLLM's preemption choice);
            # the global policy orders the cluster's queue in front of them.
            cls = ReferenceEngine if config.reference else Engine
            engines.append(cls(len(engines), cost, spec.engine, records))
    return engines


def simulate(
    requests: Iterable[Request],
    config: SimConfig,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run ``requests`` (sorted by arrival) through the deployment ``config``."""
    records = RequestRecords()
    engines = build_engines(config, records)
    cluster = Cluster(
        engines,
        ROUTERS.create(config.router),
        POLICIES.create(config.policy),
        config.max_engine_waiting,
    )
    start = time.perf_counter()
    stats = loop.run(requests, cluster, progress)
    wall = time.perf_counter() - start
    arrays = records.to_numpy()
    return SimResult(
        records=arrays,
        engine=_engine_stats(engines, arrays, stats.end_s),
        loop=stats,
        wall_time_s=wall,
        steps=sum(e.steps for e in engines),
        failure_reasons=dict(records.failure_reasons),
    )


def _engine_stats(
    engines: list[Engine | ReferenceEngine], records: RecordArrays, end_s: float
) -> EngineStats:
    start_s = float(records.arrival_s.min()) if len(records) else 0.0
    span = end_s - start_s
    total_blocks = sum(e.pool.total_blocks for e in engines)
    kv_block_s = sum(getattr(e, "kv_block_s", 0.0) for e in engines)
    peak = max(getattr(e, "kv_peak_blocks", 0) / e.pool.total_blocks for e in engines)
    prompt = int(records.prompt_tokens.sum())
    cached = int(records.cached_prompt_tokens.clip(min=0).sum())
    return EngineStats(
        preemptions=sum(e.preemptions for e in engines),
        kv_util_mean=kv_block_s / (total_blocks * span) if span > 0 else float("nan"),
        kv_util_peak=float(peak),
        prefix_cache_hit_rate=cached / prompt if prompt else None,
    )
