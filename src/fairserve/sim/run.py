"""Build a simulated cluster from a frozen config and run a request stream through it."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.policies import POLICIES, Policy
from fairserve.core.predict import PREDICTORS, Predictor
from fairserve.core.registry import ComponentSpec, Registry
from fairserve.core.route import ADMISSION, ROUTERS, Admission, Router
from fairserve.metrics.records import RecordArrays, RequestRecords
from fairserve.metrics.summary import EngineStats, Summary, summarize
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig, engine_config_from
from fairserve.sim.cost import CostModel, cost_model
from fairserve.sim.engine import Engine
from fairserve.sim.kvcache import tier_chain
from fairserve.sim.stepper import StepEngine
from fairserve.store import load_model


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One kind of engine instance and how many of it."""

    gpu: str = "H100-80GB"
    model: str = "Llama-3.1-8B"
    tp: int = 1
    count: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    profile: Path | None = None
    # An MoE model's experts spread whole over the tp GPUs (vLLM's --enable-expert-parallel).
    expert_parallel: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.count}")
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, got {self.tp}")

    def cost_model(self) -> CostModel:
        """The cost model of this instance kind (clear error for unknown names)."""
        return cost_model(self.gpu, self.model, self.tp, self.profile, self.expert_parallel)


PLACEMENTS = ("gateway", "engine")
SLO_CONCURRENCY = ("auto", "on", "off")

#: What a config accepts for a component: a spec, ``name:key=value,...`` or ``{name, params}``.
ComponentLike = ComponentSpec | str | Mapping[str, Any]

# The config's component fields and the registry that checks and builds each.
_KINDS: tuple[tuple[str, Registry[Any]], ...] = (
    ("policy", POLICIES),
    ("router", ROUTERS),
    ("predictor", PREDICTORS),
    ("admission", ADMISSION),
)


def _needs_predictor(router: ComponentLike) -> bool:
    """Whether ``router`` reads ``predicted_output_tokens`` (without a predictor they are unset
    and it would silently rank by prompts alone, i.e. behave as ``least-tokens``)."""
    spec = ComponentSpec.of(router)
    return spec.name == "predicted-load" or (
        spec.name == "p2c" and spec.params.get("predicted") is True
    )


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
    and observes real lengths at the end. ``admission``: refuses requests at
    arrival (``slo:model=PATH,slack=0.5``: those predicted to miss their TTFT
    objective, with a latency model from ``fairserve predictor latency --out``).

    ``slo_concurrency``: ``auto`` (default) holds each engine's batch to the
    tightest TPOT objective in force when a tenant has one and the placement
    is ``gateway`` (``Cluster``, "SLO-driven concurrency"); ``on`` requires
    it, ``off`` leaves the engine limits alone. ``slo_hold_s``: how long an
    objective stays in force after its tenant's last request ended;
    ``slo_reserve_seqs``: sequences of the held batch that requests without an
    objective leave free for those with one.

    Components are given as :class:`ComponentSpec`, a ``name:key=value,...``
    string or a ``{name, params}`` mapping, and are held as specs (checked
    against their registry on construction). ``seed`` is handed to every
    component that takes one (random routers, noisy predictors).
    """

    instances: tuple[InstanceSpec, ...] = (InstanceSpec(),)
    policy: ComponentLike = "fifo"
    router: ComponentLike = "round-robin"
    placement: str = "gateway"
    max_engine_waiting: int = 8
    predictor: ComponentLike | None = None
    admission: ComponentLike | None = None
    tenants: tuple[Tenant, ...] = ()
    seed: int = 0
    reference: bool = False  # the slow per-step engine (tests, validation)
    slo_concurrency: str = "auto"
    slo_hold_s: float = 10.0
    slo_reserve_seqs: int = 4

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError("config: instances must not be empty")
        for key, registry in _KINDS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, registry.check(value))
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"config: placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.max_engine_waiting < 1:
            raise ValueError(
                f"config: max_engine_waiting must be >= 1, got {self.max_engine_waiting}"
            )
        if self.slo_concurrency not in SLO_CONCURRENCY:
            raise ValueError(
                f"config: slo_concurrency must be one of {', '.join(SLO_CONCURRENCY)}, "
                f"got {self.slo_concurrency!r}"
            )
        if self.slo_concurrency == "on" and self.placement != "gateway":
            raise ValueError(
                "config: slo_concurrency on needs placement gateway (the excess waits in "
                "the policy's global queue)"
            )
        if self.slo_reserve_seqs < 0:
            raise ValueError(
                f"config: slo_reserve_seqs must be >= 0, got {self.slo_reserve_seqs!r}"
            )
        if not self.slo_hold_s >= 0:
            raise ValueError(f"config: slo_hold_s must be >= 0, got {self.slo_hold_s!r}")
        if self.predictor is None and _needs_predictor(self.router):
            raise ValueError(
                f"config: router {self.router} ranks instances by predicted output tokens; "
                f"set predictor (one of {', '.join(PREDICTORS.names())}) or use least-tokens"
            )

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        tenants: Iterable[Tenant] = (),
        *,
        policy: ComponentLike = "fifo",
        router: ComponentLike = "round-robin",
        predictor: ComponentLike | None = None,
        admission: ComponentLike | None = None,
    ) -> SimConfig:
        """The deployment that CLI options or a sweep's ``deployment`` describe.

        ``options`` has the keys of ``fairserve simulate``'s deployment options
        (``gpu``, ``model``, ``tp``, ``instances``, the engine limits,
        ``placement``, ``max_engine_waiting``; ``profile``, ``reference`` and
        ``seed`` may be left out). The one builder the CLI and sweeps share.
        """
        profile = options.get("profile")
        spec = InstanceSpec(
            options["gpu"],
            options["model"],
            options["tp"],
            options["instances"],
            engine_config_from(options),
            Path(profile) if profile is not None else None,
            bool(options.get("expert_parallel", False)),
        )
        return cls(
            instances=(spec,),
            policy=policy,
            router=router,
            placement=options["placement"],
            max_engine_waiting=options["max_engine_waiting"],
            predictor=predictor,
            admission=admission,
            tenants=tuple(tenants),
            seed=options.get("seed", 0),
            reference=options.get("reference", False),
            slo_concurrency=options.get("slo_concurrency", "auto"),
        )

    def tenant_map(self) -> dict[str, Tenant]:
        """Tenants by name."""
        return {t.name: t for t in self.tenants}

    def context(self) -> dict[str, Any]:
        """What the registries hand the factories that take it (see ``Registry.build``)."""
        return {"seed": self.seed, "tenants": self.tenant_map(), "load": load_model}

    def make_policy(self) -> Policy:
        """A fresh instance of the configured policy."""
        return POLICIES.build(self.policy, **self.context())

    def make_router(self) -> Router:
        """A fresh instance of the configured router."""
        return ROUTERS.build(self.router, **self.context())

    def make_predictor(self) -> Predictor | None:
        """A fresh instance of the configured predictor, or None."""
        if self.predictor is None:
            return None
        return PREDICTORS.build(self.predictor, **self.context())

    def tpot_objectives(self) -> dict[str, float]:
        """Tenant -> TPOT objective the cluster holds batches to (empty when off)."""
        if self.slo_concurrency == "off" or self.placement != "gateway":
            return {}
        return {t.name: t.slo.tpot_s for t in self.tenants if t.slo.tpot_s is not None}

    def make_admission(self, predictor: Predictor | None = None) -> Admission | None:
        """A fresh instance of the configured admission, or None."""
        if self.admission is None:
            return None
        return ADMISSION.build(self.admission, predictor=predictor, **self.context())


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
    # SLO-driven concurrency: the tightest TPOT objective it held batches to (None: off)
    # and how many dispatches it held back.
    slo_tpot_s: float | None = None
    slo_held: int = 0

    def error(self) -> str | None:
        """Why the run is an error, or None: every request failed (an engine configuration
        that can serve none of them, such as a block size that does not divide the trace's
        hash block, must not pass as a run with empty figures)."""
        n = len(self.records)
        if n == 0 or int(self.records.completed.sum()) or len(self.failure_reasons) < n:
            return None
        reasons = Counter(self.failure_reasons.values())
        reason, count = reasons.most_common(1)[0]
        more = f" ({len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        return f"every request failed ({n} of {n}); {count} of them: {reason}{more}"

    def summary(
        self, slos: Mapping[str, SLO] | None = None, default_slo: SLO | None = None
    ) -> Summary:
        """The run's summary (latency, throughput, goodput, engine figures)."""
        summary = summarize(self.records, slos=slos, default_slo=default_slo, engine=self.engine)
        return dataclasses.replace(summary, slo_tpot_s=self.slo_tpot_s, slo_held=self.slo_held)


def build_engines(
    config: SimConfig, records: RequestRecords, global_policy: Policy
) -> list[Engine | StepEngine]:
    """One engine object per instance, indexed in config order.

    Engine placement: each engine runs its own instance of the policy as its
    waiting queue. Gateway placement: FCFS engines (vLLM's default order and
    victim) that charge ``global_policy`` for the service they give.
    ``config.reference`` builds the per-step ``StepEngine`` the same way.
    """
    engine_class = StepEngine if config.reference else Engine
    engines: list[Engine | StepEngine] = []
    for spec in config.instances:
        cost = spec.cost_model()
        for _ in range(spec.count):
            index = len(engines)
            if config.placement == "engine":
                own = config.make_policy()
                engines.append(engine_class(index, cost, spec.engine, records, own))
            else:
                engines.append(
                    engine_class(index, cost, spec.engine, records, charge_to=global_policy)
                )
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
        queue: Policy = POLICIES.build("fifo")
        cap = 1 << 62
    else:
        queue, cap = config.make_policy(), config.max_engine_waiting
    engines = build_engines(config, records, queue)
    predictor = config.make_predictor()
    cluster = Cluster(
        engines,
        config.make_router(),
        queue,
        cap,
        predictor=predictor,
        admission=config.make_admission(predictor),
        records=records,
        tpot_s=config.tpot_objectives(),
        slo_hold_s=config.slo_hold_s,
        slo_reserve_seqs=config.slo_reserve_seqs,
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
        slo_tpot_s=min(cluster.tpot_s.values()) if cluster.tpot_s else None,
        slo_held=cluster.slo_held,
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
    engines: list[Engine | StepEngine], records: RecordArrays, end_s: float
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
        kv_tiers=_tier_stats(engines, prompt),
    )


def _tier_stats(
    engines: list[Engine | StepEngine], prompt_tokens: int
) -> dict[str, dict[str, float]] | None:
    """Per-tier figures summed over instances (``EngineStats.kv_tiers``); None without tiers."""
    if all(e.tiers is None for e in engines):
        return None

    def rate(tokens: int) -> float:
        return tokens / prompt_tokens if prompt_tokens else float("nan")

    gpu = sum(e.gpu_hit_tokens for e in engines)
    stats: dict[str, dict[str, float]] = {"gpu": {"hit_tokens": gpu, "hit_rate": rate(gpu)}}
    for e in engines:
        for tier in tier_chain(e.tiers):
            into = stats.setdefault(tier.name, dict.fromkeys(_TIER_FIGURES, 0))
            into["hit_tokens"] += tier.hit_tokens
            into["loaded_bytes"] += tier.loaded_bytes
            into["transfer_s"] += tier.transfer_s
            into["capacity_blocks"] += tier.total_blocks
            into["evictions"] += tier.evictions
    for name, figures in stats.items():
        if name != "gpu":
            figures["hit_rate"] = rate(int(figures["hit_tokens"]))
    return stats


_TIER_FIGURES = ("hit_tokens", "loaded_bytes", "transfer_s", "capacity_blocks", "evictions")
