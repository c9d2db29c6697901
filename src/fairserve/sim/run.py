"""Build a simulated cluster from a frozen config and run a request stream through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.policies import POLICIES, Policy
from fairserve.core.predict import PREDICTORS
from fairserve.core.predict.latency import LatencyModel
from fairserve.core.route import ROUTERS
from fairserve.core.route.latency import SloAdmission
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


PLACEMENTS = ("gateway", "engine")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A whole simulated deployment: instances, policy and where it runs, router, predictor.

    ``placement="gateway"``: the policy orders one global queue in front of FCFS
    engines (what a gateway can do); a request leaves it when an engine has
    fewer than ``max_engine_waiting`` queued. ``placement="engine"``: requests
    are routed on arrival and each engine orders its own waiting queue with its
    own instance of the policy (as if the engine ran it), which then also
    chooses preemption victims. ``tenants``: weights, priorities and SLOs the
    policies read. ``predictor``: sets ``predicted_output_tokens`` at arrival
    and observes real lengths at the end.
    """

    instances: tuple[InstanceSpec, ...] = (InstanceSpec(),)
    policy: str = "fifo"
    router: str = "round-robin"
    placement: str = "gateway"
    max_engine_waiting: int = 8
    predictor: str | None = None
    tenants: tuple[Tenant, ...] = ()
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    router_params: Mapping[str, Any] = field(default_factory=dict)
    predictor_params: Mapping[str, Any] = field(default_factory=dict)
    # SLO-aware admission: refuse requests predicted to miss their TTFT objective
    # (a latency model written by `fairserve predictor latency --out PATH`).
    admission_model: Path | None = None
    admission_slack: float = 1.0
    reference: bool = False  # the slow per-step engine (tests, validation)

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError("config: instances must not be empty")
        named = [
            ("policy", self.policy, POLICIES.names()),
            ("router", self.router, ROUTERS.names()),
        ]
        if self.predictor is not None:
            named.append(("predictor", self.predictor, PREDICTORS.names()))
        for key, name, known in named:
            # A dotted path names a third-party class; the registry imports it.
            if name not in known and "." not in name and ":" not in name:
                raise ValueError(f"config: unknown {key} {name!r}; known: {', '.join(known)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"config: placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.max_engine_waiting < 1:
            raise ValueError(
                f"config: max_engine_waiting must be >= 1, got {self.max_engine_waiting}"
            )

    def tenant_map(self) -> dict[str, Tenant]:
        """Tenants by name."""
        return {t.name: t for t in self.tenants}

    def make_policy(self) -> Policy:
        """A fresh instance of the configured policy."""
        return POLICIES.create(self.policy, tenants=self.tenant_map(), **self.policy_params)


@dataclass(frozen=True)
class SimResult:
    """Everything a run produced."""

    records: RecordArrays
    engine: EngineStats
    loop: loop.LoopStats
    wall_time_s: float
    steps: int
    failure_reasons: Mapping[int, str]
    # Predicted and actual output tokens of completed requests (empty without a predictor).
    predicted_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    actual_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def summary(
        self, slos: Mapping[str, SLO] | None = None, default_slo: SLO | None = None
    ) -> Summary:
        """The run's summary (latency, throughput, goodput, engine figures)."""
        return summarize(self.records, slos=slos, default_slo=default_slo, engine=self.engine)


def build_engines(
    config: SimConfig, records: RequestRecords, global_policy: Policy
) -> list[Engine | ReferenceEngine]:
    """One engine object per instance, indexed in config order."""
    engines: list[Engine | ReferenceEngine] = []
    for spec in config.instances:
        cost = spec.cost_model()
        for _ in range(spec.count):
            index = len(engines)
            if config.reference:
                if global_policy.charges or config.placement == "engine":
                    raise ValueError(
                        "the reference engine supports the gateway placement of "
                        "non-charging policies only"
                    )
                engines.append(ReferenceEngine(index, cost, spec.engine, records))
            elif config.placement == "engine":
                own = config.make_policy()
                engines.append(Engine(index, cost, spec.engine, records, own, own, own))
            else:
                # FCFS engines (vLLM's default order and preemption choice) that
                # charge the global policy for the service they give.
                engines.append(Engine(index, cost, spec.engine, records, charge_to=global_policy))
    return engines


def simulate(
    requests: Iterable[Request],
    config: SimConfig,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run ``requests`` (sorted by arrival) through the deployment ``config``."""
    records = RequestRecords()
    if config.placement == "engine":
        # Route on arrival: the global queue only hands requests straight on.
        queue: Policy = POLICIES.create("fifo")
        cap = 1 << 62
    else:
        queue, cap = config.make_policy(), config.max_engine_waiting
    engines = build_engines(config, records, queue)
    predictor = (
        PREDICTORS.create(config.predictor, **config.predictor_params)
        if config.predictor is not None
        else None
    )
    admission = None
    if config.admission_model is not None:
        slos = {t.name: t.slo for t in config.tenants}
        model = LatencyModel.load(config.admission_model)
        admission = SloAdmission(model, slos, config.admission_slack)
    cluster = Cluster(
        engines,
        ROUTERS.create(config.router, **config.router_params),
        queue,
        cap,
        predictor=predictor,
        admission=admission,
        records=records,
    )
    start = time.perf_counter()
    warm = getattr(predictor, "warm", None)
    if callable(warm):
        requests = _warmed(requests, warm)
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
        predicted_tokens=np.asarray(cluster.predicted_tokens, dtype=np.int64),
        actual_tokens=np.asarray(cluster.actual_tokens, dtype=np.int64),
    )


WARM_BATCH = 4096


def _warmed(
    requests: Iterable[Request], warm: Callable[[list[Request]], None]
) -> Iterator[Request]:
    """Hand requests on in batches, letting the predictor estimate each batch at once.

    A learned predictor costs about 1 ms per single call but a few microseconds
    per request in a batch; it still sees each request's features only (it
    caches the batch's estimates and applies its online calibration when the
    request is predicted at arrival).
    """
    batch: list[Request] = []
    for req in requests:
        batch.append(req)
        if len(batch) == WARM_BATCH:
            warm(batch)
            yield from batch
            batch = []
    if batch:
        warm(batch)
        yield from batch


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
